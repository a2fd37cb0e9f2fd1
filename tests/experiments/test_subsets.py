"""Issue 15: the experiments' test subsets and probe batches are stratified and seeded
(`load_splits`, `normalized_batch`), tested on a class-sorted ImageFolder, where the first N
images, the old way, cover only some classes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cnnzoo.experiments.base import Context
from cnnzoo.experiments.common import load_splits, normalized_batch

CLASSES = ["ant", "bee", "cat", "dog"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/ and test/ class folders, 12 images per class each, read back sorted by class."""
    root = tmp_path_factory.mktemp("sorted")
    for split in ("train", "test"):
        for c, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(12):
                pixels = torch.full((4, 4), 30 * c + i + (120 if split == "test" else 0),
                                    dtype=torch.uint8).numpy()
                Image.fromarray(pixels, "L").save(root / split / cls / f"{i:02d}.png")
    return str(root)


def _splits(folder, seed):
    ctx = Context("x", "tiny", {}, seed, folder, None, folder, quiet=True)
    return load_splits(ctx, train_size=24, val_size=16, test_size=8)


def test_test_subset_is_stratified_and_seeded(folder):
    splits = _splits(folder, 0)
    full = load_splits(Context("x", "tiny", {}, 0, folder, None, folder, quiet=True),
                       train_size=24, val_size=16).test
    assert full.labels.tolist() == sorted(full.labels.tolist())  # class-sorted on disk
    # The old test subset, the first 8 test images, holds one class of the four.
    assert torch.bincount(full.labels[:8], minlength=4).tolist() == [8, 0, 0, 0]
    assert splits.test.class_counts().tolist() == [2, 2, 2, 2]
    again, other = _splits(folder, 0), _splits(folder, 1)
    assert torch.equal(again.test.images, splits.test.images)
    assert not torch.equal(other.test.images, splits.test.images)
    assert other.test.class_counts().tolist() == [2, 2, 2, 2]


def test_probe_batches_are_stratified_seeded_and_disjoint(folder):
    val = _splits(folder, 0).val  # 16 images, class-sorted like the folder
    assert torch.bincount(val.labels[:8], minlength=4).tolist() == [4, 4, 0, 0]  # the old way
    x, y = normalized_batch(val, 8, seed=0)
    assert x.shape == (8, 1, 4, 4) and torch.bincount(y, minlength=4).tolist() == [2] * 4
    x2, y2 = normalized_batch(val, 8, seed=0, start=8)
    assert torch.bincount(y2, minlength=4).tolist() == [2] * 4
    assert not set(map(tuple, x.flatten(1).tolist())) & set(map(tuple, x2.flatten(1).tolist()))
    same, _ = normalized_batch(val, 8, seed=0)
    assert torch.equal(same, x)
    assert not torch.equal(normalized_batch(val, 8, seed=1)[0], x)
