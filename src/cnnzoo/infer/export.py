"""`cnnzoo export`: a trained model as ONNX, TorchScript or safetensors, with its metadata.

Every format carries the same JSON record (`ModelInfo.to_dict()`: model name and builder
options, class names, channel count, preprocessing, which weights, the training config):
ONNX in the model's `metadata_props["cnnzoo"]`, TorchScript as the extra file `cnnzoo.json`,
safetensors in its header metadata under "cnnzoo" (that format lives in
`cnnzoo.checkpoint.safetensors_file`). `load_safetensors_model` rebuilds the registered
model from it, so a safetensors export is a complete model file that, unlike a pickle,
cannot carry code.

The model is exported in eval mode, where every zoo model returns plain logits (GoogLeNet's
auxiliary heads only run in training). ONNX and TorchScript are traced with a batch of 2 at
the recorded image size:

- ONNX uses torch's dynamo exporter (torch.export + onnxscript, opset 18) with a dynamic
  batch axis. The older TorchScript-based exporter (`dynamo=False`) is faster but fails on
  part of the zoo: adaptive average pooling to 7x7 from a map that 7 does not divide (VGG
  and AlexNet below 224 px, e.g. on CIFAR) and the deformable convolutions' index arithmetic.
- TorchScript uses `torch.jit.trace` (also deprecated in favour of torch.export, still the
  format C++ `torch::jit::load` reads).
- Tracing runs `ZooModel.check_input` once, in Python, so the exported graphs do not check
  their input; the batch size stays free, the channel count and image size are fixed.

`export_model` then checks the file before it is moved into place: it loads it back
(onnxruntime, `torch.jit.load`, `load_safetensors_model`) and compares its logits with
PyTorch's on a batch of 3 (another batch size than traced). The file passes when

    max |logit difference| <= 1e-4 x max |PyTorch logit|   (floor 1e-7 for logits near 0)

The rule is the deploy-style one (relative, so it holds for logits of any scale). float32
rounding in onnxruntime's reordered graph stays far below it: measured here at 64x64 px on
freshly initialised resnet50 and googlenet, the ONNX difference was under 1% of the
tolerance; TorchScript (densenet121, se_resnet101, efficientnet_b4) and safetensors were
exact. A graph that computes something else is far above it. A file that fails is deleted
and `ExportMismatchError` names the difference; `force=True` keeps it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from cnnzoo.checkpoint.info import ModelInfo, Preprocess, metadata_json
from cnnzoo.checkpoint.safetensors_file import load_safetensors_model, write_safetensors
from cnnzoo.fileio import atomic_write, fsync_dir
from cnnzoo.infer.loading import load_model

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
ONNX_OPSET = 18  # the dynamo exporter's default; GridSample (deformable conv) needs >= 16
RTOL = 1e-4  # largest |logit difference| allowed, relative to the largest |logit|
ATOL_FLOOR = 1e-7  # ... and at least this, so that near-zero logits are not held to 0


class ExportMismatchError(RuntimeError):
    """The exported file's logits differ from PyTorch's beyond the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote.

    Attributes:
        path: the file.
        format: "onnx", "torchscript" or "safetensors".
        max_abs_diff: largest |logit difference| between the file and PyTorch on a check
            batch, or None when not checked (verify=False, or onnxruntime not installed).
        bytes: file size.
        tolerance: the largest difference that passes (see `tolerance`), None when not checked.
    """

    path: Path
    format: str
    max_abs_diff: float | None
    bytes: int
    tolerance: float | None = None

    @property
    def matches(self) -> bool | None:
        """Whether the file passed the check; None when it was not checked."""
        if self.max_abs_diff is None or self.tolerance is None:
            return None
        return self.max_abs_diff <= self.tolerance

    def check_line(self) -> str:
        """'max |logit difference| vs PyTorch on 3 images: 1.2e-06 (tolerance 3.4e-04)'."""
        return (f"max |logit difference| vs PyTorch on 3 images: {self.max_abs_diff:.2e} "
                f"(tolerance {self.tolerance:.2e} = {RTOL:.0e} x max |logit|)")


def default_output(source: str | os.PathLike, fmt: str) -> Path:
    """`runs/x/best.pt` -> `runs/x/best.onnx` (`.torchscript.pt`, `.safetensors`)."""
    source = Path(source)
    stem = source.name.removesuffix(".safetensors").removesuffix(".pt")
    return source.with_name(stem + SUFFIX[fmt])


def export_model(path: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None, *,
                 weights: str = "auto", verify: bool = True, force: bool = False
                 ) -> ExportResult:
    """Export a checkpoint (or a safetensors export) to `fmt`, written atomically: the file
    is written under a temporary name, checked, and only then renamed to `out`.

    Args:
        path: the model file.
        fmt: "onnx", "torchscript" or "safetensors".
        out: destination; default: next to `path` (see `default_output`).
        weights: "auto" (what validation used: EMA if kept), "model" or "ema".
        verify: load the file back and compare its logits with PyTorch's.
        force: keep a file whose logits differ beyond the tolerance (the result says so).

    Raises:
        CheckpointError: unreadable source (one line naming it). ValueError: bad format or
        destination. RuntimeError: the exporter failed or a needed package is missing.
        ExportMismatchError: the file's logits differ beyond the tolerance and not `force`;
        nothing is left at `out`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out) if out is not None else default_output(path, fmt)
    if out.resolve() == Path(path).resolve():
        raise ValueError(f"{out}: the export would overwrite its source; pass --out")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: no such directory for the export")
    model, info = load_model(path, weights=weights)
    writer = {"onnx": _write_onnx, "torchscript": _write_torchscript,
              "safetensors": write_safetensors}[fmt]
    # Staged under a dot-name ending in .tmp (what `remove_stale_temp_files` sweeps), so a
    # file that fails the check, or a crash, never leaves anything at `out`.
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".unchecked.tmp", dir=out.parent)
    os.close(fd)
    staged = Path(name)
    try:
        writer(model, info, staged)
        result = ExportResult(out, fmt, None, staged.stat().st_size)
        if verify:
            diff, largest = verify_export(model, info, staged, fmt)
            if diff is not None:
                result = replace(result, max_abs_diff=diff, tolerance=tolerance(largest))
        if result.matches is False and not force:
            raise ExportMismatchError(f"{out}: {result.check_line()} is too large; not "
                                      f"written (--force keeps it)")
        os.replace(staged, out)
        fsync_dir(out.parent)
    finally:
        staged.unlink(missing_ok=True)
    return result


