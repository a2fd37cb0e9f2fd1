"""The in-memory data set: every image as one uint8 tensor, plus labels and class names.

A data set is read once (by `idx`, `cifar`, `folder` or `make_synthetic`) into an
`ImageDataset`; the batch pipeline (`loader.BatchLoader`) gathers, normalises and augments
batches of it as tensors. `mean`/`std` are per-channel statistics of the *training* split in
[0, 1] units, so a test split is normalised with the training statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch


@dataclass
class ImageDataset:
    """Images and labels held in memory.

    Attributes:
        images: uint8 tensor (N, C, H, W), contiguous, on the CPU.
        labels: int64 tensor (N,), values in [0, len(classes)).
        classes: class names, index = label.
        mean: per-channel mean of the training split, in [0, 1] units.
        std: per-channel standard deviation of the training split, in [0, 1] units.
        name: where the data came from (a data-set name or a path), for logs and run records.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"ImageDataset {self.name!r}: images must be a uint8 (N, C, H, W) tensor, got "
                f"{self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ImageDataset {self.name!r}: labels must be int64 of shape "
                f"({self.images.shape[0]},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        c = self.images.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(
                f"ImageDataset {self.name!r}: mean/std need {c} channel values, "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(
                f"ImageDataset {self.name!r}: labels must lie in [0, {len(self.classes)}), "
                f"got [{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        self.images = self.images.contiguous()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """The images at `indices` (a copy), with the same classes and statistics."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return replace(self, images=self.images[idx].contiguous(), labels=self.labels[idx].clone())

    def class_counts(self) -> torch.Tensor:
        """Number of images per class, int64 (num_classes,)."""
        return torch.bincount(self.labels, minlength=self.num_classes)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units.

    Sums in float64 over chunks, so a 50,000-image set never exists as one float copy.

    Returns:
        (mean, std), each a tuple with one value per channel.
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0)
    return tuple((mean / 255).tolist()), tuple((var.sqrt() / 255).tolist())


def make_synthetic(
    num_samples: int = 256,
    num_classes: int = 10,
    image_size: tuple[int, int, int] = (3, 32, 32),
    seed: int = 0,
    *,
    pattern_seed: int = 0,
    name: str = "synthetic",
) -> ImageDataset:
    """A small learnable data set: each class is a smooth random pattern, each image a noisy,
    shifted copy of its class's pattern.

    Args:
        num_samples: number of images; classes are balanced (round-robin labels).
        num_classes: number of classes.
        image_size: (C, H, W).
        seed: draws the labels' order, the noise and the shifts (use another seed for a test split).
        pattern_seed: draws the class patterns; keep it fixed across splits so that the
            train and test splits come from the same distribution.
        name: recorded in the data set.
    """
    c, h, w = image_size
    if num_samples < 1 or num_classes < 1 or min(c, h, w) < 1:
        raise ValueError(
            f"make_synthetic: need positive num_samples, num_classes and image size, got "
            f"{num_samples}, {num_classes}, {image_size}"
        )
    g_pattern = torch.Generator().manual_seed(pattern_seed)
    # Coarse 4x4 random grids upsampled: low-frequency patterns survive crops and flips less
    # perfectly than noise would, so the set is learnable but not trivially so.
    coarse = torch.randn(num_classes, c, 4, 4, generator=g_pattern)
    patterns = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear",
                                               align_corners=False)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=g)]
    x = patterns[labels] * 50 + 128
    x = x + torch.randn(num_samples, c, h, w, generator=g) * 25
    # Shift each image by up to 2 pixels so position alone does not give the class away.
    shifts = torch.randint(-2, 3, (num_samples, 2), generator=g)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            if sel.any():
                x[sel] = torch.roll(x[sel], shifts=(dy, dx), dims=(2, 3))
    images = x.round().clamp(0, 255).to(torch.uint8).contiguous()
    mean, std = channel_stats(images)
    classes = [f"class{i}" for i in range(num_classes)]
    return ImageDataset(images, labels.to(torch.int64), classes, mean, std, name)


