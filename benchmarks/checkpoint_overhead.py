"""What writing last.pt in the middle of an epoch costs, as a share of training time.

`cnnzoo.train` trains a zoo model (default resnet18, SGD with momentum, EMA on, so the
state is weights + momentum + EMA) for one epoch of synthetic data, alternately with
mid-epoch writes off (`checkpoint_every=0`) and after every step (`checkpoint_every=1e-9`),
in one process, the rounds interleaved (off, on, off, on, ...) so a slow spell on a shared
machine hits both alike. The epoch's training time (`train_time_s`, which includes the
mid-epoch writes and excludes set-up, validation and the epoch-end write) gives:

- step ms: the epoch time without writes over its steps (median over rounds);
- write ms: each mid-epoch write timed where the loop makes it (state gathered, last.pt
  written to a temp file, fsynced and renamed), median over all writes; and, as a check,
  the extra epoch time of the writing rounds over their writes;
- the overhead at the default interval: write ms / 60 s (one write a minute); and the
  overhead measured with a write after every step, scaled to one write a minute: (extra
  time per write) / 60 s. The goal is < 5%.

Writes go to a temporary directory (`--dir` picks the disk to measure).

    .venv/bin/python benchmarks/checkpoint_overhead.py                  # resnet18, 32x32
    .venv/bin/python benchmarks/checkpoint_overhead.py --model resnet50 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import cnnzoo
from cnnzoo.fileio import cpu_name
from cnnzoo.train import autosave, loop

EVERY_STEP = 1e-9  # seconds: shorter than any step, so a write follows every step


def timed_writes(times: list[float]):
    """`loop._save_mid_epoch` wrapped to append each write's duration (s) to `times`."""
    save = loop._save_mid_epoch

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        save(*args, **kwargs)
        times.append(time.perf_counter() - t0)

    return save, wrapper


def one_epoch(args: argparse.Namespace, out: Path, every: float) -> float:
    """Train one epoch into `out`; its training time in seconds."""
    result = cnnzoo.train(args.model, f"synthetic:3x{args.size}x{args.size}:10:"
                          f"{args.steps * args.batch_size}", out=str(out), epochs=1,
                          batch_size=args.batch_size, lr=0.01, val_size=0, ema_decay=0.999,
                          threads=args.threads, checkpoint_every=every, quiet=True)
    return result.metrics[0]["train_time_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32, help="image side, pixels")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="steps per epoch (one epoch a round)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (off, on)")
    p.add_argument("--threads", type=int, default=None, help="default: torch's")
    p.add_argument("--dir", default=None, help="where to write (default: the temp dir)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    writes: list[float] = []
    original, wrapper = timed_writes(writes)
    off, on = [], []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            off.append(one_epoch(args, Path(tmp) / f"off{r}", 0))
            loop._save_mid_epoch = wrapper
            try:
                on.append(one_epoch(args, Path(tmp) / f"on{r}", EVERY_STEP))
            finally:
                loop._save_mid_epoch = original
        size_mb = (Path(tmp) / "on0" / "last.pt").stat().st_size / 1e6

    per_round = args.steps - 1  # no mid-epoch write after the last step: the epoch ends
    step_ms = 1e3 * statistics.median(off) / args.steps
    write_ms = 1e3 * statistics.median(writes)
    extra_ms = 1e3 * statistics.median(b - a for a, b in zip(off, on, strict=True)) / per_round
    interval_ms = 1e3 * autosave.DEFAULT_EVERY_S
    print(f"cpu: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{args.model}, {args.size}x{args.size}, batch {args.batch_size}, SGD momentum + EMA; "
          f"last.pt {size_mb:.1f} MB; {args.rounds} rounds of {args.steps} steps, "
          f"{len(writes)} mid-epoch writes")
    print(f"step:  {step_ms:8.1f} ms (median epoch without writes / steps)")
    print(f"write: {write_ms:8.1f} ms (median of the timed writes, "
          f"{size_mb / (write_ms / 1e3):.0f} MB/s); extra epoch time per write "
          f"{extra_ms:.1f} ms")
    print(f"overhead, one write every {autosave.DEFAULT_EVERY_S:.0f} s: "
          f"{100 * write_ms / interval_ms:.3f}% (timed write), "
          f"{100 * max(extra_ms, 0.0) / interval_ms:.3f}% (measured with a write after every "
          f"step: {100 * extra_ms / step_ms:.0f}% there, scaled to one a minute); goal < 5%")
    print(f"the default interval stays {autosave.DEFAULT_EVERY_S:.0f} s while a write takes "
          f"< {autosave.MAX_WRITE_SHARE * interval_ms / 1e3:.0f} s "
          f"(about {size_mb / (write_ms / 1e3) * autosave.MAX_WRITE_SHARE * 60 / 1e3:.1f} GB "
          f"of state at this disk's speed)")


if __name__ == "__main__":
    main()
