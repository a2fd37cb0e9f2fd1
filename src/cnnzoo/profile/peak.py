"""This machine's fp32 peak, measured: the best of a large matmul and a large channels_last
3x3 convolution, in GFLOP/s, so that a model's speed can be given as a share of what the CPU
(or GPU) reached in the same run.

Neither kernel alone is the peak on every CPU: on a Zen 3 (AVX2) torch's matmul and oneDNN's
convolution are close, while on a Zen 5 (AVX-512) the channels_last 3x3 convolution reaches
2.4x torch's fp32 matmul. Taking the best of both in the same process, just before the models
are timed, makes "% of peak" a ratio of two numbers measured under the same conditions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from cnnzoo.fileio import cpu_name

# Instruction-set flags that decide which precisions and kernels a CPU runs fast.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni",
             "amx_bf16", "amx_int8", "amx_tile")

SIZES = {
    # matmul n, conv (batch, channels, side): about 17 and 15 GFLOP a call.
    "full": (2048, (8, 256, 56)),
    "small": (256, (1, 32, 16)),  # for tests: milliseconds
}


@dataclass(frozen=True)
class Peak:
    """The measured fp32 peak: `gflops` is the best of the two kernels."""

    gflops: float
    matmul_gflops: float
    conv_gflops: float
    cpu: str
    flags: tuple[str, ...]
    threads: int

    def line(self) -> str:
        flags = ", ".join(self.flags) or "none of " + "/".join(CPU_FLAGS[:3])
        return (f"fp32 peak {self.gflops:.0f} GFLOP/s (matmul {self.matmul_gflops:.0f}, "
                f"channels_last 3x3 conv {self.conv_gflops:.0f}) on {self.cpu} [{flags}], "
                f"{self.threads} threads")


def cpu_flags() -> tuple[str, ...]:
    """The flags of `CPU_FLAGS` that /proc/cpuinfo lists (empty where it is missing)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return tuple(flag for flag in CPU_FLAGS if flag in have)
    except OSError:
        pass
    return ()


def _best_gflops(fn, flop: float, repeats: int, min_time_s: float) -> float:
    fn()  # warm-up: kernel selection, first-touch allocation
    best, spent, n = float("inf"), 0.0, 0
    while n < repeats or spent < min_time_s:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent, n = min(best, took), spent + took, n + 1
    return flop / best / 1e9


def measure_peak(size: str = "full", *, repeats: int = 5, min_time_s: float = 0.5) -> Peak:
    """Time both kernels (best of `repeats`, at least `min_time_s` each) at this process's
    thread count."""
    n, (batch, channels, side) = SIZES[size]
    a, b = torch.randn(n, n), torch.randn(n, n)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).eval()
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        mm = _best_gflops(lambda: torch.mm(a, b), 2.0 * n**3, repeats, min_time_s)
        cv = _best_gflops(lambda: conv(x), 2.0 * batch * channels * channels * 9 * side * side,
                          repeats, min_time_s)
    return Peak(max(mm, cv), mm, cv, cpu_name(), cpu_flags(), torch.get_num_threads())
