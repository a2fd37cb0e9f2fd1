"""Device and numeric precision: which autocast dtype, whether a GradScaler, how to time.

Rules (`resolve`):
- device "auto" is CUDA when available, else the CPU; under torchrun each process takes
  GPU `LOCAL_RANK`.
- precision "auto" is bf16 autocast on CUDA GPUs that support it and fp16 (with a
  GradScaler, whose loss scaling keeps small fp16 gradients from flushing to 0) on older
  ones. On the CPU "auto" is fp32, whatever the CPU has: a run's numbers then do not
  depend on which machine it landed on, and every CPU figure in the README and docs/ is
  fp32. bf16 autocast is opt-in (`--precision bf16`) and accepted only where the CPU runs
  bf16 natively (AMX tiles, Intel Sapphire Rapids and later, or AVX512-BF16); elsewhere
  oneDNN would emulate it, slower than fp32. Measured here (AMD EPYC, AVX512-BF16, no AMX)
  a bf16 3x3 conv forward + backward is within 20% of fp32, not worth the precision lost.
- fp16 on the CPU is refused: autocast to fp16 is for GPUs.

`describe` is the one-line header every train, eval and timing run prints first (device
with its name and bf16 units, precision, threads), so what ran is never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnzoo.cpuinfo import cpu_has_amx, cpu_supports_bf16
from cnnzoo.fileio import cpu_name

__all__ = ["Execution", "cpu_bf16_units", "cpu_has_amx", "cpu_supports_bf16", "describe",
           "resolve"]  # the probes live in cnnzoo.cpuinfo (infer needs them too)


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

    def describe(self) -> str:
        """The run header, see `describe`."""
        return describe(self.device, self.precision)

    def synchronize(self) -> None:
        """Wait for queued GPU work, so that a wall-clock reading covers it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def cpu_bf16_units() -> list[str]:
    """The CPU's native bf16 units as torch detects them: "amx", "avx512_bf16", both or none."""
    probes = {"amx": cpu_has_amx,
              "avx512_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", None)}
    return [name for name, probe in probes.items() if probe is not None and probe()]


def describe(device: str | torch.device, precision: str, threads: int | None = None) -> str:
    """One line saying where and how a run computes, e.g.
    `device cpu (AMD EPYC 9R14 96-Core Processor, avx512_bf16), precision fp32, 2 threads`.

    Args:
        device: the torch device (or its name) the run uses.
        precision: "fp32", "bf16" or "fp16", as resolved (never "auto").
        threads: torch's intra-op threads; default: the current `torch.get_num_threads()`.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        # Unavailable: the run itself then fails with its own message; the header must not.
        name = torch.cuda.get_device_name(dev) if torch.cuda.is_available() else "unavailable"
    else:
        name = ", ".join([cpu_name(), *cpu_bf16_units()])
    threads = torch.get_num_threads() if threads is None else threads
    return f"device {dev} ({name}), precision {precision}, {threads} threads"


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
            precision = "fp32"  # bf16 only when asked for: see the module docstring
        if precision == "bf16" and not cpu_supports_bf16():
            raise ValueError("precision: this CPU has no native bf16 (neither AVX512-BF16 nor "
                             "AMX), bf16 would be emulated and slow; use fp32")
        if precision == "fp16":
            raise ValueError("precision: fp16 autocast is for CUDA; use bf16 or fp32 on a CPU")
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision: expected auto, fp32, bf16 or fp16, got {precision!r}")
    return Execution(dev, precision, dtypes[precision], use_scaler=precision == "fp16")