def parse_synthetic(spec: str, split: str) -> ImageDataset:
    """Build a synthetic set from a spec 'synthetic[:CxHxW[:CLASSES[:N]]]'.

    The train split uses seed 0 and the test split seed 1, with the same class patterns.
    """
    parts = spec.split(":")
    if parts[0] != "synthetic" or len(parts) > 4:
        raise ValueError(f"synthetic spec {spec!r}: expected 'synthetic[:CxHxW[:CLASSES[:N]]]'")
    try:
        size = tuple(int(v) for v in parts[1].split("x")) if len(parts) > 1 else (3, 32, 32)
        num_classes = int(parts[2]) if len(parts) > 2 else 10
        num_samples = int(parts[3]) if len(parts) > 3 else 256
    except ValueError:
        raise ValueError(
            f"synthetic spec {spec!r}: expected 'synthetic[:CxHxW[:CLASSES[:N]]]', "
            f"e.g. 'synthetic:1x28x28:10:512'"
        ) from None
    if len(size) != 3:
        raise ValueError(f"synthetic spec {spec!r}: image size must be CxHxW, e.g. 3x32x32")
    seed = {"train": 0, "test": 1}[split]
    train_stats = None
    if split == "test":  # normalise with the training split's statistics, as for real data
        train = make_synthetic(num_samples, num_classes, size, 0, name=spec)
        train_stats = (train.mean, train.std)
    ds = make_synthetic(num_samples, num_classes, size, seed, name=spec)
    if train_stats is not None:
        ds.mean, ds.std = train_stats
    return ds


def train_val_split(
    dataset: ImageDataset, val_size: int | float, *, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Hold out a validation split, stratified per class and deterministic in `seed`.

    Each class gives its share of `val_size` (largest-remainder rounding, so the total is
    exact). Both parts keep the original order of their images, and both carry the mean/std
    of the *training part*, so nothing about the held-out images leaks into normalisation.

    Args:
        dataset: the set to split.
        val_size: number of validation images (int) or fraction of the set (float in (0, 1)).
        seed: draws which images of each class are held out.

    Returns:
        (train, val).
    """
    n = len(dataset)
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise ValueError(f"train_val_split: a fractional val_size must be in (0, 1), "
                             f"got {val_size}")
        n_val = round(val_size * n)
    else:
        n_val = int(val_size)
    if not 0 < n_val < n:
        raise ValueError(f"train_val_split: val_size must leave both parts non-empty "
                         f"(1..{n - 1} of {n} images), got {val_size}")
    counts = dataset.class_counts()
    exact = counts.to(torch.float64) * n_val / n
    share = exact.floor().to(torch.int64)
    # Largest remainder: hand the missing images to the classes with the biggest fractions.
    missing = n_val - int(share.sum())
    if missing:
        order = torch.argsort(exact - share, descending=True, stable=True)
        share[order[:missing]] += 1
    g = torch.Generator().manual_seed(seed)
    val_mask = torch.zeros(n, dtype=torch.bool)
    for cls in range(dataset.num_classes):
        members = torch.nonzero(dataset.labels == cls).flatten()
        pick = torch.randperm(len(members), generator=g)[: int(share[cls])]
        val_mask[members[pick]] = True
    train = dataset.subset(torch.nonzero(~val_mask).flatten())
    val = dataset.subset(torch.nonzero(val_mask).flatten())
    mean, std = channel_stats(train.images)
    train.mean = val.mean = mean
    train.std = val.std = std
    return train, val


def stratified_indices(labels: torch.Tensor, count: int, *, seed: int,
                       num_classes: int | None = None) -> torch.Tensor:
    """`count` indices with an equal share per class (as far as each class has images),
    deterministic in `seed`.

    A split read from class folders is sorted by class, so its first `count` images can cover
    only some classes; these are drawn class by class instead. Round-robin: every class gives
    its r-th image (in a seeded random order within the class) before any gives its (r+1)-th,
    the classes taking turns in a seeded random order; a class that runs out drops out. So the
    shares differ by at most one image where every class has enough, and every prefix of the
    result (a batch taken from its front) is stratified the same way.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = len(labels)
    if not 0 <= count <= n:
        raise ValueError(f"stratified_indices: count must be in 0..{n}, got {count}")
    classes = int(labels.max()) + 1 if num_classes is None and n else (num_classes or 0)
    g = torch.Generator().manual_seed(seed)
    turn = torch.randperm(max(classes, 1), generator=g)  # the classes' order within a round
    rank = torch.empty(n, dtype=torch.int64)
    for cls in range(classes):
        members = torch.nonzero(labels == cls).flatten()
        rank[members[torch.randperm(len(members), generator=g)]] = torch.arange(len(members))
    order = torch.argsort(rank * max(classes, 1) + turn[labels], stable=True)
    return order[:count]


def stratified_subset(dataset: ImageDataset, count: int, *, seed: int) -> ImageDataset:
    """`count` images of `dataset`, an equal share per class, in `stratified_indices` order."""
    return dataset.subset(stratified_indices(dataset.labels, count, seed=seed,
                                             num_classes=dataset.num_classes))


def check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
