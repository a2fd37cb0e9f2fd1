"""What the CPU can run natively, read from its flags and from torch's oneDNN probes.

Kept at the bottom of the package because both `train` (the `--precision bf16` check and the
run header) and `infer` (the `bf16` deployment backend) need it, and the two never import each
other. bf16 is "native" only where the CPU reports AVX512-BF16 or AMX-BF16 in its flags *and*
oneDNN says it can use them: elsewhere oneDNN emulates bf16, 10-400x slower than fp32 on
AVX2-only CPUs, so it is never assumed.
"""

from __future__ import annotations

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags from the first `flags` line of /proc/cpuinfo; None where that
    file is unreadable (not Linux), so that callers fall back to torch's own CPUID probes."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_has_amx() -> bool:
    """AMX tile units (Intel Sapphire Rapids and later): native fast bf16 matmul/conv."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def cpu_supports_bf16() -> bool:
    """oneDNN can run bf16 kernels natively (AVX512-BF16 or AMX) rather than emulate them."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe and probe())


def native_bf16(flags: set[str] | None = None) -> tuple[bool, str]:
    """(whether bf16 runs natively here, one line saying why).

    Args:
        flags: the CPU flags; default: `cpu_flags()`. None there (no /proc/cpuinfo): torch's
            CPUID-based probe alone decides.
    """
    flags = cpu_flags() if flags is None else flags
    units = None if flags is None else [f for f in BF16_FLAGS if f in flags]
    onednn = cpu_supports_bf16()
    if units == []:
        return False, ("this CPU has no native bf16 (neither avx512_bf16 nor amx_bf16 in its "
                       "flags): bf16 would be emulated, 10-400x slower than fp32 on AVX2-only "
                       "CPUs; use fp32")
    if not onednn:
        return False, ("torch's oneDNN cannot run bf16 natively on this CPU (flags: "
                       f"{', '.join(units) if units else 'unreadable'}): bf16 would be "
                       "emulated, far slower than fp32; use fp32")
    return True, f"native bf16 ({', '.join(units) if units else 'oneDNN probe'})"
