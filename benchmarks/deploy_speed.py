"""Deployed CPU speed against issue 12's goals, printed as tables (not a timed test).

Three measurements, each one `cnnzoo.infer.bench` run (every backend built and checked
against eager, then all entries timed in interleaved rounds, with the fp32 peak measured in
the same run and noisy entries flagged):

1. Goals 1-3 and the reduced-precision goal, at batch 32, 224x224: ResNet-50 and VGG-16 with
   every fp32 backend (eager, fused, onnxruntime, openvino where installed, compile unless
   --no-compile), bf16 where the CPU runs it natively, and int8. Printed: the best fp32
   backend's % of the peak and its ratio to eager (goal 1: >= 85%, >= 2x), fused / eager
   (goal 2: >= 1.3x), int8 / best fp32 (goal 3: >= 1.6x) and the best of bf16/int8 over the
   best fp32 (>= 1.8x on a CPU with native bf16 or VNNI).
2. Goal 4, EfficientNet-B0 at batch 32: best fp32 against int8 (and bf16), with int8's
   top-1 agreement with eager and its logit change. The weights are random (the zoo ships no
   trained ImageNet weights offline), so the agreement says how far int8 moves the logits of
   this graph (SiLU, depthwise, SE), not what it costs in accuracy; the accuracy cost on a
   trained network is benchmarks/int8_accuracy.py's (e.g. `--model efficientnet_b0
   --small-input`). EfficientNet-B0 stays fp32 by default unless that cost is <= 0.5 points.
3. Goal 5: batch-1 latency of every default model of `cnnzoo compare` with its best fp32
   backend (reduced precision is left out there: its accuracy is not established per model).

bf16 and int8 are calibrated and checked on random-normal batches unless --calibration DATA
(a data set name or path, e.g. an ImageFolder tarball) gives real images; the tables say
which. int8 needs no agreement bar here (random weights): `INT8_AGREEMENT` is set to 0, and
the measured agreement is printed instead.

    .venv/bin/python benchmarks/deploy_speed.py                          # all three, ~30 min
    .venv/bin/python benchmarks/deploy_speed.py --parts 1 --no-compile --rounds 2
    .venv/bin/python benchmarks/deploy_speed.py --models resnet20 --batch1-models resnet20 \
        --size 32 --batch 4 --rounds 1 --min-time 0.05 --no-compile        # a smoke run

Name the CPU and what else ran beside it with every figure it prints.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from cnnzoo.cpuinfo import native_bf16
from cnnzoo.infer import backends, bench
from cnnzoo.profile.compare import DEFAULT_MODELS
from cnnzoo.train.device import describe

GOALS = {"pct_peak": 85.0, "best_vs_eager": 2.0, "fused_vs_eager": 1.3, "int8_vs_best": 1.6,
         "reduced_vs_best": 1.8}


def fp32_backends(no_compile: bool) -> list[str]:
    names = ["eager", "fused", "onnxruntime"]
    if importlib.util.find_spec("openvino") is not None:
        names.append("openvino")
    return names + ([] if no_compile else ["compile"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="1,2,3", help="which measurements (default: 1,2,3)")
    ap.add_argument("--models", nargs="+", default=["resnet50", "vgg16"], help="part 1")
    ap.add_argument("--batch1-models", nargs="+", default=list(DEFAULT_MODELS),
                    help="part 3 (default: cnnzoo compare's default models)")
    ap.add_argument("--batch", type=int, default=32, help="parts 1 and 2")
    ap.add_argument("--size", type=int, default=224, help="image side (goals: 224)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--calibration", default=None, metavar="DATA",
                    help="real images for bf16/int8 (default: random-normal batches)")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    if args.threads:
        torch.set_num_threads(args.threads)
    backends.INT8_AGREEMENT = 0.0  # random weights: the agreement is printed, not required
    bf16_ok, bf16_why = native_bf16()
    reduced = (["bf16"] if bf16_ok else []) + ["int8"]
    print(describe("cpu", "fp32") + ("" if bf16_ok else f"; bf16 left out: {bf16_why}"))
    shape = (3, args.size, args.size)
    calibration = (bench.calibration_data(args.calibration, shape)
                   if args.calibration else None)
    fp32 = fp32_backends(args.no_compile)
    start = time.perf_counter()
    opts = dict(rounds=args.rounds, min_time_s=args.min_time, threads=args.threads,
                calibration=calibration)
    if 1 in parts:
        result = bench.bench(args.models, fp32 + reduced, [args.batch], shape, **opts)
        print(f"\n== 1. goals 1-3 at batch {args.batch} ==\n{result.peak.line()}\n"
              f"{result.table()}\n")
        goal_table(result, fp32)
    if 2 in parts:
        result = bench.bench(["efficientnet_b0"], fp32 + reduced, [args.batch], shape, **opts)
        print(f"\n== 2. goal 4: EfficientNet-B0 at batch {args.batch} ==\n{result.peak.line()}\n"
              f"{result.table()}\n")
        efficientnet_line(result, fp32)
    if 3 in parts:
        result = bench.bench(args.batch1_models, fp32, [1], shape, **opts)
        print(f"\n== 3. goal 5: batch 1, every default model ==\n{result.peak.line()}\n"
              f"{result.table()}\n")
        batch1_table(result)
    print(f"\n{time.perf_counter() - start:.0f} s in all; {torch.get_num_threads()} threads, "
          f"{args.size}x{args.size}")


def _best(rows, names):
    rows = [r for r in rows if r.backend in names]
    return min(rows, key=lambda r: r.median_ms) if rows else None


def _mark(value: float, goal: float) -> str:
    return f"{value:.2f}x ({'met' if value >= goal else 'not met'}, goal {goal}x)"


def goal_table(result: bench.BenchResult, fp32: list[str]) -> None:
    for name in dict.fromkeys(r.model for r in result.rows):
        rows = {r.backend: r for r in result.rows if r.model == name}
        best = _best(rows.values(), fp32)
        eager = rows["eager"]
        fused = _mark(eager.median_ms / rows["fused"].median_ms, GOALS["fused_vs_eager"])
        lines = [f"{name}: best fp32 {best.backend} {best.median_ms:.0f} ms, "
                 f"{best.pct_of_peak:.0f}% of peak (goal {GOALS['pct_peak']:.0f}%: "
                 f"{'met' if best.pct_of_peak >= GOALS['pct_peak'] else 'not met'}), "
                 f"{_mark(eager.median_ms / best.median_ms, GOALS['best_vs_eager'])} eager",
                 f"  fused / eager {fused}"]
        int8 = rows.get("int8")
        if int8:
            lines.append(f"  int8 {int8.median_ms:.0f} ms: "
                         f"{_mark(best.median_ms / int8.median_ms, GOALS['int8_vs_best'])} "
                         f"best fp32; {_agreement(int8)}")
        low = _best(rows.values(), bench.REDUCED)
        if low:
            lines.append(f"  best reduced precision {low.backend}: "
                         f"{_mark(best.median_ms / low.median_ms, GOALS['reduced_vs_best'])} "
                         f"best fp32")
        print("\n".join(lines))


def _agreement(r: bench.BenchRow) -> str:
    on = "random data" if r.calibration == bench.RANDOM else f"real images of {r.calibration}"
    return (f"top-1 agreement with eager {r.top1_agreement:.0%}, max |dlogit| "
            f"{r.max_rel_diff:.1e} x max |logit| on {on} ({r.agreement_on}, random weights)")


def efficientnet_line(result: bench.BenchResult, fp32: list[str]) -> None:
    rows = {r.backend: r for r in result.rows}
    best = _best(rows.values(), fp32)
    print(f"efficientnet_b0: best fp32 {best.backend} {best.median_ms:.0f} ms "
          f"({best.pct_of_peak:.0f}% of peak)")
    for name in bench.REDUCED:
        r = rows.get(name)
        if r:
            print(f"  {name} {r.median_ms:.0f} ms = {best.median_ms / r.median_ms:.2f}x best "
                  f"fp32; {_agreement(r)}")
    print("  default: fp32. int8's accuracy cost on a trained EfficientNet-B0 is not measured "
          "here (benchmarks/int8_accuracy.py --model efficientnet_b0 --small-input measures it "
          "on CIFAR-10)")


def batch1_table(result: bench.BenchResult) -> None:
    print(f"{'model':<17}{'best fp32':<13}{'ms/image':>10}{'eager ms':>10}{'x eager':>9}  flags")
    for name in dict.fromkeys(r.model for r in result.rows):
        rows = [r for r in result.rows if r.model == name]
        best = min(rows, key=lambda r: r.median_ms)
        eager = next(r for r in rows if r.backend == "eager")
        print(f"{name:<17}{best.backend:<13}{best.median_ms:>10.2f}{eager.median_ms:>10.2f}"
              f"{eager.median_ms / best.median_ms:>8.2f}x  {'; '.join(best.noisy)}")


if __name__ == "__main__":
    main()
