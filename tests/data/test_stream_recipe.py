"""A named recipe (cnnzoo.data.recipe) on the streaming path: `--recipe` sets the stream's
train and eval transforms, the checkpoint records it, and `cnnzoo eval` on the shard
directory uses the recipe's evaluation transform; the recipe is refused where it cannot
apply (in-memory data) and an unknown name is one line naming the known ones."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cnnzoo.data import recipe
from cnnzoo.data.pack import pack_images
from cnnzoo.data.shards import open_shards
from cnnzoo.data.stream import DecodeResize, Recipe, StreamLoader, transforms
from cnnzoo.infer.evaluate import evaluate_checkpoint
from cnnzoo.train import TrainConfig, load_checkpoint, train
from stream_images import make_image_folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe") / "src"
    make_image_folder(root, n=48, classes=3, sizes=(40, 90))  # a few grayscale among them
    out = root.parent / "shards"
    pack_images(root, out, part_size=32, chunk_bytes="16KB", holdout_per_class=4)
    return out


def test_transforms_follow_the_recipe(shards):
    train_tf, eval_tf = transforms(32, 1, "imagenet")
    assert isinstance(train_tf, Recipe) and isinstance(eval_tf, Recipe)
    split = open_shards(shards).split("val")
    batch_x, _ = next(iter(StreamLoader(split, 6, transform=eval_tf, normalize_batches=False)))
    assert batch_x.shape == (6, 3, 32, 32) and batch_x.dtype == torch.uint8
    # the stream's first image is the recipe's eval transform of the first sample's bytes
    want = recipe.make_transform("imagenet", False, 32)(_first_bytes(shards), "img", None)
    assert torch.equal(batch_x[0], want)
    # imagenet eval is resize-to-37 then center-crop 32, not a squash to 32x32
    plain_x, _ = next(iter(StreamLoader(split, 6, transform=DecodeResize(32, 3),
                                        normalize_batches=False)))
    assert not torch.equal(batch_x, plain_x)
    # the training transform draws a crop from the sample's rng: two seeds differ
    data = _first_bytes(shards)
    a, _ = train_tf(data, 0, np.random.default_rng(0))
    b, _ = train_tf(data, 0, np.random.default_rng(1))
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)


def _first_bytes(shards) -> bytes:
    """The encoded bytes of the val split's first sample, through the stream itself."""
    split = open_shards(shards).split("val")
    seen = []

    def keep(data, label, rng):
        seen.append(data)
        return torch.zeros(1, 1, 1, dtype=torch.uint8), label

    next(iter(StreamLoader(split, 1, transform=keep, normalize_batches=False)))
    return seen[0]


def test_recipe_trains_records_and_evaluates(shards, tmp_path):
    out = tmp_path / "run"
    result = train("resnet20", str(shards), recipe="cifar", epochs=1, batch_size=8,
                   lr=0.05, threads=1, workers=0, out=str(out), quiet=True)
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["config"]["recipe"] == "cifar"
    assert tuple(ckpt["preprocess"]["mean"]) == pytest.approx(recipe.CIFAR_MEAN)
    assert result.model.conv1.in_channels == 3  # RGB, though some sources are grayscale
    evaluated = evaluate_checkpoint(out / "best.pt", str(shards), split="val")
    assert evaluated.top1 == pytest.approx(ckpt["best_val_acc"], abs=1e-6)
    # `cnnzoo predict CKPT SHARDS/`: every val image once, top-1 as eval counted it
    run = subprocess.run([sys.executable, "-m", "cnnzoo", "predict", str(out / "best.pt"),
                          str(shards), "--json", "--topk", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    ids = sorted(int(r["image"].rsplit("#", 1)[1]) for r in rows)
    assert len(rows) == 12 and len(set(ids)) == 12  # 4 held out of each of 3 classes
    split = open_shards(shards).split("val")
    truth = {}

    def keep(data, label, rng):
        return torch.zeros(1, 1, 1, dtype=torch.uint8), label

    loader = StreamLoader(split, 64, transform=keep, normalize_batches=False)
    for _, y in loader:
        truth.update(zip(loader.last_ids.tolist(), y.tolist(), strict=True))
    correct = sum(r["top"][0]["label"] == truth[int(r["image"].rsplit("#", 1)[1])]
                  for r in rows)
    assert correct / 12 == pytest.approx(evaluated.top1, abs=1e-6)


def test_recipe_refused_on_in_memory_data(tmp_path):
    with pytest.raises(ValueError, match="recipe: 'imagenet' applies to a shard directory"):
        train("resnet20", "synthetic", recipe="imagenet", epochs=1, quiet=True)


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(ValueError, match="recipe: unknown .* known: imagenet, imagenet-ta, cifar"):
        TrainConfig(model="resnet20", data="x", recipe="imagenet21k")


def test_a_shard_declaring_pickle_is_refused(shards, tmp_path):
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    index = copy / "train" / "index.json"
    meta = json.loads(index.read_text())
    meta["config"]["data_format"][1] = "pickle"
    index.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"index.json: field format\(s\) pickle refused"):
        StreamLoader(open_shards(copy).split("train"), 4, transform=DecodeResize(8, 3))
