"""`cnnzoo eval`, `cnnzoo predict`, `cnnzoo export`: commands over `cnnzoo.infer`."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from cnnzoo.data.shards import is_shard_dir
from cnnzoo.infer.backends import BACKENDS
from cnnzoo.infer.evaluate import evaluate_checkpoint, format_table, write_report
from cnnzoo.infer.export import export_model
from cnnzoo.infer.predict import Predictor, format_predictions, predict_shards
from cnnzoo.train.device import describe

BACKEND_HELP = (f"deployment backend, one of {', '.join(BACKENDS)} (default: eager); built "
                "and checked against eager first, CPU only")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
WEIGHTS_HELP = ("which weights of a checkpoint: auto = those validation used (the EMA when the "
                "run kept one), model, or ema (default: auto)")


def _device(name: str) -> str:
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cmd_eval(args: argparse.Namespace) -> int:
    # Deployment backends are CPU ones: "auto" means the CPU for them.
    device = "cpu" if args.backend != "eager" and args.device == "auto" else _device(args.device)
    precision = {"bf16": "bf16 autocast", "int8": "int8"}.get(args.backend, "fp32")
    backend = "" if args.backend == "eager" else f", backend {args.backend}"
    print(describe(device, precision) + backend, flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = evaluate_checkpoint(args.checkpoint, args.data, split=args.split,
                                     data_dir=args.data_dir, weights=args.weights,
                                     batch_size=args.batch_size, device=device,
                                     backend=args.backend)
    for w in caught:
        print(f"cnnzoo eval: warning: {w.message}", file=sys.stderr)
    out = Path(args.out) if args.out else (
        Path(args.checkpoint).parent / f"eval-{Path(args.checkpoint).stem}-{args.split}")
    paths = write_report(result, out)
    print(format_table(result))
    print(f"wrote {', '.join(p.name for p in paths.values())} to {out}")
    return 0


def _images_in(folder: str) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"--calibration {folder}: not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--calibration {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _cmd_predict(args: argparse.Namespace) -> int:
    deployment = {"backend": args.backend,
                  "calibration": _images_in(args.calibration) if args.calibration else None}
    if args.pretrained:
        name, _, tag = args.checkpoint.partition(":")
        predictor = Predictor.from_pretrained(name, tag or True, device=_device(args.device),
                                              **deployment)
    else:
        predictor = Predictor.from_file(args.checkpoint, weights=args.weights,
                                        device=_device(args.device), **deployment)
    if len(args.images) == 1 and is_shard_dir(args.images[0]):
        predictions = predict_shards(predictor, args.images[0], args.split, topk=args.topk)
    else:
        predictions = predictor.predict(args.images, args.topk)
    if args.json:
        for p in predictions:
            print(json.dumps({"image": str(p.path), "top": [
                {"label": i, "class": c, "prob": pr}
                for i, c, pr in zip(p.labels, p.classes, p.probs, strict=True)]}))
    else:
        print(format_predictions(predictions))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    result = export_model(args.checkpoint, args.format, args.out, weights=args.weights,
                          verify=not args.no_verify, force=args.force)
    line = f"wrote {result.path} ({args.format}, {result.bytes / 2**20:.1f} MiB)"
    if result.max_abs_diff is not None:
        line += f"; {result.check_line()}"
    elif not args.no_verify:
        line += "; not checked (onnxruntime is not installed)"
    print(line)
    if result.matches is False:  # only reached under --force
        print(f"cnnzoo export: warning: {result.path}: {result.check_line()} is too large; "
              f"kept because of --force", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint",
        description="Evaluate a checkpoint (or a .safetensors export) on a data split. Writes "
                    "metrics.json, per_class.csv, confusion.csv and confusion.png.")
    p.add_argument("checkpoint", metavar="CKPT", help="best.pt / last.pt of a run, or .safetensors")
    p.add_argument("--data", metavar="NAME_OR_PATH", default=None,
                   help="data set name or path (default: the one the run trained on)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="test split, the run's held-out validation split, or train "
                        "(default: test)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder holding the data set files (default: the run's)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="where to write the report (default: eval-<ckpt>-<split> next to CKPT)")
    p.add_argument("--weights", choices=("auto", "model", "ema"), default="auto",
                   help=WEIGHTS_HELP)
    p.add_argument("--batch-size", type=int, default=256, metavar="N",
                   help="images per forward pass (default: 256)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--backend", choices=BACKENDS, default="eager",
                   help=BACKEND_HELP + "; eager's top-1 is printed beside another's; int8 is "
                        "calibrated on 256 training images (stratified, seeded), never on the "
                        "evaluated split")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "predict", help="top-k classes with probabilities for image files",
        description="Classify PNG/JPEG files with a checkpoint (or a .safetensors export), "
                    "preprocessing them as recorded at training; or with a model's published "
                    "ImageNet weights (--pretrained), preprocessing them as those were "
                    "evaluated.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="best.pt / last.pt of a run, or .safetensors; with --pretrained a "
                        "model name, MODEL or MODEL:TAG (see cnnzoo weights list)")
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="image files, or one shard directory (cnnzoo data pack): every image "
                        "of its --split")
    p.add_argument("--split", default="val", choices=("train", "val"),
                   help="with a shard directory: the packed split to classify (default: val)")
    p.add_argument("--topk", type=int, default=5, metavar="K",
                   help="classes per image (default: 5, at most the number of classes)")
    p.add_argument("--weights", choices=("auto", "model", "ema"), default="auto",
                   help=WEIGHTS_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--pretrained", action="store_true",
                   help="CKPT is a model name: use its published ImageNet-1k weights "
                        "(downloaded once into the cache, SHA-256 checked) and class names")
    p.add_argument("--backend", choices=BACKENDS, default="eager", help=BACKEND_HELP)
    p.add_argument("--calibration", metavar="DIR", default=None,
                   help="folder of image files to calibrate int8 on (required for int8)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "export", help="export a checkpoint as ONNX, TorchScript or safetensors",
        description="Export a checkpoint's model in eval mode, with its class names and "
                    "preprocessing as metadata, then load the file back and compare logits; "
                    "a file whose logits differ by more than 1e-4 x the largest |logit| is "
                    "refused unless --force.")
    p.add_argument("checkpoint", metavar="CKPT", help="best.pt / last.pt of a run, or .safetensors")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    p.add_argument("--out", metavar="PATH", default=None,
                   help="output file (default: next to CKPT: .onnx, .torchscript.pt, "
                        ".safetensors)")
    p.add_argument("--weights", choices=("auto", "model", "ema"), default="auto",
                   help=WEIGHTS_HELP)
    p.add_argument("--no-verify", action="store_true",
                   help="skip loading the file back and comparing its logits")
    p.add_argument("--force", action="store_true",
                   help="keep the file even when its logits differ from PyTorch's by more "
                        "than 1e-4 x the largest |logit| (default: refuse, exit 2, write "
                        "nothing)")
    p.set_defaults(func=_cmd_export)
