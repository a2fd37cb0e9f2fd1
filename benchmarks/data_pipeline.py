"""Images/s of the input pipeline alone: cnnzoo's batched BatchLoader vs a per-sample
torch.utils.data.DataLoader with the same transforms written per image in plain torch.

Both produce normalised float32 batches of 256 with random crop (zero padding), horizontal
flip and random erasing (p=0.5), from the same uint8 tensor in memory; no model runs. The
per-sample side is the usual recipe (a Dataset whose __getitem__ transforms one image, the
default collate), timed with num_workers=0 and with one worker per core.

On a busy machine (load above the core count) OpenMP's default spin-waiting makes every
multi-threaded tensor op wait for a descheduled worker thread; run with --threads 1 or
OMP_WAIT_POLICY=PASSIVE to see the pipeline rather than the scheduler.

Method: one warm-up pass of `--batches` batches, then `--repeats` timed passes of the same
length; the statistic is the median images/s. Same process, same threads.

    .venv/bin/python benchmarks/data_pipeline.py [--batches 60] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cnnzoo.data import Augment, BatchLoader, ImageDataset, load_dataset, make_synthetic
from cnnzoo.fileio import cpu_name


class PerSample(Dataset):
    """The per-image baseline: crop, flip, normalise and erase one (C, H, W) image at a time,
    as torchvision's RandomCrop/RandomHorizontalFlip/Normalize/RandomErasing would."""

    def __init__(self, ds: ImageDataset, padding: int, erasing: float) -> None:
        self.images, self.labels = ds.images, ds.labels
        self.mean = torch.tensor(ds.mean).view(-1, 1, 1)
        self.std = torch.tensor(ds.std).view(-1, 1, 1)
        self.padding, self.erasing = padding, erasing

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float() / 255
        _, h, w = x.shape
        p = self.padding
        x = F.pad(x, (p, p, p, p))
        oy, ox = torch.randint(0, 2 * p + 1, (2,)).tolist()
        x = x[:, oy:oy + h, ox:ox + w]
        if torch.rand(1).item() < 0.5:
            x = x.flip(-1)
        x = (x - self.mean) / self.std
        if torch.rand(1).item() < self.erasing:  # RandomErasing: up to 10 tries for a box
            for _ in range(10):
                area = h * w * torch.empty(1).uniform_(0.02, 0.4).item()
                ratio = math.exp(torch.empty(1).uniform_(math.log(0.3), math.log(1 / 0.3)).item())
                eh, ew = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
                if eh < h and ew < w:
                    y0 = torch.randint(0, h - eh + 1, (1,)).item()
                    x0 = torch.randint(0, w - ew + 1, (1,)).item()
                    x[:, y0:y0 + eh, x0:x0 + ew] = 0
                    break
        return x, self.labels[i]


def rate(make_iter, batches: int, repeats: int, batch_size: int) -> float:
    """Median images/s over `repeats` passes of `batches` batches, after one warm-up pass."""
    rates = []
    for r in range(repeats + 1):
        it = make_iter()
        start = time.perf_counter()
        n = 0
        for x, _ in itertools.islice(it, batches):
            n += x.shape[0]
        elapsed = time.perf_counter() - start
        if r:
            rates.append(n / elapsed)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=60, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    print(f"CPU: {cpu_name()}; {os.cpu_count()} logical CPUs, torch threads "
          f"{torch.get_num_threads()}; torch {torch.__version__}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at start; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"batch {args.batch_size}, {args.batches} batches per pass, median of "
          f"{args.repeats} passes after 1 warm-up; images/s of the pipeline alone\n")
    try:
        fashion = load_dataset("fashion-mnist")
        fashion_name = "Fashion-MNIST 1x28x28 (real files)"
    except FileNotFoundError:
        fashion = make_synthetic(60000, 10, (1, 28, 28))
        fashion_name = "Fashion-MNIST-like 1x28x28 (synthetic: data set not installed)"
    cases = [
        (fashion_name, fashion, 2),
        ("CIFAR-like 3x32x32 (synthetic, 50,000)", make_synthetic(50000, 10, (3, 32, 32)), 4),
    ]
    b, rows = args.batch_size, []
    for name, ds, pad in cases:
        aug = Augment(crop_padding=pad, hflip=True, random_erasing=0.5)
        epoch = itertools.count()

        def batched(ds=ds, aug=aug, epoch=epoch):
            loader = BatchLoader(ds, b, shuffle=True, drop_last=True, augment=aug)
            loader.set_epoch(next(epoch))
            return iter(loader)

        ours = rate(batched, args.batches, args.repeats, b)
        per_sample = PerSample(ds, pad, 0.5)
        base0 = rate(lambda ps=per_sample: iter(DataLoader(ps, b, shuffle=True, drop_last=True)),
                     args.batches, args.repeats, b)
        pool = DataLoader(per_sample, b, shuffle=True, drop_last=True, num_workers=workers,
                          persistent_workers=True)
        baseN = rate(lambda pool=pool: iter(pool), args.batches, args.repeats, b)
        del pool
        rows.append((name, f"crop pad {pad} + flip + erasing 0.5", ours, base0, baseN))
    print(f"{'data':42} {'BatchLoader':>12} {'DataLoader w=0':>15} "
          f"{f'DataLoader w={workers}':>15} {'ratio w=0':>10} {f'ratio w={workers}':>10}")
    for name, _, ours, base0, baseN in rows:
        print(f"{name:42} {ours:12,.0f} {base0:15,.0f} {baseN:15,.0f} "
              f"{ours / base0:9.1f}x {ours / baseN:9.1f}x")


if __name__ == "__main__":
    main()
