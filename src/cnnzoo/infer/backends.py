"""Deployment backends: the same model, run the fastest way this machine offers.

`deploy(model, backend, example_input)` returns a `Deployed`, a callable from an input batch to
logits that also carries the backend's name, its export artefact where it has one, its build
time and its measured agreement with eager PyTorch. Every backend is checked against eager on
`example_input` when it is built: max |logit - eager logit| <= 1e-4 x max |eager logit| (the
rule of `cnnzoo export`), or `DeployMismatchError` with one line naming the backend and the
difference. Nothing is silently wrong.

Backends (all fp32):
- `eager`: the baseline, `eval()` under `torch.inference_mode`.
- `fused`: every BatchNorm that directly follows a convolution (and is that convolution's
  only consumer) folded into the convolution's weight and bias (`fold_batchnorm`), channels_last
  memory format, inference mode. The folded model is a plain `nn.Module` one can save.
- `compile`: `torch.compile` with inductor, on the fused model, with inductor's freezing (the
  weights become constants the compiler can fold), as Intel recommends for CPU inference.
- `onnxruntime`: the fused model exported through the dynamo ONNX exporter, run by an ORT
  session with every graph optimisation on and `threads` intra-op threads; the session options
  are recorded in `Deployed.options`.
- `openvino`: the same fused ONNX export, read by OpenVINO and compiled for its CPU plugin
  (optional extra `cnnzoo[openvino]`, which also needs `cnnzoo[export]` for the exporter) with
  `INFERENCE_NUM_THREADS` = `threads`, `INFERENCE_PRECISION_HINT` = f32 and
  `PERFORMANCE_HINT` = LATENCY, all recorded in `Deployed.options`. f32 must be asked for:
  on a CPU with AVX512_BF16 or AMX the plugin's default precision is bf16 (measured on the
  Zen 5: 2.8e-3 x max |logit| on resnet20, far outside the fp32 1e-4 rule), so an unset
  hint would make an "fp32" backend silently reduced-precision. LATENCY (one stream that
  uses every thread) because `Deployed` runs one synchronous request per batch: THROUGHPUT
  splits the threads into several streams that only pay when several requests are in flight.

And two reduced-precision backends, checked by their top-1 agreement with eager and their
max |logit - eager logit| relative to max |eager logit| (`Deployed.max_rel_diff`), not by the
fp32 1e-4 rule:
- `bf16`: the fused model run under bf16 autocast (fp32 weights, BatchNorm folded,
  channels_last), built only where the CPU runs bf16 natively (`cnnzoo.cpuinfo.native_bf16`:
  avx512_bf16 or amx_bf16 in its flags, and oneDNN able to use them); elsewhere one line says
  why (`UnsupportedBackendError`). Autocast on the folded model was measured against casting
  the folded weights to bf16 on ResNet-50, 2 threads, 224x224: 2.6x fp32-fused at batch 8 (bf16
  weights: 3.0x) and 1.6x at batch 32 (bf16 weights: 1.1x), so autocast, which keeps fp32
  weights and reductions, was kept. Agreement is measured on `calibration` when given (the
  user's data; top-1 below `BF16_AGREEMENT` is refused), else on `example_input`, where only
  the relative-difference bound `BF16_RTOL` is enforced (two random images say little of top-1).
- `int8`: ONNX Runtime's post-training static quantization in QDQ form (int8 weights per
  channel, uint8 activations, min-max ranges calibrated on `calibration`, an iterable of the
  user's own input batches), run by the same kind of ORT session. ORT's QDQ path was chosen
  over PT2E + the X86 inductor quantizer because the fp32 ORT session is already this
  project's fastest CPU backend to build, QDQ keeps every op it cannot quantize in fp32
  instead of failing, and PT2E (now in torchao) failed on the folded ResNet-50 (see
  benchmarks/int8_probe.py). Activations are uint8, not int8, because MLAS's x86 int8 kernels
  multiply unsigned by signed bytes: with int8 activations ORT fused only 33 of ResNet-50's
  53 convolutions into QLinearConv and left the 20 that feed a residual addition, and the 16
  additions, in fp32 behind 34 layout Transposes (so int8 ran at fp32 speed); with uint8 all
  53 and the 16 additions run as QLinearConv / QLinearAdd. On a CPU without VNNI
  (avx512_vnni, avx_vnni or amx_int8 in its flags) weights are quantized to 7 bits
  (`reduce_range`), as ORT advises there: its u8 x s8 instruction (VPMADDUBSW) sums pairs
  into int16 and saturates at full-range weights. An int8 model is not expected to match
  eager to 1e-4: its check is the top-1 agreement with eager on the calibration batches,
  which must reach `INT8_AGREEMENT`.
"""

