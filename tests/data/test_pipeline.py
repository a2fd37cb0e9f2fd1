"""The in-memory data set and the batch pipeline: splits, order, sharding, augmentation."""

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.data import (
    Augment,
    BatchLoader,
    ImageDataset,
    channel_stats,
    load_dataset,
    make_synthetic,
    preprocess,
    train_val_split,
)
from cnnzoo.data.augment import (
    N_UNIFORMS,
    augment_batch,
    crop_flip,
    erase_boxes,
    erasing_boxes,
    plan_augment,
    rotate_scale,
)
from cnnzoo.train.config import TrainConfig


def collect(loader):
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_synthetic_is_learnable_by_nearest_class_mean():
    train = make_synthetic(200, 5, (3, 16, 16), seed=0)
    test = make_synthetic(200, 5, (3, 16, 16), seed=1)
    assert train.images.dtype == torch.uint8 and train.images.shape == (200, 3, 16, 16)
    assert train.class_counts().tolist() == [40] * 5
    assert not torch.equal(train.images, test.images)
    flat = train.images.float().flatten(1)
    centroids = torch.stack([flat[train.labels == k].mean(0) for k in range(5)])
    pred = torch.cdist(test.images.float().flatten(1), centroids).argmin(1)
    assert (pred == test.labels).float().mean() > 0.9  # chance is 0.2


def test_synthetic_spec_and_test_split_uses_training_stats():
    train = load_dataset("synthetic:1x28x28:4:64")
    test = load_dataset("synthetic:1x28x28:4:64", "test")
    assert train.images.shape == (64, 1, 28, 28) and train.num_classes == 4
    assert test.mean == train.mean and test.std == train.std
    assert test.mean != channel_stats(test.images)[0]
    with pytest.raises(ValueError, match="synthetic spec"):
        load_dataset("synthetic:3x32:10")
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("synthetic", "val")


def test_channel_stats_match_float_computation():
    ds = make_synthetic(50, 3, (3, 8, 8))
    x = ds.images.double() / 255
    mean, std = channel_stats(ds.images, chunk=7)
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), x.mean((0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64),
                               x.permute(1, 0, 2, 3).flatten(1).std(1, correction=0))


def test_dataset_validates_its_fields():
    imgs = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(imgs.float(), torch.zeros(4, dtype=torch.int64), ["a"], (0.5,), (0.2,), "x")
    with pytest.raises(ValueError, match="labels must lie"):
        ImageDataset(imgs, torch.full((4,), 3), ["a", "b"], (0.5,), (0.2,), "x")
    with pytest.raises(ValueError, match="channel values"):
        ImageDataset(imgs, torch.zeros(4, dtype=torch.int64), ["a"], (0.5, 0.5), (0.2,), "x")


def test_train_val_split_is_stratified_deterministic_and_disjoint():
    ds = make_synthetic(103, 4, (1, 4, 4))
    ds.images[:, 0, 0, 0] = torch.arange(103, dtype=torch.uint8)  # tag each image
    train, val = train_val_split(ds, 0.2, seed=3)
    assert len(val) == round(0.2 * 103) and len(train) + len(val) == 103
    counts, vcounts = ds.class_counts(), val.class_counts()
    assert ((vcounts.double() - counts.double() * 0.2).abs() < 1).all()
    tags_t, tags_v = set(train.images[:, 0, 0, 0].tolist()), set(val.images[:, 0, 0, 0].tolist())
    assert not tags_t & tags_v and len(tags_t | tags_v) == 103
    again_t, again_v = train_val_split(ds, 0.2, seed=3)
    assert torch.equal(again_v.images, val.images)
    other_v = train_val_split(ds, 0.2, seed=4)[1]
    assert not torch.equal(other_v.images, val.images)
    # Both parts carry the statistics of the training part only.
    assert train.mean == val.mean == channel_stats(train.images)[0]
    assert len(train_val_split(ds, 10)[1]) == 10
    with pytest.raises(ValueError, match="val_size"):
        train_val_split(ds, 103)


def test_loader_without_augment_normalises_and_keeps_order():
    ds = make_synthetic(20, 3, (3, 8, 8))
    x, y = collect(BatchLoader(ds, 6))
    assert x.dtype == torch.float32 and x.shape == (20, 3, 8, 8)
    assert torch.equal(y, ds.labels)
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (ds.images.float() / 255 - mean) / std)
    torch.testing.assert_close(x, preprocess(ds.images, ds.mean, ds.std))
    assert len(BatchLoader(ds, 6)) == 4 and len(BatchLoader(ds, 6, drop_last=True)) == 3


