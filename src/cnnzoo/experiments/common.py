"""What the experiments share: their data splits, a training call, accuracy and statistics.

Honest evaluation: curves and any choice an experiment makes use the validation split (held
out of the training split, stratified); the test split is read for the final numbers only,
after training, never to pick anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.data import ImageDataset, load_dataset, normalize, train_val_split
from cnnzoo.data.dataset import channel_stats, stratified_indices, stratified_subset
from cnnzoo.experiments.base import Context
from cnnzoo.train import train


@dataclass
class Splits:
    """train / val (held out of the training split) / test, all from one data set."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset

    @property
    def in_chans(self) -> int:
        return self.train.in_chans

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def image_size(self) -> tuple[int, int]:
        return self.train.image_size


def load_splits(ctx: Context, *, train_size: int, val_size: int, test_size: int | None = None,
                image_size: int | None = None) -> Splits:
    """The experiment's data: `train_size` training and `val_size` validation images, both
    stratified subsets of the training split, and `test_size` test images (all when None), a
    stratified subset too (`stratified_subset`: an equal share per class; a split read from
    class folders is sorted by class, so its first images would miss classes). Deterministic
    in `ctx.seed`.
    """
    full = load_dataset(ctx.data, "train", data_dir=ctx.data_dir, image_size=image_size)
    try:
        test = load_dataset(ctx.data, "test", data_dir=ctx.data_dir, image_size=image_size)
        test_source = "test split"
    except (ValueError, FileNotFoundError) as err:
        if "test" not in str(err):
            raise
        # A folder or tarball of training images only (e.g. the CIFAR-10 JPEG training split):
        # the test images are held out of it too, stratified, before anything else is drawn.
        n_test = test_size or max(len(full) // 10, 1)
        full, test = train_val_split(full, n_test, seed=ctx.seed + 2)
        test_source = f"{n_test} images held out of the training split (no test split)"
    if train_size + val_size > len(full):
        raise ValueError(f"{ctx.data}: train_size + val_size = {train_size + val_size} exceeds "
                         f"the {len(full)} training images")
    rest, val = train_val_split(full, val_size, seed=ctx.seed)
    train = rest
    if train_size < len(rest):
        _, train = train_val_split(rest, train_size, seed=ctx.seed + 1)
        # train_val_split keeps the training part's statistics on both parts; recompute ours
        # from the subset actually trained on.
        train = _restat(train)
        val = ImageDataset(val.images, val.labels, val.classes, train.mean, train.std, val.name)
    if test_size is not None and test_size < len(test):
        test = stratified_subset(test, test_size, seed=ctx.seed + 3)
    test = ImageDataset(test.images, test.labels, test.classes, train.mean, train.std, test.name)
    ctx.log(f"data {ctx.data}: {len(train)} train, {len(val)} val, {len(test)} test, "
            f"{train.in_chans}x{train.image_size[0]}x{train.image_size[1]}, "
            f"{train.num_classes} classes; test: {test_source}")
    return Splits(train, val, test)


def _restat(ds: ImageDataset) -> ImageDataset:
    mean, std = channel_stats(ds.images)
    return ImageDataset(ds.images, ds.labels, ds.classes, mean, std, ds.name)


def fit(ctx: Context, model: nn.Module, splits: Splits, *, epochs: int, seed: int | None = None,
        **options: Any) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train `model` with `cnnzoo.train` on splits.train, validating on splits.val each epoch.

    Returns the trained model (eval mode) and the per-epoch metric rows (train_loss, train_acc,
    val_loss, val_acc, lr, epoch_time_s, ...). Options are TrainConfig fields (lr, batch_size,
    schedule, weight_decay, crop_padding, hflip, ...); nothing is written to disk. The
    precision is the experiment's (`ctx.precision`, `cnnzoo experiment --precision`), never
    an option: an experiment that fixed its own would ignore the flag without a word.
    """
    if "precision" in options:
        raise ValueError("fit: precision comes from the experiment's context (ctx.precision, "
                         "--precision), not from an option")
    result = train(model, splits.train, val_data=splits.val, epochs=epochs,
                   seed=ctx.seed if seed is None else seed, quiet=True, out=None,
                   precision=ctx.precision, **options)
    return result.model, result.metrics


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageDataset, *, batch_size: int = 500,
             transform: Any = None) -> float:
    """Top-1 accuracy (fraction) of `model` in eval mode, normalised with data's statistics.

    Args:
        transform: optional function applied to each normalised float batch (e.g. a test-time
            rotation), for robustness experiments.
    """
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        x = normalize(data.images[start:start + batch_size].float(), data.mean, data.std)
        if transform is not None:
            x = transform(x)
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        correct += int((logits.argmax(1) == data.labels[start:start + batch_size]).sum())
    return correct / max(len(data), 1)


def normalized_batch(data: ImageDataset, count: int, *, seed: int, start: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """A probe batch: images [start, start + count) of `data` in the seeded, class-interleaved
    order of `stratified_indices` (so each batch has an equal share per class, and batches
    with different `start` and the same seed are disjoint), normalised, and their labels."""
    order = stratified_indices(data.labels, len(data), seed=seed, num_classes=data.num_classes)
    idx = order[start:start + count]
    return normalize(data.images[idx].float(), data.mean, data.std), data.labels[idx].clone()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# margin's floor on the standard error of an accuracy difference (fractions: 0.5 points).
SE_FLOOR = 0.005


def margin(a: Sequence[float], b: Sequence[float]) -> float:
    """How many standard errors mean(a) exceeds mean(b) by (Welch's t statistic).

    With one value per side there is no spread to compare with; the plain difference divided
    by a floor of 0.5 percentage points (for accuracies as fractions, 0.005) is returned, so a
    single-seed difference must be large to count.
    """
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b)) if len(a) > 1 and len(b) > 1 else 0.0
    return (ma - mb) / max(se, SE_FLOOR)


def pct(x: float) -> str:
    """A fraction as a percentage with two decimals."""
    return f"{100 * x:.2f}%"


def power_estimate(t: float, n: int, *, seconds_per_unit: float, unit: str = "seeds",
                   z: float = 2.0, max_units: int = 10_000) -> dict[str, Any]:
    """How many `unit`s (seeds, images, resamples) would decide a claim left inconclusive.

    `t` is the claim's statistic as judged: (measured - threshold) / standard error, with
    the verdict decided at |t| >= z. The standard error shrinks like 1 / sqrt(n), so the same
    effect reaches |t| = z at n * (z / |t|)^2 units, if the effect is what was measured. That
    is an estimate at the observed effect, not a guarantee: the true effect may be smaller.

    Returns:
        {"t", "n", "unit", "needed" (None when |t| is ~0: no feasible number decides it),
         "seconds" (needed * seconds_per_unit, None likewise), "text"}.
    """
    if not math.isfinite(t) or abs(t) < z * math.sqrt(n / max_units):
        needed = None
        text = (f"|t| = {abs(t):.2f} with {n} {unit}: the effect is too close to the threshold "
                f"for any feasible number of {unit} (more than {max_units:,}) to decide it")
    else:
        needed = max(n + 1, math.ceil(n * (z / abs(t)) ** 2))
        text = (f"|t| = {abs(t):.2f} with {n} {unit}; at the measured effect ~{needed} {unit} "
                f"would reach |t| = {z:g} (~{needed * seconds_per_unit / 60:.0f} min on this "
                f"machine)")
    return {"t": t, "n": n, "unit": unit, "needed": needed,
            "seconds": None if needed is None else needed * seconds_per_unit, "text": text}
