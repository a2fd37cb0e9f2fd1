"""What int8 (and bf16) deployment costs in top-1, on a CIFAR-10 network trained here.

Issue 12, goal 3: int8's accuracy cost on a trained network with a real validation split is at
most 0.5 points of top-1. Method:

- data: the 50,000 CIFAR-10 training images of ../shared/datasets/cifar10-train-jpeg.tar.gz
  (JPEG q75, so accuracies sit below the papers' PNG-quality figures), read straight from the
  tarball (decoded once into a uint8 cache in the user cache folder, nothing extracted into
  the repository). Validation: the last 500 images of each class in file-name order (5,000),
  never trained, calibrated or tuned on; training: the other 45,000.
- network: `--model` (default resnet20, He et al. 2016, 0.27 M parameters) trained by
  cnnzoo's own trainer for `--epochs` (default 5: about 8 minutes on 2 Zen 5 cores, from the
  ~500 training img/s of resnet20 in the smoke run below, plus validation each epoch) with
  SGD + cosine, crop (padding 4) + flip; or
  `--checkpoint` reuses a run's last.pt / best.pt (one written by an earlier call of this
  script with `--out` is reused automatically).
- int8: `deploy(model, "int8")`, ORT static QDQ, calibrated on `--calibration-images`
  training images (an equal share per class, seeded), which cannot overlap the validation
  split; bf16 (autocast on the folded model) only where the CPU runs bf16 natively.
- figures: top-1 on the validation split of fp32 eager, int8 and bf16, the differences in
  points, and the top-1 agreement with fp32 (the share of validation images whose predicted
  class is unchanged).

    .venv/bin/python benchmarks/int8_accuracy.py                       # ~8 min on 2 cores
    .venv/bin/python benchmarks/int8_accuracy.py --epochs 1 --train-images 2000 \\
        --val-per-class 50 --calibration-images 128                     # a smoke run

Prints the CPU (model, family, flags) and the thread count with the figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import cnnzoo
from cnnzoo.cpuinfo import native_bf16
from cnnzoo.data.dataset import ImageDataset, channel_stats, stratified_indices
from cnnzoo.data.folder import load_image_folder
from cnnzoo.infer import backends
from cnnzoo.infer.backends import deploy
from cnnzoo.infer.loading import load_model
from cnnzoo.profile.peak import cpu_flags
from cnnzoo.train.device import describe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"
GOAL_POINTS = 0.5  # issue 12, goal 3: int8 costs at most this many points of top-1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="CIFAR-10 ImageFolder tarball")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--small-input", action="store_true",
                    help="build an ImageNet-shaped model (efficientnet_b0, resnet50...) with "
                         "small_input=True, its CIFAR stem")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--val-per-class", type=int, default=500,
                    help="the last N images of each class are the validation split")
    ap.add_argument("--train-images", type=int, default=None,
                    help="train on this many training images only (smoke runs)")
    ap.add_argument("--calibration-images", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="reuse this trained checkpoint")
    ap.add_argument("--out", default=None,
                    help="run directory for training (default: a temp dir, removed after)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe("cpu", "fp32", args.threads) + f"; {_cpu_family()}; flags "
          f"{', '.join(cpu_flags()) or 'none'}", flush=True)

    start = time.perf_counter()
    data = load_image_folder(args.data, "train", name="cifar10-jpeg")
    train, val = split_last_per_class(data, args.val_per_class)
    if args.train_images is not None:
        train = train.subset(stratified_indices(train.labels, args.train_images, seed=0,
                                                num_classes=train.num_classes))
    print(f"data: {len(train)} training images, validation = the last {args.val_per_class} "
          f"per class ({len(val)}), read in {time.perf_counter() - start:.0f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        out = Path(args.out) if args.out else Path(tmp) / "run"
        if checkpoint is None and (out / "last.pt").exists():
            checkpoint = str(out / "last.pt")
        if checkpoint is None:
            t0 = time.perf_counter()
            options = {"model_options": {"small_input": True}} if args.small_input else {}
            cnnzoo.train(args.model, train, val_data=val, epochs=args.epochs, **options,
                         batch_size=args.batch_size, lr=args.lr, weight_decay=5e-4,
                         crop_padding=4, hflip=True, threads=args.threads, out=str(out),
                         quiet=True)
            checkpoint = str(out / "last.pt")
            print(f"trained {args.model} for {args.epochs} epochs in "
                  f"{time.perf_counter() - t0:.0f} s -> {checkpoint}", flush=True)
        else:
            print(f"reusing {checkpoint} (not trained again)", flush=True)
        model, info = load_model(checkpoint, weights="model")
    report(model, info.preprocess, train, val, args.calibration_images, args.threads)
    print(f"{time.perf_counter() - start:.0f} s in all")


def split_last_per_class(data: ImageDataset, per_class: int) -> tuple[ImageDataset, ImageDataset]:
    """(train, validation): validation holds the last `per_class` images of each class in the
    data set's (file-name) order; both normalised with the training part's statistics."""
    val_mask = torch.zeros(len(data), dtype=torch.bool)
    for cls in range(data.num_classes):
        members = torch.nonzero(data.labels == cls).flatten()
        if len(members) <= per_class:
            raise ValueError(f"--val-per-class {per_class}: class {data.classes[cls]!r} has "
                             f"only {len(members)} images")
        val_mask[members[-per_class:]] = True
    train = data.subset(torch.nonzero(~val_mask).flatten())
    val = data.subset(torch.nonzero(val_mask).flatten())
    train.mean, train.std = channel_stats(train.images)
    val.mean, val.std = train.mean, train.std
    return train, val


def report(model, preprocess, train: ImageDataset, val: ImageDataset, calibration_images: int,
           threads: int) -> None:
    # Measure, do not refuse: the bars `deploy` holds a backend to are lifted here, and a
    # backend that would not pass them is named in the notes instead.
    bars = {"int8": backends.INT8_AGREEMENT, "bf16": backends.BF16_AGREEMENT,
            "bf16_rtol": backends.BF16_RTOL}
    backends.INT8_AGREEMENT = backends.BF16_AGREEMENT = 0.0
    backends.BF16_RTOL = float("inf")
    pick = stratified_indices(train.labels, calibration_images, seed=1,
                              num_classes=train.num_classes)
    calibration = [preprocess.apply(train.images[pick[i:i + 64]], "cpu")
                   for i in range(0, len(pick), 64)]
    batches = [preprocess.apply(val.images[i:i + 256], "cpu") for i in range(0, len(val), 256)]
    labels = val.labels

    def logits(fn) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([fn(x).float() for x in batches])

    fp32 = logits(model.eval())
    fp32_top1 = _top1(fp32, labels)
    rows = [("fp32 eager", fp32_top1, None, None, "")]
    t0 = time.perf_counter()
    int8 = deploy(model, "int8", calibration[0], calibration=calibration, threads=threads)
    build = time.perf_counter() - t0
    rows.append(("int8 (ORT QDQ)", *_compare(logits(int8), fp32, labels, fp32_top1),
                 f"calibrated on {calibration_images} training images, built in {build:.0f} s"
                 + _refused(int8, bars["int8"])))
    ok, why = native_bf16()
    if ok:
        bf16 = deploy(model, "bf16", calibration[0], calibration=calibration, threads=threads)
        rows.append(("bf16 autocast", *_compare(logits(bf16), fp32, labels, fp32_top1),
                     why + _refused(bf16, bars["bf16"], bars["bf16_rtol"])))
    else:
        rows.append(("bf16", None, None, None, f"not measured: {why}"))
    print(f"\nvalidation: {len(val)} images (the last {len(val) // val.num_classes} per class), "
          f"{threads} threads")
    print(f"{'backend':<16}{'top-1 %':>9}{'change (points)':>17}{'agreement %':>13}  notes")
    for name, top1, change, agree, note in rows:
        cells = [f"{v:>{w}.2f}" if v is not None else f"{'--':>{w}}"
                 for v, w in ((None if top1 is None else 100 * top1, 9), (change, 17),
                              (None if agree is None else 100 * agree, 13))]
        print(f"{name:<16}{''.join(cells)}  {note}")
    cost = -rows[1][2] + 0.0  # + 0.0: no "-0.00"
    print(f"\ngoal 3: int8 costs {cost:.2f} points of top-1 (negative: a gain; goal <= "
          f"{GOAL_POINTS}): {'met' if cost <= GOAL_POINTS else 'NOT met'}")


def _refused(built, bar: float, rtol: float = float("inf")) -> str:
    if built.top1_agreement >= bar and built.max_rel_diff <= rtol:
        return ""
    return (f"; deploy() would refuse it (agreement on the calibration images "
            f"{built.top1_agreement:.0%}, max |dlogit| {built.max_rel_diff:.1e} x max |logit|)")


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def _compare(got: torch.Tensor, fp32: torch.Tensor, labels: torch.Tensor,
             fp32_top1: float) -> tuple[float, float, float]:
    """(top-1, its change from fp32 in points, top-1 agreement with fp32)."""
    top1 = _top1(got, labels)
    agree = float((got.argmax(1) == fp32.argmax(1)).float().mean())
    return top1, 100 * (top1 - fp32_top1), agree


def _cpu_family() -> str:
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return "family unknown"
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


if __name__ == "__main__":
    main()
