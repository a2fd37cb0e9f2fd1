"""Training-step speed of the speedrun's compact nets: stem order, depth, threads, precision.

One SGD step (forward, label-smoothed cross-entropy, backward, Nesterov SGD with weight
decay) on a fixed random batch of 1x28x28 images, channels_last, fp32, for each variant in
one process. Rounds are interleaved (A, B, C, A, B, C, ...) and each variant keeps its best
round, so a slow spell on the shared machine hits every variant alike; the ratio column is
against the first variant, measured in the same process.

What it answers (docs/speedrun.md, "Where the time goes"):
- `pool_first` (conv, max-pool, BN, ReLU) against the ResNet order (conv, BN, ReLU,
  max-pool): the 28x28 conv output is the only full-size map in the net, and BN, ReLU and
  their backward passes over it are memory-bound, so pooling first saves more than its MACs
  suggest (the MACs are identical).
- compact_resnet10 (one more 4x4 block) against compact_resnet8.

    .venv/bin/python benchmarks/compact_step_speed.py                 # 1 thread, batch 128
    .venv/bin/python benchmarks/compact_step_speed.py --threads 2 --batch-size 256
    .venv/bin/python benchmarks/compact_step_speed.py --profile   # where a step's time goes
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

import cnnzoo

VARIANTS = {  # name: (registered model, options)
    "compact_resnet8": ("compact_resnet8", {}),
    "compact_resnet8 pool_first": ("compact_resnet8", {"pool_first": True}),
    "compact_resnet10": ("compact_resnet10", {}),
    "compact_resnet10 pool_first": ("compact_resnet10", {"pool_first": True}),
}


def make_step(model_name: str, options: dict, batch_size: int):
    torch.manual_seed(0)
    model = cnnzoo.create_model(model_name, num_classes=10, in_chans=1, **options)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    x = torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def print_profile(name: str, step) -> None:
    """The 12 operators with the most self CPU time over 20 steps (after 5 warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            step()
    print(f"{name}, {torch.get_num_threads()} thread(s):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--profile", action="store_true",
                   help="instead: torch.profiler's operator table for 20 steps of each "
                        "compact_resnet8 stem order")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        for name in ("compact_resnet8", "compact_resnet8 pool_first"):
            print_profile(name, make_step(*VARIANTS[name], args.batch_size))
        return

    steps = {name: make_step(m, o, args.batch_size) for name, (m, o) in VARIANTS.items()}
    for step in steps.values():  # warm-up: oneDNN primitive creation, allocator
        for _ in range(5):
            step()
    best = dict.fromkeys(steps, 0.0)
    for _ in range(args.rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            best[name] = max(best[name], args.steps * args.batch_size / (time.perf_counter() - t))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), fp32, "
          f"channels_last, batch {args.batch_size}; {os.cpu_count()} logical CPUs; "
          f"load average {os.getloadavg()[0]:.2f}; best of {args.rounds} rounds of "
          f"{args.steps} steps")
    base = next(iter(best.values()))
    print("| variant | training images/s | vs compact_resnet8 |")
    print("|---|---:|---:|")
    for name, speed in best.items():
        print(f"| {name} | {speed:,.0f} | {speed / base:.2f}x |")


if __name__ == "__main__":
    main()