def tolerance(max_abs_logit: float) -> float:
    """The largest |logit difference| an export may show: `RTOL` x the largest |logit|,
    at least `ATOL_FLOOR`."""
    return max(RTOL * max_abs_logit, ATOL_FLOOR)


def example_input(preprocess: Preprocess, in_chans: int, batch: int, seed: int = 0
                  ) -> torch.Tensor:
    """A normalised-looking random batch at the recorded image size."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_chans, *preprocess.image_size, generator=g)


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what the tracers say about the zoo's Python-level input check, their own
    deprecations, and the ONNX exporter's note that torchvision ops are not registered."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        onnx_log.setLevel(level)


def onnx_proto(model: nn.Module, x: torch.Tensor, name: str):
    """`model` as an ONNX ModelProto (dynamo exporter, input "images" with a dynamic batch,
    output "logits"); `x` is the example batch, of size 2 or more (torch.export specialises a
    dimension of size 0 or 1). A failure is one RuntimeError line naming `name`."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet():
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=ONNX_OPSET,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes={"x": {0: batch}}, verbose=False)
    except Exception as err:
        raise RuntimeError(f"ONNX export of {name} failed: {_first_line(err)}") from err
    return program.model_proto


def _write_onnx(model: nn.Module, info: ModelInfo, out: Path) -> None:
    try:
        import onnx  # lazy: an optional extra (cnnzoo[export]), needed only for this format
    except ImportError:
        raise RuntimeError("export --format onnx needs the onnx package "
                           "(pip install onnx onnxruntime)") from None
    # Batch 2 when tracing: torch.export specialises a dimension of size 0 or 1.
    proto = onnx_proto(model, example_input(info.preprocess, info.in_chans, 2), info.model_name)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "cnnzoo", metadata_json(info)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    atomic_write(out, lambda f: f.write(data))


def _write_torchscript(model: nn.Module, info: ModelInfo, out: Path) -> None:
    x = example_input(info.preprocess, info.in_chans, 2)
    try:
        with _quiet():
            # No check_trace: it re-runs the model thrice; verify_export compares once instead.
            traced = torch.jit.trace(model, (x,), check_trace=False)
    except Exception as err:
        raise RuntimeError(f"TorchScript export of {info.model_name} failed: "
                           f"{_first_line(err)}") from err
    extra = {"cnnzoo.json": metadata_json(info)}
    with _quiet():
        atomic_write(out, lambda f: torch.jit.save(traced, f, _extra_files=extra))


@torch.no_grad()
def verify_export(model: nn.Module, info: ModelInfo, out: Path, fmt: str
                  ) -> tuple[float | None, float]:
    """(largest |logit difference| between the exported file and `model`, largest |logit|
    of `model`) on a random batch of 3; the difference is None for ONNX when onnxruntime is
    not installed."""
    x = example_input(info.preprocess, info.in_chans, 3, seed=1)
    expected = model(x).float()
    if fmt == "onnx":
        try:
            import onnxruntime as ort  # lazy: optional (cnnzoo[export]); without it, no check
        except ImportError:
            return None, float(expected.abs().max())
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    elif fmt == "torchscript":
        # Unoptimised: the profiling executor's first calls compile, seconds for one batch.
        with _quiet(), torch.jit.optimized_execution(False):
            got = torch.jit.load(str(out), map_location="cpu")(x)
    else:
        got = load_safetensors_model(out)[0](x)
    return float((got.float() - expected).abs().max()), float(expected.abs().max())
