"""The shared CIFAR-10 JPEG tarball through the streaming path and the in-memory path, with
the same recipe and seed: do they reach the same validation accuracy (within noise)?

Both paths read the same images: the tarball is extracted once into a temporary folder, whose
sorted listing both use; the last 500 images of each class (5,000) are the validation split.
Streaming: `cnnzoo data pack --holdout-per-class 500`, then `train(data=SHARDS)` (decode and
DecodeResize(32) in `--workers` processes). In memory: `load_image_folder`, the same split,
`train(data=..., val_data=...)`. Recipe for both: SGD (cnnzoo's defaults), `--epochs` epochs,
batch 128, seed 0, and either no augmentation or, with `--augment`, He et al.'s pad-4 crop and
flip (the stream's `--recipe cifar` against the in-memory `--crop-padding 4 --hflip`). The
streamed run's best checkpoint is then evaluated by `cnnzoo eval` on the shard directory
(`evaluate_checkpoint`), which must give the accuracy training validated. The two orders
differ (litdata's shuffle against the in-memory permutation), so the accuracies are two draws:
within noise means within about 2 binomial standard errors of 5,000 images (~1.3 points at
70%).

    .venv/bin/python benchmarks/stream_cifar.py                       # resnet20, 5 epochs
    .venv/bin/python benchmarks/stream_cifar.py --augment --precision bf16 --workers 1
"""

from __future__ import annotations

import argparse
import math
import tarfile
import tempfile
import time
from pathlib import Path

from cnnzoo.data.folder import load_image_folder
from cnnzoo.data.pack import pack_images
from cnnzoo.fileio import cpu_name
from cnnzoo.infer.evaluate import evaluate_checkpoint
from cnnzoo.train import train

TARBALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / \
    "cifar10-train-jpeg.tar.gz"
HOLDOUT = 500  # per class


def in_memory_split(folder: Path):
    ds = load_image_folder(folder)
    labels = ds.labels.tolist()
    last = {}
    for i, y in enumerate(labels):  # sorted listing: a class's images are consecutive
        last.setdefault(y, []).append(i)
    val = sorted(i for idx in last.values() for i in idx[-HOLDOUT:])
    held = set(val)
    return ds.subset([i for i in range(len(ds)) if i not in held]), ds.subset(val)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tarball", default=str(TARBALL))
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--augment", action="store_true",
                   help="pad-4 crop + flip on both paths (default: none)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args()
    common = {"epochs": args.epochs, "batch_size": 128, "seed": 0, "threads": args.threads,
              "precision": args.precision, "quiet": True}
    stream_aug = {"recipe": "cifar"} if args.augment else {}
    memory_aug = {"crop_padding": 4, "hflip": True} if args.augment else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cifar"
        with tarfile.open(args.tarball) as tar:
            tar.extractall(folder, filter="data")
        t0 = time.perf_counter()
        pack_images(folder, Path(tmp) / "shards", holdout_per_class=HOLDOUT)
        print(f"packed in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        streamed = train(args.model, str(Path(tmp) / "shards"), workers=args.workers,
                         image_size=32, out=str(Path(tmp) / "run"), **stream_aug, **common)
        t_stream = time.perf_counter() - t0
        evaluated = evaluate_checkpoint(Path(tmp) / "run" / "best.pt", str(Path(tmp) / "shards"),
                                        split="val")
        train_ds, val_ds = in_memory_split(folder)
        t0 = time.perf_counter()
        memory = train(args.model, train_ds, val_data=val_ds, **memory_aug, **common)
        t_memory = time.perf_counter() - t0
    a, b = streamed.best_val_acc, memory.best_val_acc
    se = math.sqrt(2 * ((a + b) / 2) * (1 - (a + b) / 2) / (HOLDOUT * 10))
    print(f"{args.model}, {args.epochs} epochs, batch 128, seed 0, {args.precision}, "
          f"{'pad-4 crop + flip' if args.augment else 'no augmentation'}, "
          f"val = last {HOLDOUT}/class; CPU {cpu_name()}, {args.workers} worker(s)")
    print(f"streaming: best val acc {100 * a:.2f}%  ({t_stream:.0f} s); cnnzoo eval of its "
          f"best.pt on the shards: {100 * evaluated.top1:.2f}%")
    print(f"in memory: best val acc {100 * b:.2f}%  ({t_memory:.0f} s)")
    print(f"difference {100 * (a - b):+.2f} points; 2 standard errors of the difference "
          f"{200 * se:.2f} points: {'within' if abs(a - b) <= 2 * se else 'OUTSIDE'} noise")


if __name__ == "__main__":
    main()