from __future__ import annotations

import collections
import copy
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from cnnzoo.cpuinfo import cpu_flags, native_bf16
from cnnzoo.infer.export import onnx_proto

BACKENDS = ("eager", "fused", "compile", "onnxruntime", "openvino", "bf16", "int8")
INT8_AGREEMENT = 0.9  # top-1 agreement with eager on the calibration batches, at least
BF16_AGREEMENT = 0.9  # the same, for bf16 given calibration batches
# bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per op); ResNet-50 measured
# 4.4e-3 x max |logit|; 5e-2 flags a model that bf16 really breaks, not accumulated rounding.
BF16_RTOL = 5e-2
RTOL = 1e-4  # agreement with eager, relative to max |eager logit|, as for `cnnzoo export`
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products into int32


class DeployMismatchError(RuntimeError):
    """A backend whose logits differ from eager PyTorch's by more than the tolerance."""


class UnsupportedBackendError(RuntimeError):
    """A backend this machine cannot run well (bf16 without native bf16 units)."""


@dataclass
class Deployed:
    """A built backend: call it on a batch to get logits.

    Attributes:
        backend: its name (one of `BACKENDS`).
        run: the function from an input batch to logits.
        module: the PyTorch module it runs (the folded one for `fused`), or None (onnxruntime).
        artefact: the serialised form where the backend has one (ONNX bytes), else None.
        build_s: seconds to build it, including the first call (compilation happens there).
        max_abs_diff, tolerance: its agreement with eager on the example input.
        options: the settings it was built with (threads, ORT session options, ...).
    """

    backend: str
    run: Callable[[torch.Tensor], torch.Tensor]
    module: nn.Module | None
    artefact: bytes | None
    build_s: float
    max_abs_diff: float
    tolerance: float
    options: dict[str, Any] = field(default_factory=dict)
    top1_agreement: float | None = None  # bf16, int8: see `options["agreement_on"]`
    max_rel_diff: float | None = None  # bf16, int8: max |logit diff| / max |eager logit|

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def deploy(model: nn.Module, backend: str, example_input: torch.Tensor, *,
           calibration: Iterable[torch.Tensor] | None = None,
           threads: int | None = None) -> Deployed:
    """Build `backend` for `model` and check it against eager on `example_input` (int8: on
    the `calibration` batches, which only int8 needs).

    The model passed in is not modified (backends work on a copy).

    Raises:
        ValueError: an unknown backend.
        RuntimeError: a backend whose optional dependency is missing (one line naming it).
        UnsupportedBackendError: bf16 on a CPU without native bf16 (one line saying so).
        DeployMismatchError: the backend's logits differ from eager's beyond the tolerance.
    """
    if backend not in BACKENDS:
        raise ValueError(f"deploy: unknown backend {backend!r}; expected one of "
                         f"{', '.join(BACKENDS)}")
    if threads is not None:
        torch.set_num_threads(threads)
    base = copy.deepcopy(model).eval()
    with torch.inference_mode():
        expected = base(example_input)
    start = time.perf_counter()
    if backend == "bf16":
        return _bf16(base, example_input, expected,
                     None if calibration is None else list(calibration), threads, start)
    if backend == "int8":
        if calibration is None:
            raise ValueError("deploy int8: needs calibration, an iterable of input batches "
                             "of your own data")
        return _int8(base, example_input, list(calibration), threads, start)
    built = _BUILDERS[backend](base, example_input, threads)
    got = built.run(example_input)
    built.build_s = time.perf_counter() - start
    built.max_abs_diff = float((got.float() - expected.float()).abs().max())
    built.tolerance = RTOL * float(expected.abs().max())
    if not built.max_abs_diff <= built.tolerance:
        raise DeployMismatchError(
            f"deploy {backend}: max |logit difference| vs eager on {len(example_input)} "
            f"images: {built.max_abs_diff:.2e} (tolerance {built.tolerance:.2e} = "
            f"{RTOL:.0e} x max |logit|)")
    return built