def test_loader_resize_and_channels_last():
    ds = make_synthetic(8, 2, (1, 12, 12))
    x, _ = next(iter(BatchLoader(ds, 8, image_size=32, channels_last=True)))
    assert x.shape == (8, 1, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    ref = F.interpolate(ds.images.float(), size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, (ref / 255 - ds.mean[0]) / ds.std[0])


def test_order_and_augmentation_are_a_pure_function_of_seed_and_epoch():
    ds = make_synthetic(40, 4, (3, 8, 8))
    aug = Augment(crop_padding=2, hflip=True, random_erasing=0.5, rotate_degrees=10)
    rng_before = torch.get_rng_state()
    a = BatchLoader(ds, 8, shuffle=True, augment=aug, seed=5)
    a.set_epoch(3)
    xa, ya = collect(a)
    b = BatchLoader(ds, 8, shuffle=True, augment=aug, seed=5)
    b.set_epoch(3)
    assert all(torch.equal(p, q) for p, q in zip(collect(b), (xa, ya), strict=True))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never used
    b.set_epoch(4)
    xb, yb = collect(b)
    assert not torch.equal(yb, ya) and sorted(yb.tolist()) == sorted(ya.tolist())
    # Resuming in the middle of an epoch gives the remaining batches bit for bit.
    b.set_epoch(3)
    tail = torch.cat([x for x, _ in b.batches(start=2)])
    assert torch.equal(tail, xa[16:])


@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_disjoint_and_equal_sized(drop_last):
    ds = make_synthetic(22, 2, (1, 2, 2))
    ds.images[:, 0, 0, 0] = torch.arange(22, dtype=torch.uint8)
    ds.mean, ds.std = (0.0,), (1 / 255,)  # normalisation leaves pixel values unchanged
    shards = []
    for rank in range(4):
        loader = BatchLoader(ds, 3, shuffle=True, seed=1, rank=rank, world_size=4,
                             drop_last=drop_last)
        loader.set_epoch(2)
        x, _ = collect(loader)
        assert len(loader) == (1 if drop_last else 2)
        shards.append(x[:, 0, 0, 0].round().long().tolist())
    sizes = {len(s) for s in shards}
    assert len(sizes) == 1
    seen = [t for s in shards for t in s]
    if drop_last:
        assert len(seen) == 12 and len(set(seen)) == 12  # 22 // 4 = 5 per rank, 3 per batch
    else:
        assert len(seen) == 24 and set(seen) == set(range(22))  # padded by 2 repeats


def test_w_ranks_see_what_one_process_sees_with_the_global_batch():
    ds = make_synthetic(48, 4, (3, 8, 8))
    aug = Augment(crop_padding=2, hflip=True, random_erasing=0.5, scale=(0.9, 1.1))
    one = BatchLoader(ds, 12, shuffle=True, augment=aug, seed=9)
    one.set_epoch(1)
    ranks = []
    for rank in range(3):
        loader = BatchLoader(ds, 4, shuffle=True, augment=aug, seed=9, rank=rank, world_size=3)
        loader.set_epoch(1)
        ranks.append(list(loader))
    for b, (x1, y1) in enumerate(one):
        x3 = torch.stack([ranks[r][b][0] for r in range(3)], 1).flatten(0, 1)
        y3 = torch.stack([ranks[r][b][1] for r in range(3)], 1).flatten()
        assert torch.equal(y3, y1) and torch.equal(x3, x1)


def test_crop_flip_equals_per_image_reference():
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 7, (6, 2), generator=g)
    flip = torch.tensor([True, False, True, False, False, True])
    for mode, dtype in (("zeros", torch.float32), ("reflect", torch.float32),
                        ("zeros", torch.uint8)):
        x = (torch.rand(6, 2, 5, 7, generator=g) * 255).to(dtype)
        out = crop_flip(x, 3, offsets, flip, mode)
        assert out.dtype == dtype
        pad = F.pad(x, (3,) * 4, mode="constant" if mode == "zeros" else "reflect")
        for i in range(6):
            oy, ox = offsets[i].tolist()
            ref = pad[i, :, oy:oy + 5, ox:ox + 7]
            assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)


def test_random_erasing_sets_one_box_per_selected_image():
    x = torch.ones(4, 3, 10, 10)
    apply = torch.tensor([True, True, False, True])
    area = torch.tensor([0.2, 0.02, 0.3, 0.4])
    pos = torch.tensor([[0.0, 0.0]] * 3 + [[0.99, 0.99]])
    boxes = erasing_boxes(apply, area, torch.zeros(4), pos, (10, 10))
    out = erase_boxes(x.clone(), boxes)
    assert torch.equal(out[2], x[2])
    for i in (0, 1, 3):
        zero = (out[i, 0] == 0)
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert zero.sum() == h * w and (out[i, :, zero] == 0).all()  # one solid box, all channels
        assert abs(h * w - area[i] * 100) <= h + w  # area fraction after rounding
    assert out[3, 0, -1, -1] == 0 and out[0, 0, 0, 0] == 0  # placed by pos


