"""The `cnnzoo` command: argument parsing and printing over the library."""

from __future__ import annotations

import argparse
import sys

import torch


def _cmd_list(args: argparse.Namespace) -> int:
    from cnnzoo.models import create_model, list_models

    names = list_models(args.pattern)
    if not names:
        print(f"cnnzoo list: no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        with torch.device("meta"):  # parameters counted without allocating them
            model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        c, h, w = model.input_size
        rows.append((name, model.family, f"{params:,}", f"{c}x{h}x{w}",
                     f"{model.min_input_size}", model.paper.split(",")[0]))
    header = ("model", "family", "params", "native input", "min H=W", "paper")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(len(header))]
    right = {2}
    for row in [header, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnzoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'resnet*'")
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        print(f"cnnzoo {args.command}: error: {err}", file=sys.stderr)
        return 2
