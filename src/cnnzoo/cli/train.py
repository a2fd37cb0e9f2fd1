"""`cnnzoo train MODEL --data NAME_OR_PATH --out runs/NAME ...`: the command over `cnnzoo.train`.

The options are generated from `TrainConfig`'s fields (name, type, help), so the command
line and the Python API cannot drift apart. Under `torchrun --nproc_per_node=N` the same
command trains data-parallel.

Fine-tuning: `cnnzoo train resnet50 --init resnet50-11ad3fa6.pth --num-classes 5 --freeze
layer2 --backbone-lr-scale 0.1 --data my_images/ --out runs/ft` starts from pretrained weights
with a new classifier (see `cnnzoo.train.transfer`). `--pretrained [TAG]` does the same with
the model's published ImageNet-1k weights: fetched once into the cache (SHA-256 checked, see
`cnnzoo weights`) and passed on as `--init` (with the builder options the weights need).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import typing

from cnnzoo.models.hub import cached_file
from cnnzoo.models.weights import get_weights
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.loop import train

SPECIAL = {"model", "data", "out", "model_options"}  # declared by hand below
_UnionType = type(int | None)


def _model_option(text: str) -> tuple[str, object]:
    """'key=value' with value a Python literal (0.2, True, (1, 2)) or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. drop_path_rate=0.2, "
                                         f"got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, hint: object) -> None:
    flag = "--" + f.name.replace("_", "-")
    text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help texts
    default = f.default
    if hint is bool:
        parser.add_argument(flag, action="store_true", help=text)
        return
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, _UnionType) else hint
    if typing.get_origin(base) is tuple:
        parser.add_argument(flag, type=_floats, metavar="X,Y",
                            help=f"{text} (default: {','.join(map(str, default))})")
    else:
        metavar = f.name.upper() if base is str else base.__name__.upper()
        shown = "" if default is None else f" (default: {default})"
        parser.add_argument(flag, type=base, metavar=metavar, help=text + shown)


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model on a data set (torchrun-aware)",
        description="Train MODEL on --data, writing config.json, env.json, metrics.csv/.jsonl, "
                    "best.pt and last.pt to --out. Run it under torchrun --nproc_per_node=N to "
                    "train data-parallel. --init WEIGHTS fine-tunes from a checkpoint or a "
                    "torchvision/timm state dict, with --freeze STAGE and "
                    "--backbone-lr-scale; --pretrained [TAG] from the model's published "
                    "ImageNet-1k weights.")
    p.add_argument("model", metavar="MODEL", help="registered model name (see `cnnzoo list`)")
    p.add_argument("--data", required=True, metavar="NAME_OR_PATH",
                   help="fashion-mnist, mnist, cifar10, cifar100, synthetic[:CxHxW:CLASSES:N], "
                        "or an image folder")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory, e.g. runs/NAME")
    p.add_argument("--model-opt", dest="model_options", action="append", default=[],
                   type=_model_option, metavar="KEY=VALUE",
                   help="model builder option, repeatable, e.g. --model-opt drop_path_rate=0.2")
    p.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="TAG",
                   help="start from the model's published ImageNet-1k weights (its default, "
                        "or TAG, see `cnnzoo weights list MODEL`): downloaded once, SHA-256 "
                        "checked, used as --init")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name not in SPECIAL:
            _add_field(p, f, hints[f.name])
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items()
               if k not in ("func", "command") and v is not None and v is not False}
    options["model_options"] = dict(args.model_options)
    pretrained = options.pop("pretrained", None)
    if pretrained is not None:
        if args.init is not None:
            raise ValueError("--pretrained and --init both give the starting weights: use one")
        entry = get_weights(args.model, pretrained)
        options["init"] = str(cached_file(entry.url, entry.sha256_prefix))
        options["model_options"] = {**entry.options, **options["model_options"]}
    train(**options)
    return 0