def test_rotation_and_scale_identity_and_quarter_turn():
    x = torch.rand(3, 2, 8, 8)
    same = rotate_scale(x, torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(same, x)
    # Positive angles turn counter-clockwise, as torchvision's rotate does.
    quarter = rotate_scale(x, torch.full((3,), 90.0), torch.ones(3))
    torch.testing.assert_close(quarter, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    zoom = rotate_scale(x, torch.zeros(3), torch.full((3,), 2.0))
    assert zoom.shape == x.shape and not torch.allclose(zoom, x)


def test_augment_batch_with_nothing_enabled_is_preprocess():
    ds = make_synthetic(8, 2, (3, 8, 8))
    out = augment_batch(ds.images.float(), torch.rand(8, N_UNIFORMS), Augment(),
                        mean=ds.mean, std=ds.std, image_size=16)
    torch.testing.assert_close(out, preprocess(ds.images, ds.mean, ds.std, image_size=16))


def test_augment_and_loader_reject_bad_options():
    with pytest.raises(ValueError, match="padding_mode"):
        Augment(padding_mode="edge")
    with pytest.raises(ValueError, match="probability"):
        Augment(random_erasing=1.5)
    ds = make_synthetic(8, 2, (1, 4, 4))
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(ds, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(ds, 0)


def _flips_by_image(loader, epoch):
    """{image id: flipped?} for one epoch of a loader over `_marked_images`."""
    loader.set_epoch(epoch)
    x, _ = collect(loader)
    ids = x[:, 0, 0, 1].round().long().tolist()  # row 0 holds the id in every column
    flipped = (x[:, 0, 1, -1] > x[:, 0, 1, 0]).tolist()  # row 1's marker moved right
    return dict(zip(ids, flipped, strict=True))


def _marked_images(n):
    ds = make_synthetic(n, 2, (1, 3, 4))
    ds.images.zero_()
    ds.images[:, 0, 0, :] = torch.arange(n, dtype=torch.uint8)[:, None]
    ds.images[:, 0, 1, 0] = 255  # left-right marker
    ds.mean, ds.std = (0.0,), (1 / 255,)  # normalisation leaves pixel values unchanged
    return ds


def test_alternate_flip_shows_each_image_both_ways_in_consecutive_epochs():
    ds = _marked_images(64)
    aug = Augment(hflip=True, alternate_flip=True)
    loader = BatchLoader(ds, 16, shuffle=True, augment=aug, seed=3)
    epochs = [_flips_by_image(loader, e) for e in range(4)]
    assert all(len(f) == 64 for f in epochs)
    for e in range(3):
        assert all(epochs[e][i] != epochs[e + 1][i] for i in range(64))
    assert epochs[0] == epochs[2] and epochs[1] == epochs[3]
    assert 16 <= sum(epochs[0].values()) <= 48  # a fair coin per image, not all one way
    other = _flips_by_image(BatchLoader(ds, 16, shuffle=True, augment=aug, seed=4), 0)
    assert other != epochs[0]  # the coins come from the seed
    # Random flips, for contrast: some images keep their orientation from one epoch to the next.
    plain = BatchLoader(ds, 16, shuffle=True, augment=Augment(hflip=True), seed=3)
    e0, e1 = _flips_by_image(plain, 0), _flips_by_image(plain, 1)
    assert any(e0[i] == e1[i] for i in range(64))
    # Sharded over 2 ranks, the images are flipped exactly as in one process.
    shards = {}
    for rank in range(2):
        shards |= _flips_by_image(BatchLoader(ds, 8, shuffle=True, augment=aug, seed=3,
                                              rank=rank, world_size=2), 1)
    assert shards == epochs[1]


def test_alternate_flip_needs_hflip():
    with pytest.raises(ValueError, match="alternate_flip"):
        Augment(alternate_flip=True)
    with pytest.raises(ValueError, match="alternate_flip: needs hflip"):
        TrainConfig(model="compact_resnet8", alternate_flip=True)


def test_smaller_crop_equals_per_image_reference_and_covers_every_offset():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(5, 2, 6, 8, generator=g) * 255).to(torch.uint8)
    offsets = torch.tensor([[0, 0], [4, 6], [2, 3], [1, 5], [4, 0]])
    flip = torch.tensor([False, True, True, False, True])
    out = crop_flip(x, 1, offsets, flip, size=(4, 4))
    pad = F.pad(x, (1,) * 4)
    assert out.shape == (5, 2, 4, 4)
    for i in range(5):
        oy, ox = offsets[i].tolist()
        ref = pad[i, :, oy:oy + 4, ox:ox + 4]
        assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)
    # Through the loader: crops of the given side; offsets span the whole padded image.
    ds = make_synthetic(64, 2, (1, 6, 8))
    loader = BatchLoader(ds, 64, shuffle=True, seed=0,
                         augment=Augment(crop_padding=1, crop_size=4))
    xb, _ = next(iter(loader))
    assert xb.shape == (64, 1, 4, 4)
    u = torch.linspace(0, 1, 101)[:, None].expand(101, N_UNIFORMS)
    plan = plan_augment(u, Augment(crop_padding=1, crop_size=4), (6, 8))
    assert plan.offsets[:, 0].unique().tolist() == list(range(5))  # 6 + 2 - 4 = 4
    assert plan.offsets[:, 1].unique().tolist() == list(range(7))  # 8 + 2 - 4 = 6
    with pytest.raises(ValueError, match="crop_size 11 does not fit 6x8 images padded by 2"):
        plan_augment(u, Augment(crop_padding=2, crop_size=11), (6, 8))
    with pytest.raises(ValueError, match="crop_size"):
        Augment(crop_size=0)
