"""Why is int8 no faster than fp32 here? A short probe of the int8 paths on one network.

Variants, all from the same BatchNorm-folded network (random weights, calibrated on random
batches: speed only), timed at one batch size in interleaved rounds:
- `ort fp32`: the `onnxruntime` backend's session.
- `ort QDQ s8s8`: today's `int8` backend (QDQ, int8 activations and weights, per channel).
- `ort QDQ u8s8`: the same with uint8 activations, the pair MLAS's x86 int8 kernels are
  written for (VPMADDUBSW / VPDPBUSD multiply unsigned by signed bytes).
- `ort QOp u8s8`: QOperator format (QLinearConv nodes written by the quantizer itself).
- `pt2e x86`: torch.export + torchao's PT2E prepare/convert with the X86 inductor quantizer,
  then torch.compile (inductor, freezing), where torchao is installed (`cnnzoo[pt2e]`).
For each ORT variant it prints the op types of the graph ORT actually runs (its optimised
model, saved with `optimized_model_filepath`): whether the QDQ pairs were fused into
QLinearConv / ConvInteger or stayed as DequantizeLinear -> fp32 Conv.

Builds run under a shared hold of /tmp/cnnzoo-quiet.lock, timing under an exclusive one.

    .venv/bin/python benchmarks/int8_probe.py --model resnet50 --batch 8 --min-time 1.5

Measured 2026-12-02 on the 2-core AMD EPYC (Zen 5, family 26 model 2, avx512_vnni,
avx512_bf16), 2 threads, torch 2.13.0+cpu, onnxruntime 1.32.0, timing under the exclusive
lock; ResNet-50, batch 8, 224x224:

| variant | graph ORT runs | ms | x ort fp32 |
|---|---|---:|---:|
| ort fp32 | 53 Conv (NCHWc) | 174.3 | 1.00 |
| ort QDQ s8s8 (old int8) | 33 QLinearConv; 20 Conv, 16 Add fp32; 34 Transpose | 195.2 | 0.89 |
| ort QDQ u8s8 (int8 now) | 53 QLinearConv, 16 QLinearAdd, 2 Transpose | 51.6 | 3.38 |
| ort QOp u8s8 | the same | 52.0 | 3.36 |
| pt2e x86 (torchao 0.18) | fails: "Input partition has more than one output node" | | |
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnzoo.infer.backends import _export_onnx, fold_batchnorm
from cnnzoo.models import create_model
from cnnzoo.profile.timing import time_calls

LOCK = "/tmp/cnnzoo-quiet.lock"


@contextlib.contextmanager
def held(mode: int):
    with open(LOCK, "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ort_variants(model, x, calibration, threads, tmp: Path) -> dict:
    import onnx
    import onnxruntime as ort
    from onnxruntime import quantization as q

    fp32 = tmp / "fp32.onnx"
    fp32.write_bytes(_export_onnx(model, x))

    class Batches(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            b = next(self.items, None)
            return None if b is None else {"images": b.numpy()}

    paths = {"ort fp32": fp32}
    for name, fmt, act in (("ort QDQ s8s8", q.QuantFormat.QDQ, q.QuantType.QInt8),
                           ("ort QDQ u8s8", q.QuantFormat.QDQ, q.QuantType.QUInt8),
                           ("ort QOp u8s8", q.QuantFormat.QOperator, q.QuantType.QUInt8)):
        dst = tmp / (name.replace(" ", "_") + ".onnx")
        q.quantize_static(str(fp32), str(dst), Batches(), quant_format=fmt, per_channel=True,
                          activation_type=act, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
        paths[name] = dst
    runs = {}
    for name, path in paths.items():
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath)
                                  .graph.node)
        print(f"{name:<14} runs: {dict(ops.most_common(8))}", flush=True)
        runs[name] = (lambda s=session: s.run(None, {"images": x.numpy()})[0])
    return runs


def pt2e_variant(model, x, calibration):
    """`model` unfolded: the X86 quantizer folds BatchNorm itself, and on the folded ResNet-50
    its conv + add + relu pattern matcher fails ("Input partition has more than one output
    node", torchao 0.18)."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        print("pt2e x86: not measured (torchao is not installed: pip install 'cnnzoo[pt2e]')")
        return {}
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    try:
        with torch.no_grad():
            exported = torch.export.export(model, (x,)).module()
            prepared = prepare_pt2e(exported, quantizer)
            for b in calibration:
                prepared(b)
            compiled = torch.compile(convert_pt2e(prepared))
            t0 = time.perf_counter()
            compiled(x)
    except Exception as err:  # a probe: say what failed and time the rest
        print(f"pt2e x86: failed: {type(err).__name__}: {str(err).splitlines()[0]}")
        return {}
    print(f"pt2e x86: compiled in {time.perf_counter() - t0:.0f} s", flush=True)

    def run():
        with torch.no_grad():
            return compiled(x)

    return {"pt2e x86": run}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--no-pt2e", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    shape = (3, args.size, args.size)
    x = torch.randn(args.batch, *shape, generator=gen)
    calibration = [torch.randn(4, *shape, generator=gen) for _ in range(2)]
    with held(fcntl.LOCK_SH), tempfile.TemporaryDirectory() as tmp:
        model = create_model(args.model).eval()
        runs = ort_variants(fold_batchnorm(model, x), x, calibration, args.threads, Path(tmp))
        if not args.no_pt2e:
            runs.update(pt2e_variant(model, x, calibration))
    times = {name: [] for name in runs}
    with held(fcntl.LOCK_EX):
        for fn in runs.values():
            fn()
        for _ in range(args.rounds):
            for name, fn in runs.items():
                times[name] += time_calls(fn, device="cpu", repeats=3, max_repeats=200,
                                          min_time_s=args.min_time)
    base = statistics.median(times["ort fp32"])
    print(f"\n{args.model}, batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, "
          f"torch {torch.__version__}")
    for name, calls in times.items():
        ms = statistics.median(calls) * 1e3
        print(f"{name:<14}{ms:>9.1f} ms  {base * 1e3 / ms:>5.2f}x ort fp32")


if __name__ == "__main__":
    main()
