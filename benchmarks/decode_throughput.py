"""Decode + augment throughput of the ImageNet recipe (cnnzoo.data.recipe) in DataLoader
workers, against a plain torch DataLoader over an ImageFolder with Pillow and the equivalent
transforms; the cost of TrivialAugment Wide (preset "imagenet-ta"); then ResNet-50's training
step on this CPU, to say whether the data side keeps up.

Data: `--n` JPEGs of 400x350 at quality 90 (ImageNet's typical size), upsampled noise plus
grain so that they compress like photographs (~100 KB each), written as an ImageFolder of 10
classes in a temporary folder.

Pipelines, same batch size, same worker counts (1 and 2), DataLoader defaults otherwise
(fork, prefetch 2, one torch thread per worker):
- streaming: the ImageFolder packed by `cnnzoo data pack` (cnnzoo.data.pack), read by the
  StreamLoader of `cnnzoo train --data SHARDS/ --recipe imagenet` (litdata, shuffled, the
  recipe in its worker processes), uint8 batches: the pipeline as training uses it.
- recipe: a Dataset over the encoded bytes in memory (the stand-in for the streaming shard
  reader: `RecipeDataset` is the only piece to swap), `make_transform("imagenet", train=True)`
  with a per-sample numpy Generator seeded by (seed, index); uint8 (3, 224, 224) batches.
  Their conversion to float and normalisation happen on the training device (DESIGN.md), so
  they are not in the timed loop; the script prints what that step costs per image on this
  CPU, so the reader can charge it to the data side for CPU-only training.
- recipe, Pillow decode: the same, with the fast JPEG decoder switched off in the workers
  (shows how much of the gain is simplejpeg and how much the uint8 batch).
- plain: torchvision's recipe rewritten with Pillow (torchvision cannot be installed next to
  this torch): open the file, convert("RGB"), RandomResizedCrop (the same box law), bilinear
  resize, flip, ToTensor (float / 255), Normalize, per sample; float32 batches.

Method: one full pass over the `--n` images per configuration, timed from iter() to the last
batch (worker start-up included: forked workers start in ~0.1 s); images/s per core = images/s
divided by the number of workers. The main process only collects batches. Figures depend on
the load of the machine: run it alone.

ResNet-50: batch 32 at 224x224, SGD step (forward, cross-entropy, backward, step), `--steps`
timed steps after one warm-up, median, torch's default threads; fp32, and bf16 autocast where
the CPU runs bf16 natively (cnnzoo.cpuinfo). The ratio data time / step time is the fraction of
one core the recipe needs to keep one training process fed at batch 32.

    flock -x /tmp/cnnzoo-quiet.lock .venv/bin/python benchmarks/decode_throughput.py
        [--n 2000] [--batch-size 64] [--steps 3] [--no-train]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnnzoo.cpuinfo import cpu_flags, native_bf16
from cnnzoo.data import normalize, recipe
from cnnzoo.data.pack import pack_images
from cnnzoo.data.recipe import IMAGENET_MEAN, IMAGENET_STD, make_transform
from cnnzoo.data.shards import open_shards
from cnnzoo.data.stream import Recipe, StreamLoader
from cnnzoo.fileio import cpu_name
from cnnzoo.models import create_model

SIZE, SEED, CLASSES = 224, 0, 10


def photo_like(rng: np.random.Generator, h: int = 350, w: int = 400) -> bytes:
    """A JPEG at quality 90 that compresses like a photograph: smooth colour fields (upsampled
    noise) with grain."""
    small = rng.integers(0, 256, (h // 12 + 1, w // 12 + 1, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, 14, (h, w, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8)).save(buf, "JPEG",
                                                                         quality=90)
    return buf.getvalue()


def write_image_folder(root: Path, n: int) -> list[tuple[Path, int]]:
    rng = np.random.default_rng(SEED)
    files = []
    for i in range(n):
        label = i % CLASSES
        path = root / f"class{label:02d}" / f"img{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo_like(rng))
        files.append((path, label))
    return files


class RecipeDataset(Dataset):
    """Encoded images in memory -> the recipe's uint8 tensor. The streaming shard reader
    replaces this class: it yields the same (uint8 (3, 224, 224), label) pairs."""

    def __init__(self, samples: list[tuple[bytes, int]], transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        data, label = self.samples[i]
        rng = np.random.default_rng((SEED, i))
        return self.transform(data, f"sample {i}", rng), label


class PlainImageFolder(Dataset):
    """What a torchvision user writes: ImageFolder + RandomResizedCrop(224) +
    RandomHorizontalFlip + ToTensor + Normalize, here in Pillow and torch."""

    def __init__(self, files: list[tuple[Path, int]]) -> None:
        self.files = files
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        self.rng = np.random.default_rng(SEED)  # forked workers repeat it: fine for timing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path, label = self.files[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")  # torchvision's pil_loader
        top, left, h, w = recipe.random_resized_crop_box(img.height, img.width, self.rng)
        img = img.crop((left, top, left + w, top + h)).resize((SIZE, SIZE), Image.BILINEAR)
        if self.rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)  # ToTensor
        return (x - self.mean) / self.std, label


def _pillow_only(_: int) -> None:
    recipe.simplejpeg = None


def images_per_s(dataset: Dataset, workers: int, batch_size: int, worker_init_fn=None) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        worker_init_fn=worker_init_fn,
                        generator=torch.Generator().manual_seed(SEED))
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += x.shape[0]
    return n / (time.perf_counter() - start)


class Streamed:
    """The packed split as a case of the table: `images_per_s` iterates a StreamLoader."""

    def __init__(self, root: Path, batch_size: int) -> None:
        self.split, self.batch_size = open_shards(root).split("train"), batch_size

    def rate(self, workers: int) -> float:
        loader = StreamLoader(self.split, self.batch_size, transform=Recipe("imagenet", True),
                              shuffle=True, seed=SEED, num_workers=workers,
                              normalize_batches=False)
        start, n = time.perf_counter(), 0
        for x, _ in loader:
            n += x.shape[0]
        return n / (time.perf_counter() - start)


def per_image_ms(fn, images: list, repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for img in images:
            fn(img)
    return (time.perf_counter() - start) / (repeats * len(images)) * 1e3


def resnet50_step_s(steps: int, bf16: bool) -> float:
    torch.manual_seed(SEED)
    model = create_model("resnet50", num_classes=1000)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 3, SIZE, SIZE), torch.randint(0, 1000, (32,))
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="generated JPEGs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=3, help="timed ResNet-50 steps")
    parser.add_argument("--no-train", action="store_true", help="skip ResNet-50")
    args = parser.parse_args()

    flags = cpu_flags() or set()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    print(f"CPU: {cpu_name()}; {os.cpu_count()} logical CPUs; flags: "
          f"{' '.join(f for f in wanted if f in flags) or '(unreadable)'}")
    print(f"torch {torch.__version__}; Pillow {Image.__version__}; fast JPEG decoder: "
          f"{recipe.fast_decoder() or 'none (Pillow)'}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at start")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the consumer must not compete with the workers
    with tempfile.TemporaryDirectory() as tmp:
        files = write_image_folder(Path(tmp) / "images", args.n)
        samples = [(p.read_bytes(), label) for p, label in files]
        kb = np.mean([len(d) for d, _ in samples]) / 1e3
        print(f"\n{args.n} JPEGs 400x350 q90, {kb:.0f} KB mean; batch {args.batch_size}; "
              f"one timed pass each\n")

        some = [d for d, _ in samples[:100]]
        pil_ms = per_image_ms(lambda d: recipe.decode_pil(d, "x"), some, 3)
        fast_ms = per_image_ms(lambda d: recipe.decode(d, "x"), some, 3)
        print(f"decode only, 1 core: Pillow {pil_ms:.2f} ms/image, recipe.decode "
              f"{fast_ms:.2f} ms/image ({pil_ms / fast_ms:.2f}x)")
        train = make_transform("imagenet", train=True)
        rng = np.random.default_rng(SEED)
        recipe_ms = per_image_ms(lambda d: train(d, "x", rng), some, 3)
        with_ta = make_transform("imagenet-ta", train=True)
        ta_ms = per_image_ms(lambda d: with_ta(d, "x", rng), some, 3)
        print(f"imagenet recipe (decode + crop + resize + flip), 1 core: {recipe_ms:.2f} "
              f"ms/image; imagenet-ta (+ TrivialAugment Wide): {ta_ms:.2f} ms/image "
              f"(+{ta_ms / recipe_ms - 1:.0%})")
        batch = torch.zeros(args.batch_size, 3, SIZE, SIZE, dtype=torch.uint8)
        norm_ms = per_image_ms(lambda b: normalize(b.float(), IMAGENET_MEAN, IMAGENET_STD),
                               [batch] * 5) / args.batch_size
        print(f"float conversion + normalisation of a uint8 batch of {args.batch_size} on this "
              f"CPU, 1 thread (the device-side step, not in the timings below): {norm_ms:.3f} "
              f"ms/image\n")

        t0 = time.perf_counter()
        shard_root = Path(tmp) / "shards"
        pack_images(Path(tmp) / "images", shard_root)
        print(f"packed into shards in {time.perf_counter() - t0:.1f} s (each image "
              f"decoded once to check it)\n")
        cases = [
            ("streaming (shards, recipe)", Streamed(shard_root, args.batch_size), None),
            ("recipe (simplejpeg)" if recipe.fast_decoder() else "recipe (Pillow)",
             RecipeDataset(samples, train), None),
            ("recipe, Pillow decode", RecipeDataset(samples, train), _pillow_only),
            ("plain ImageFolder + Pillow", PlainImageFolder(files), None),
        ]
        if recipe.fast_decoder() is None:
            cases.pop(2)
        rates: dict[tuple[str, int], float] = {}
        print(f"{'pipeline':28} {'workers':>7} {'images/s':>9} {'per core':>9}")
        for name, ds, init in cases:
            for w in args.workers:
                r = (ds.rate(w) if isinstance(ds, Streamed) else
                     images_per_s(ds, w, args.batch_size, worker_init_fn=init))
                rates[name, w] = r
                print(f"{name:28} {w:7d} {r:9.1f} {r / w:9.1f}")
        plain = cases[-1][0]
        print()
        for name, *_ in cases[:-1]:
            for w in args.workers:
                print(f"{name} / plain, {w} worker{'s' * (w > 1)}: "
                      f"{rates[name, w] / rates[plain, w]:.2f}x per core (goal >= 1.5x)")
    torch.set_num_threads(threads)

    if args.no_train:
        return
    best = max(args.workers)
    per_core = rates[cases[0][0], best] / best
    data_s = 32 / per_core
    print(f"\nResNet-50 training step, batch 32 at {SIZE}x{SIZE}, {threads} threads, median of "
          f"{args.steps} after 1 warm-up; data time = 32 images on one core of the recipe "
          f"({data_s * 1e3:.0f} ms)")
    native, why = native_bf16(flags if flags else None)
    for bf16 in (False, True):
        if bf16 and not native:
            print(f"bf16: skipped ({why})")
            continue
        step = resnet50_step_s(args.steps, bf16)
        print(f"{'bf16 autocast' if bf16 else 'fp32':13} step {step:6.2f} s; data/step "
              f"{data_s / step:.3f}: one core prepares a batch in {data_s / step:.1%} of a step")


if __name__ == "__main__":
    main()