def _eager(model: nn.Module, x: torch.Tensor, threads: int | None) -> Deployed:
    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(batch)

    return Deployed("eager", run, model, None, 0.0, 0.0, 0.0, {"threads": threads})


def _fused(model: nn.Module, x: torch.Tensor, threads: int | None) -> Deployed:
    folded = fold_batchnorm(model, x).to(memory_format=torch.channels_last)

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return folded(batch.contiguous(memory_format=torch.channels_last))

    return Deployed("fused", run, folded, None, 0.0, 0.0, 0.0,
                    {"threads": threads, "channels_last": True,
                     "folded": getattr(folded, "_cnnzoo_folded", [])})


def _compile(model: nn.Module, x: torch.Tensor, threads: int | None) -> Deployed:
    folded = _fused(model, x, threads).module
    options = {"freezing": True}
    compiled = torch.compile(folded, backend="inductor", options=options)

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # freezing needs no_grad; inference_mode tensors break dynamo
            return compiled(batch.contiguous(memory_format=torch.channels_last))

    return Deployed("compile", run, folded, None, 0.0, 0.0, 0.0,
                    {"threads": threads, "inductor": options, "channels_last": True})


def _agreement(run: Callable, model: nn.Module,
               batches: list[torch.Tensor]) -> tuple[float, float, float, int]:
    """(top-1 agreement, max |logit diff|, that relative to max |eager logit|, images) of
    `run` against eager `model` over `batches`."""
    agree = seen = 0
    diff = scale = 0.0
    with torch.inference_mode():
        for batch in batches:
            got, ref = run(batch).float(), model(batch).float()
            agree += int((got.argmax(1) == ref.argmax(1)).sum())
            seen += len(batch)
            diff = max(diff, float((got - ref).abs().max()))
            scale = max(scale, float(ref.abs().max()))
    return agree / seen, diff, diff / scale if scale else float("inf"), seen


def _bf16(model: nn.Module, x: torch.Tensor, expected: torch.Tensor,
          calibration: list[torch.Tensor] | None, threads: int | None,
          start: float) -> Deployed:
    ok, why = native_bf16()
    if not ok:
        raise UnsupportedBackendError(f"deploy bf16: {why}")
    if calibration is not None and not calibration:
        raise ValueError("deploy bf16: calibration holds no batches")
    folded = _fused(model, x, threads).module

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return folded(batch.contiguous(memory_format=torch.channels_last)).float()

    run(x)  # oneDNN picks and caches its bf16 kernels on the first call
    build_s = time.perf_counter() - start
    batches = calibration if calibration is not None else [x]
    top1, diff, rel, seen = _agreement(run, model, batches)
    on = f"{seen} calibration images" if calibration is not None else f"{seen} example images"
    built = Deployed("bf16", run, folded, None, build_s, diff, BF16_RTOL * float(
        expected.abs().max()), {"threads": threads, "autocast": "bfloat16", "weights": "fp32",
                                "channels_last": True, "agreement_on": on,
                                "folded": getattr(folded, "_cnnzoo_folded", [])},
                     top1_agreement=top1, max_rel_diff=rel)
    if not rel <= BF16_RTOL:
        raise DeployMismatchError(
            f"deploy bf16: max |logit difference| vs eager on the {on} is {rel:.2e} x max "
            f"|logit| (at most {BF16_RTOL:.0e} expected); keep this model in fp32")
    if calibration is not None and top1 < BF16_AGREEMENT:
        raise DeployMismatchError(
            f"deploy bf16: top-1 agreement with eager on the {on} is {top1:.1%} (at least "
            f"{BF16_AGREEMENT:.0%} expected); keep this model in fp32")
    return built


