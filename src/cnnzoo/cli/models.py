"""`cnnzoo list`: the registered models."""

from __future__ import annotations

import argparse
import sys

import torch

from cnnzoo.models import create_model, list_models


def _cmd_list(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        print(f"cnnzoo list: no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        with torch.device("meta"):  # built without allocating: the whole zoo lists in a second
            native = create_model(name).eval()
            # CIFAR-native nets (32x32) are counted with CIFAR's 10 classes, as their papers do.
            classes = args.num_classes or (10 if native.input_size[1] <= 32 else 1000)
            model = create_model(name, num_classes=classes).eval()  # inference minimum
        params = sum(p.numel() for p in model.parameters())
        c, h, w = model.input_size
        rows.append((name, model.family, f"{params:,}", str(classes), f"{c}x{h}x{w}",
                     f"{model.min_input_size}", model.paper.split(",")[0]))
    header = ("model", "family", "params", "classes", "native input", "min H=W", "paper")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(len(header))]
    right = {2, 3}
    for row in [header, *rows]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    return 0


def register(sub) -> None:
    p = sub.add_parser("list", help="list the registered models with their size and paper")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*'")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size to count with (default: 10 for 32x32 nets, else 1000)")
    p.set_defaults(func=_cmd_list)
