"""The `cnnzoo` command: argument parsing and printing over the library.

Each area registers its sub-commands from its own module (`cli/models.py`, `cli/profile.py`,
`cli/train.py`, ...) through `register(subparsers)`, so the parser is assembled here and the
logic stays in the library.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import cnnzoo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnzoo", description="The landmark CNN architectures: build, profile, train, explain."
    )
    parser.add_argument("--version", action="version", version=f"cnnzoo {cnnzoo.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `cnnzoo list | head`: the reader left; that is not an error worth a message.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError) as err:
        # One line, naming the command; the traceback is for bugs, not for bad input.
        print(f"cnnzoo {args.command}: error: {err}", file=sys.stderr)
        return 2
