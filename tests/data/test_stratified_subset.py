"""`stratified_indices` / `stratified_subset`: an equal share per class, seeded, on a
class-sorted set (the order ImageFolder data arrive in)."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.data.dataset import ImageDataset, stratified_indices, stratified_subset


def _sorted_labels(counts):
    return torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(counts)])


def test_equal_share_per_class_on_class_sorted_labels():
    labels = _sorted_labels([50] * 10)
    idx = stratified_indices(labels, 40, seed=0)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [4] * 10
    assert len(set(idx.tolist())) == 40
    # The first 40 of the class-sorted set, the old way, hold one class only.
    assert torch.bincount(labels[:40], minlength=10).tolist() == [40] + [0] * 9
    # Every prefix is stratified too: 25 = 2 per class and 5 classes with a third.
    assert sorted(torch.bincount(labels[idx[:25]], minlength=10).tolist()) == [2] * 5 + [3] * 5


def test_seeded_same_seed_same_subset_other_seed_other():
    labels = _sorted_labels([30] * 5)
    a = stratified_indices(labels, 20, seed=3)
    assert torch.equal(a, stratified_indices(labels, 20, seed=3))
    assert set(a.tolist()) != set(stratified_indices(labels, 20, seed=4).tolist())


def test_a_class_that_runs_out_gives_all_it_has_and_the_rest_share_equally():
    labels = _sorted_labels([2, 20, 20, 20])
    counts = torch.bincount(labels[stratified_indices(labels, 26, seed=0)], minlength=4)
    assert counts.tolist() == [2, 8, 8, 8]
    everything = stratified_indices(labels, len(labels), seed=0)
    assert sorted(everything.tolist()) == list(range(len(labels)))
    with pytest.raises(ValueError, match="count must be in 0..62"):
        stratified_indices(labels, 63, seed=0)


def test_stratified_subset_keeps_the_images_with_their_labels():
    labels = _sorted_labels([6, 6, 6])
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8).contiguous()
    ds = ImageDataset(images, labels, ["a", "b", "c"], (0.5,), (0.25,), "toy")
    sub = stratified_subset(ds, 9, seed=1)
    assert sub.class_counts().tolist() == [3, 3, 3]
    assert torch.equal(sub.images[:, 0, 0, 0].long(), sub.labels)
    assert sub.mean == ds.mean and sub.classes == ds.classes
