"""`cnnzoo bench`: deployed speed across backends and batch sizes (`cnnzoo.infer.bench`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cnnzoo.cli.profile import ProgressBar, _ints, _shape
from cnnzoo.cpuinfo import native_bf16
from cnnzoo.fileio import atomic_write_text
from cnnzoo.infer.backends import BACKENDS
from cnnzoo.infer.bench import bench, calibration_data, plot_throughput
from cnnzoo.train.device import describe


def _list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _cmd_bench(args: argparse.Namespace) -> int:
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"--backends: unknown {', '.join(unknown)}; expected some of "
                         f"{', '.join(BACKENDS)}")
    if "bf16" in args.backends:
        ok, why = native_bf16()
        if not ok:
            print(f"cnnzoo bench: bf16 left out: {why}", flush=True)
            args.backends = [b for b in args.backends if b != "bf16"]
            if not args.backends:
                return 2
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe("cpu", "fp32"), flush=True)
    c, h, w = args.input[-3:]
    calibration = None
    if args.calibration and any(b in ("bf16", "int8") for b in args.backends):
        calibration = calibration_data(args.calibration, (c, h, w), data_dir=args.data_dir)
        print(f"bf16/int8 calibrated and checked on {len(calibration.batches) * 8} training "
              f"images of {calibration.name}", flush=True)
    result = bench(args.models, args.backends, args.batch_sizes, (c, h, w), rounds=args.rounds,
                   min_time_s=args.min_time, threads=args.threads, calibration=calibration,
                   progress=ProgressBar())
    print(result.peak.line())
    print(result.table())
    noisy = sum(bool(r.noisy) for r in result.rows)
    if noisy:
        print(f"{noisy} of {len(result.rows)} entries flagged noisy: rerun on an idle machine "
              f"or with more --rounds")
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "bench.json", result.to_json())
        atomic_write_text(out / "bench.csv", result.to_csv())
        plot_throughput(result, str(out / "throughput.png"))
        print(f"wrote {out / 'bench.json'}, bench.csv, throughput.png")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="deployed latency and throughput per backend and batch size",
        description="Build each model with each backend (checked against eager), then time "
                    "every (model, backend, batch size) in interleaved rounds; reports median "
                    "and p90 latency, images/s, GFLOP/s and the share of this machine's fp32 "
                    "peak (the best of a large matmul and a channels_last 3x3 conv, measured "
                    "in the same run), and flags entries timed on a busy machine. bf16 and int8 "
                    "are checked (and int8 calibrated) on random-normal batches, or with "
                    "--calibration on real images, labelled as such; bf16 runs only where the "
                    "CPU has native bf16.")
    p.add_argument("models", metavar="MODEL", nargs="+", help="registered model names")
    p.add_argument("--backends", type=_list, default=["eager", "fused"],
                   help=f"comma-separated, of {','.join(BACKENDS)} (default: eager,fused)")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8, 32], metavar="N,N",
                   help="comma-separated batch sizes (default: 1,8,32)")
    p.add_argument("--input", type=_shape, default="3x224x224", metavar="CxHxW",
                   help="input shape of one image (default: 3x224x224)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    p.add_argument("--min-time", type=float, default=0.5, metavar="S",
                   help="seconds of calls per entry and round, at least (default: 0.5)")
    p.add_argument("--calibration", metavar="DATA", default=None,
                   help="calibrate int8 and check bf16/int8 on 32 training images of this data "
                        "set (a name or path, as for train --data: an ImageFolder directory or "
                        "tarball, CIFAR, ...), resized to --input (default: random-normal "
                        "batches)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder holding a named --calibration data set")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write bench.json, bench.csv and throughput.png here")
    p.set_defaults(func=_cmd_bench)
