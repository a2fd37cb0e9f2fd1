"""Deployed CPU speed against issue 12's goals, printed as a table (not a timed test).

For each model at batch 32 (224x224, fp32 unless int8) it builds every backend, checks it
against eager, times all of them in interleaved rounds (`cnnzoo.infer.bench`) and prints the
goal figures: the best fp32 backend's % of the fp32 peak measured in the same run and its
ratio to eager, `fused` / eager, and int8 / best fp32. int8 here is calibrated on random
batches with random weights, so its speed is real but its agreement is not a statement about
accuracy (its accuracy cost needs a trained network and real validation data).

    .venv/bin/python benchmarks/deploy_speed.py                      # resnet50, vgg16
    .venv/bin/python benchmarks/deploy_speed.py --models resnet50 --rounds 2 --no-compile

Name the CPU and what else ran beside it with every figure it prints.
"""

from __future__ import annotations

import argparse
import time

import torch

from cnnzoo.infer import backends, bench
from cnnzoo.models import create_model
from cnnzoo.profile.timing import OtherLoad, time_calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    fp32 = ["eager", "fused", "onnxruntime"] + ([] if args.no_compile else ["compile"])
    start = time.perf_counter()
    result = bench.bench(args.models, fp32, [args.batch], (3, 224, 224), rounds=args.rounds,
                         min_time_s=args.min_time, threads=args.threads)
    print(result.peak.line())
    print(result.table())
    int8 = {name: _int8_ms(name, args.batch, args.threads, args.min_time)
            for name in args.models}
    print(f"\n{'model':<12}{'best fp32':<13}{'% peak':>8}{'best/eager':>12}{'fused/eager':>13}"
          f"{'int8 ms':>10}{'int8/best':>11}")
    for name in args.models:
        rows = {r.backend: r for r in result.rows if r.model == name}
        best = min(rows.values(), key=lambda r: r.median_ms)
        eager, fused = rows["eager"], rows["fused"]
        ms, load = int8[name]
        speedup, fused_speedup = eager.median_ms / best.median_ms, eager.median_ms / fused.median_ms
        print(f"{name:<12}{best.backend:<13}{best.pct_of_peak:>7.0f}%"
              f"{speedup:>11.2f}x{fused_speedup:>12.2f}x"
              f"{ms:>10.1f}{best.median_ms / ms:>10.2f}x"
              + (f"  (int8 timed with other processes at {load:.0%})" if load and load > 0.1
                 else ""))
    print(f"\n{time.perf_counter() - start:.0f} s in all; batch {args.batch}, "
          f"{torch.get_num_threads()} threads")


def _int8_ms(name: str, batch: int, threads: int | None, min_time: float):
    backends.INT8_AGREEMENT = 0.0  # random weights: agreement is not the point here
    model = create_model(name).eval()
    gen = torch.Generator().manual_seed(0)
    calibration = [torch.randn(8, 3, 224, 224, generator=gen) for _ in range(4)]
    built = backends.deploy(model, "int8", calibration[0], calibration=calibration,
                            threads=threads)
    x = torch.randn(batch, 3, 224, 224, generator=gen)
    built(x)
    with OtherLoad() as load:
        calls = time_calls(lambda: built(x), device="cpu", repeats=3, max_repeats=100,
                           min_time_s=min_time)
    calls.sort()
    return calls[len(calls) // 2] * 1e3, load.fraction


if __name__ == "__main__":
    main()