def _ort():
    try:
        import onnxruntime as ort  # lazy: an optional extra (cnnzoo[export])
    except ImportError:
        raise RuntimeError("deploy onnxruntime/int8 needs the onnxruntime and onnx packages "
                           "(pip install 'cnnzoo[export]')") from None
    return ort


def _export_onnx(model: nn.Module, x: torch.Tensor) -> bytes:
    example = x if len(x) > 1 else x.repeat(2, 1, 1, 1)  # export specialises a batch of 1
    return onnx_proto(model, example, f"deploy {type(model).__name__}").SerializeToString()


def _session(artefact: bytes, threads: int | None) -> tuple[Callable, dict]:
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        so.intra_op_num_threads = threads
    session = ort.InferenceSession(artefact, so, providers=["CPUExecutionProvider"])

    def run(batch: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {"images": batch.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)

    return run, {"threads": threads, "graph_optimization_level": "ORT_ENABLE_ALL",
                 "intra_op_num_threads": so.intra_op_num_threads,
                 "providers": session.get_providers()}


def _onnxruntime(model: nn.Module, x: torch.Tensor, threads: int | None) -> Deployed:
    _ort()  # the missing-extra line before minutes of exporting
    artefact = _export_onnx(fold_batchnorm(model, x), x)
    run, options = _session(artefact, threads)
    return Deployed("onnxruntime", run, None, artefact, 0.0, 0.0, 0.0, options)


def _openvino_module():
    try:
        import openvino  # lazy: an optional extra (cnnzoo[openvino])
    except ImportError:
        raise RuntimeError("deploy openvino needs the openvino package "
                           "(pip install 'cnnzoo[openvino]')") from None
    return openvino


def _openvino(model: nn.Module, x: torch.Tensor, threads: int | None) -> Deployed:
    ov = _openvino_module()  # the missing-extra line before exporting
    artefact = _export_onnx(fold_batchnorm(model, x), x)
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(artefact, b""), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(batch: torch.Tensor) -> torch.Tensor:
        out = request.infer({0: batch.detach().cpu().numpy()})[output]
        return torch.from_numpy(out.copy())  # the request reuses its output buffer

    options = {"threads": threads, "device": "CPU", "openvino": ov.__version__, **{
        key: str(compiled.get_property(key)) for key in (
            "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS",
            "NUM_STREAMS")}}
    return Deployed("openvino", run, None, artefact, 0.0, 0.0, 0.0, options)


def _int8(model: nn.Module, x: torch.Tensor, calibration: list[torch.Tensor],
          threads: int | None, start: float) -> Deployed:
    _ort()
    from onnxruntime import quantization as q  # lazy: part of the optional onnxruntime

    if not calibration:
        raise ValueError("deploy int8: calibration holds no batches")
    fp32 = _export_onnx(fold_batchnorm(model, x), x)

    class Batches(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            batch = next(self.items, None)
            return None if batch is None else {"images": batch.detach().cpu().numpy()}

    reduce_range = not has_vnni()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        q.quantize_static(str(src), str(dst), Batches(), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, reduce_range=reduce_range,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
        artefact = dst.read_bytes()
    run, options = _session(artefact, threads)
    options.update({"quant_format": "QDQ", "per_channel": True, "activations": "uint8",
                    "weights": "int7 (reduce_range)" if reduce_range else "int8",
                    "calibration": "MinMax", "calibration_batches": len(calibration)})
    build_s = time.perf_counter() - start
    top1, diff, rel, seen = _agreement(run, model, calibration)
    options["agreement_on"] = f"{seen} calibration images"
    built = Deployed("int8", run, None, artefact, build_s, diff, float("nan"), options,
                     top1_agreement=top1, max_rel_diff=rel)
    if built.top1_agreement < INT8_AGREEMENT:
        raise DeployMismatchError(
            f"deploy int8: top-1 agreement with eager on the {seen} calibration images is "
            f"{built.top1_agreement:.1%} (at least {INT8_AGREEMENT:.0%} expected); keep this "
            f"model in fp32")
    return built


def has_vnni(flags: set[str] | None = None) -> bool:
    """Whether the CPU has int8 dot-product instructions that accumulate into int32
    (`VNNI_FLAGS`); `flags` default: /proc/cpuinfo's. Unknown flags count as none."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags) and any(f in flags for f in VNNI_FLAGS)


# int8 and bf16 are built by `_int8` and `_bf16` (calibration, agreement instead of 1e-4).
_BUILDERS = {"eager": _eager, "fused": _fused, "compile": _compile,
             "onnxruntime": _onnxruntime, "openvino": _openvino}


# ---- BatchNorm folding ------------------------------------------------------------------


class _Uses(TorchFunctionMode):
    """Counts how often each tensor is passed to a torch function, outside the modules in
    `skip` (a BatchNorm reading its own input does not count as a second consumer)."""

    def __init__(self):
        super().__init__()
        self.uses: collections.Counter[int] = collections.Counter()
        self.skip = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.skip:
            for t in tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor):
                    self.uses[id(t)] += 1
        return func(*args, **kwargs)


def conv_bn_pairs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) for each BatchNorm2d whose input is the output of one
    Conv2d and that output's only consumer, found by running `model` once on
    `example_input` in eval mode. Modules called more than once are left out."""
    names = {m: n for n, m in model.named_modules()}
    calls: collections.Counter[str] = collections.Counter()
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id -> (conv, tensor kept alive)
    candidates: list[tuple[str, str, int]] = []
    mode = _Uses()

    def conv_hook(module, args, out):
        calls[names[module]] += 1
        outputs[id(out)] = (names[module], out)
        mode.uses[id(out)] = 0  # a freed tensor may have had this id before

    def bn_pre(module, args):
        calls[names[module]] += 1
        mode.skip += 1
        if id(args[0]) in outputs:
            candidates.append((outputs[id(args[0])][0], names[module], id(args[0])))

    def bn_post(module, args, out):
        mode.skip -= 1

    hooks = []
    for m in model.modules():
        if type(m) is nn.Conv2d:
            hooks.append(m.register_forward_hook(conv_hook))
        elif type(m) is nn.BatchNorm2d:
            hooks += [m.register_forward_pre_hook(bn_pre), m.register_forward_hook(bn_post)]
    try:
        with torch.no_grad(), mode:
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return [(conv, bn) for conv, bn, tid in candidates
            if mode.uses[tid] == 0 and calls[conv] == 1 and calls[bn] == 1]


def fold_batchnorm(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """A copy of `model` (in eval mode) with every BatchNorm of `conv_bn_pairs` folded into its
    convolution and replaced by `nn.Identity`. The folded names are in `_cnnzoo_folded`.

    Folding (eval mode, per output channel c): s = gamma_c / sqrt(var_c + eps);
    W'_c = s W_c; b'_c = s (b_c - mean_c) + beta_c.
    """
    folded = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(folded, example_input)
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        _set(folded, conv_name, _fold(conv, bn))
        _set(folded, bn_name, nn.Identity())
    folded._cnnzoo_folded = [bn for _, bn in pairs]
    return folded


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    with torch.no_grad():
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * scale
        if bn.bias is not None:
            new_bias = new_bias + bn.bias
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, bias=True,
                          padding_mode=conv.padding_mode).to(conv.weight.device)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(new_bias)
    return fused


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
