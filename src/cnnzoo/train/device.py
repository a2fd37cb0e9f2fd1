"""Device and numeric precision: which autocast dtype, whether a GradScaler, how to time.

Rules (`resolve`):
- device "auto" is CUDA when available, else the CPU; under torchrun each process takes
  GPU `LOCAL_RANK`.
- precision "auto" is bf16 autocast on CUDA GPUs that support it and fp16 (with a
  GradScaler, whose loss scaling keeps small fp16 gradients from flushing to 0) on older
  ones; on the CPU it is bf16 only where the CPU has AMX tiles, the units that make bf16
  convolutions fast, and fp32 elsewhere. On CPUs with AVX512-BF16 but no AMX, bf16 is
  allowed when asked for but not chosen: measured here (AMD EPYC, AVX512-BF16) a bf16
  3x3 conv forward + backward is within 20% of fp32, not worth the precision lost.
- fp16 on the CPU is refused: autocast to fp16 is for GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Execution:
    """Where and in which precision the training step runs.

    Attributes:
        device: the torch device of model and batches.
        precision: "fp32", "bf16" or "fp16".
        amp_dtype: autocast dtype, None for plain fp32.
        use_scaler: a GradScaler scales the loss (fp16 only).
    """

    device: torch.device
    precision: str
    amp_dtype: torch.dtype | None
    use_scaler: bool

    def synchronize(self) -> None:
        """Wait for queued GPU work, so that a wall-clock reading covers it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def cpu_has_amx() -> bool:
    """AMX tile units (Intel Sapphire Rapids and later): native fast bf16 matmul/conv."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def cpu_supports_bf16() -> bool:
    """oneDNN can run bf16 kernels natively (AVX512-BF16 or AMX) rather than emulate them."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe and probe())


def resolve(device: str = "auto", precision: str = "auto", *, local_rank: int = 0) -> Execution:
    """Turn the config's device and precision into an `Execution`.

    Raises:
        ValueError: CUDA asked for but absent, or a precision the device cannot run.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: cuda was asked for but torch.cuda.is_available() is False")
        dev = torch.device("cuda", local_rank)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(f"device: expected auto, cpu or cuda, got {device!r}")

    if dev.type == "cuda":
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError("precision: this GPU has no bf16 support; use fp16 or fp32")
    else:
        if precision == "auto":
            precision = "bf16" if cpu_has_amx() else "fp32"
        if precision == "bf16" and not cpu_supports_bf16():
            raise ValueError("precision: this CPU has no native bf16 (neither AVX512-BF16 nor "
                             "AMX), bf16 would be emulated and slow; use fp32")
        if precision == "fp16":
            raise ValueError("precision: fp16 autocast is for CUDA; use bf16 or fp32 on a CPU")
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision: expected auto, fp32, bf16 or fp16, got {precision!r}")
    return Execution(dev, precision, dtypes[precision], use_scaler=precision == "fp16")
