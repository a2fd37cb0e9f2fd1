"""`cnnzoo summary` (the per-layer table) and `cnnzoo compare` (the comparison report)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from cnnzoo.infer.backends import BACKENDS
from cnnzoo.infer.bench import deployed_latency
from cnnzoo.models import create_model
from cnnzoo.profile.compare import DEFAULT_MODELS, check_output_dir, compare, write_comparison
from cnnzoo.profile.markdown import fit_line, text_table
from cnnzoo.profile.profiler import check_device, run_profile
from cnnzoo.profile.timing import TimingOptions
from cnnzoo.train.device import describe


def _shape(text: str) -> tuple[int, ...]:
    """'3x224x224' or '8x3x224x224' -> a tuple of ints (argparse type)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW or NxCxHxW, got {text!r}") from None
    if len(dims) not in (3, 4):
        raise argparse.ArgumentTypeError(f"expected CxHxW or NxCxHxW, got {text!r}")
    return dims


def _ints(text: str) -> tuple[int, ...]:
    """'1,4,16' -> (1, 4, 16) (argparse type; range checks are the library's)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _native_shape(name: str) -> tuple[int, int, int]:
    with torch.device("meta"):
        return tuple(create_model(name).input_size)


class ProgressBar:
    """A one-line progress bar on stderr (a plain line per step when stderr is not a tty)."""

    def __init__(self, stream=None, width: int = 28):
        # sys.stderr looked up now, not at import: it may have been replaced since (pytest).
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, done: int, total: int, label: str) -> None:
        elapsed = time.perf_counter() - self.start
        filled = int(self.width * done / total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {done}/{total} {label}  {elapsed:5.0f} s"
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _cmd_summary(args: argparse.Namespace) -> int:
    shape = args.input or _native_shape(args.model)
    if args.timing:
        print(describe(check_device(args.device), "fp32"), flush=True)  # timed in float32
    report = run_profile(args.model, shape, timing=args.timing, batch_sizes=args.batch_sizes,
                         device=args.device, receptive_fields=True)
    print(report.table(depth=args.depth, by_stage=args.by_stage))
    if args.json:
        report.to_json(args.json)
    if args.csv:
        report.layers_csv(args.csv)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    check_output_dir(args.out)  # an unwritable DIR fails before minutes of measuring
    print(describe(check_device(args.device), "fp32"), flush=True)  # timed in float32
    options = TimingOptions(warmup=1, repeats=args.repeats, max_repeats=max(20, args.repeats),
                            min_time_s=args.min_time, train=not args.no_train,
                            time_train=args.time_train)
    notes: list[str] = []
    comparison = compare(
        args.models or DEFAULT_MODELS,
        image_size=args.input,
        batch_sizes=args.batch_sizes,
        device=args.device,
        runs_dir=args.runs,
        runs_data=args.runs_data,
        notes=notes,
        options=options,
        progress=None if args.quiet else ProgressBar(),
    )
    if args.backend and args.backend != "eager":
        if check_device(args.device).type != "cpu":
            raise ValueError(f"--backend {args.backend}: deployment backends run on the CPU; "
                             f"use --device cpu")
        start = time.perf_counter()
        deployed = deployed_latency(
            args.models or DEFAULT_MODELS, args.backend, args.batch_sizes, args.input,
            repeats=args.repeats, max_repeats=max(20, args.repeats), min_time_s=args.min_time,
            progress=None if args.quiet else ProgressBar())
        comparison = dataclasses.replace(
            comparison, backend=args.backend, deployed_ms=deployed,
            wall_time_s=comparison.wall_time_s + time.perf_counter() - start)
    out = write_comparison(comparison, args.out)
    for note in notes:  # runs on other data than --runs-data
        print(note, file=sys.stderr)
    print(text_table(comparison))
    if comparison.fits():
        print("MACs vs latency per image: " + fit_line(comparison))
    print(f"{comparison.env['device_name']}, {comparison.env['threads']} threads, "
          f"{comparison.wall_time_s:.0f} s; wrote {out}/report.html, report.md, "
          "results.csv, results.json, plots/")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "summary", help="per-layer table: output shapes, parameters, MACs, activation sizes, "
                        "receptive fields and strides",
        description="Count a model on the meta device (no computation) and print a "
                    "torchinfo-like table, with each output's theoretical receptive field and "
                    "jump (cumulative stride) in input pixels; --timing also measures latency "
                    "and peak memory.",
    )
    p.add_argument("model", help="registered model name (see `cnnzoo list`)")
    p.add_argument("--input", type=_shape, default=None, metavar="[N]xCxHxW",
                   help="input shape (default: the model's native 1xCxHxW)")
    p.add_argument("--depth", type=int, default=3, help="deepest module level shown (default 3)")
    p.add_argument("--by-stage", action="store_true",
                   help="one row per stage (run of layers with the same output H x W)")
    p.add_argument("--timing", action="store_true", help="also time it for real")
    p.add_argument("--batch-sizes", type=_ints, default=(1, 8, 32), metavar="B1,B2,..",
                   help="batch sizes for --timing (default 1,8,32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] for --timing")
    p.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    p.add_argument("--csv", metavar="PATH", help="also write the per-layer rows as CSV")
    p.set_defaults(func=_cmd_summary)

    c = sub.add_parser(
        "compare", help="compare models in accuracy, operations, time and memory (report)",
        description="Canziani et al.'s comparison on this machine: counts, latency, peak "
                    "memory per batch size; writes results.csv/json, report.md, report.html "
                    "and plots into DIR.",
    )
    c.add_argument("models", nargs="*", metavar="MODEL",
                   help="registered names (default: alexnet vgg16 googlenet resnet18 resnet50 "
                        "densenet121 se_resnet50 efficientnet_b0)")
    c.add_argument("--out", default="out/compare", metavar="DIR",
                   help="output folder, replaced whole at the end (default out/compare)")
    c.add_argument("--input", type=_shape, default=(3, 224, 224), metavar="CxHxW",
                   help="image shape (default 3x224x224)")
    c.add_argument("--batch-sizes", type=_ints, default=(1, 4, 16), metavar="B1,B2,..",
                   help="batch sizes to time (default 1,4,16)")
    c.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    c.add_argument("--runs", metavar="DIR", help="folder of `cnnzoo train` runs: measured accuracy "
                   "(each run's best-validation checkpoint)")
    c.add_argument("--runs-data", metavar="DATA", help="only --runs on this data set (their "
                   "--data); default: the one data set they share")
    c.add_argument("--repeats", type=int, default=3, help="fewest timed runs (default 3)")
    c.add_argument("--min-time", type=float, default=0.5, metavar="S",
                   help="repeat until S seconds are timed, up to 20 runs (default 0.5)")
    c.add_argument("--time-train", action="store_true",
                   help="also time training steps (about 3x longer; by default one step per "
                        "batch size measures the training peak memory)")
    c.add_argument("--no-train", action="store_true", help="no training step at all")
    c.add_argument("--backend", choices=BACKENDS, default=None,
                   help="also time each model built with this deployment backend (checked "
                        "against eager; CPU only) and add its ms/image next to eager's")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_compare)
