"""Forward+backward time and saved-for-backward memory of the deformable conv vs `nn.Conv2d`.

Method: one 3x3 layer (default 256 -> 256 channels, padding 1) on a (batch, 256, 28, 28) input,
float32. The variants take turns, step by step: `warmup` untimed forward+backward rounds, then
`reps` timed ones; the statistic is each variant's median wall time per step
(`time.perf_counter`, with `torch.cuda.synchronize` on a GPU). Variants:
  conv2d          nn.Conv2d
  deform_conv2d   the function with random offsets (std 2 px, so the samples really move)
  DeformConv2d    the module (its offset conv included), modulated or not, as trained
Saved memory is the bytes autograd keeps for backward (`saved_tensors_hooks`), each storage
counted once.

Usage: .venv/bin/python benchmarks/deform_conv_speed.py [--threads 1] [--batch 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from cnnzoo.layers import DeformConv2d, deform_conv2d


def median_step_seconds(steps: dict[str, Callable[[], None]], device: torch.device,
                        warmup: int, reps: int) -> dict[str, float]:
    # Round-robin over the variants, so a load change on a shared machine hits them all alike.
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + reps):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def saved_bytes(forward: Callable[[], torch.Tensor]) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    c, s = args.channels, args.size
    x = torch.randn(args.batch, c, s, s, device=device, requires_grad=True)
    conv = nn.Conv2d(c, c, 3, padding=1).to(device)
    offset = (2 * torch.randn(args.batch, 18, s, s, device=device)).requires_grad_()
    plain = DeformConv2d(c, c, 3, padding=1).to(device)
    modulated = DeformConv2d(c, c, 3, padding=1, modulated=True).to(device)

    forwards: dict[str, Callable[[], torch.Tensor]] = {
        "conv2d": lambda: conv(x),
        "deform_conv2d": lambda: deform_conv2d(x, offset, conv.weight, conv.bias, padding=1),
        "DeformConv2d": lambda: plain(x),
        "DeformConv2d(modulated)": lambda: modulated(x),
    }
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"device {device}, threads {torch.get_num_threads()}, float32, input "
          f"{tuple(x.shape)}, 3x3 {c}->{c} pad 1; median of {args.reps} forward+backward "
          f"steps after {args.warmup} warm-up")
    steps = {name: (lambda forward=forward: forward().sum().backward())
             for name, forward in forwards.items()}
    seconds = median_step_seconds(steps, device, args.warmup, args.reps)
    for name, forward in forwards.items():
        mib = saved_bytes(forward) / 2**20
        print(f"{name:<24} {seconds[name] * 1e3:8.2f} ms  "
              f"{seconds[name] / seconds['conv2d']:5.2f}x conv2d  "
              f"saved for backward {mib:6.2f} MiB")

if __name__ == "__main__":
    main()
