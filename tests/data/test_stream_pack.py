"""`cnnzoo data pack` and the stream it feeds: counts, classes, labels and the very bytes
round-trip; bad input is one line naming the file or shard; an interrupted pack resumes."""

from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest
import torch

from cnnzoo.cli import main
from cnnzoo.data.pack import pack_images
from cnnzoo.data.shards import open_shards, verify_shards
from cnnzoo.data.stream import DecodeResize, StreamLoader
from stream_images import make_image_folder


def digest(data: bytes, label: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """A 'transform' that returns the sample's SHA-256 as a (1, 1, 32) uint8 image."""
    return torch.frombuffer(bytearray(hashlib.sha256(data).digest()),
                            dtype=torch.uint8).view(1, 1, 32), label


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images") / "src"
    return root, make_image_folder(root)


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "s"
    pack_images(folder[0], out, part_size=64, chunk_bytes="256KB", holdout_per_class=5)
    return out


def stream_all(split, **kw):
    loader = StreamLoader(split, 7, transform=digest, normalize_batches=False, **kw)
    seen = {}
    for x, y in loader.batches(0):
        for i, h, label in zip(loader.last_ids.tolist(), x.flatten(1), y.tolist(), strict=True):
            seen[i] = (bytes(h.tolist()).hex(), label)
    return seen


def test_counts_classes_labels_and_bytes_round_trip(folder, shards):
    root, made = folder
    s = open_shards(shards)
    assert s.classes == ("c0", "c1", "c2", "c3")
    train, val = s.split("train"), s.split("val")
    assert (train.count, val.count) == (180, 20)
    assert train.counts == (45, 45, 45, 45) and val.counts == (5, 5, 5, 5)
    assert train.in_chans == 3  # a few grayscale images among RGB ones
    # The listing order is folder.py's: sorted classes, sorted files; the last 5 per class
    # are held out.
    by_class = {c: sorted(n for n, k in made.items() if k == c) for c in s.classes}
    want_train = [n for c in s.classes for n in by_class[c][:-5]]
    want_val = [n for c in s.classes for n in by_class[c][-5:]]
    for split, names in ((train, want_train), (val, want_val)):
        seen = stream_all(split)
        assert sorted(seen) == list(range(len(names)))
        for i, name in enumerate(names):
            sha = hashlib.sha256((root / name).read_bytes()).hexdigest()
            assert seen[i] == (sha, s.classes.index(made[name])), name


def test_manifest_checksums_verify_and_stats_are_plausible(shards):
    m = json.loads((shards / "manifest.json").read_text())
    chunks = [sum(len(p["files"]) for p in m["splits"][s]["parts"]) for s in ("train", "val")]
    assert verify_shards(shards) == [f"train: 180 images in 4 classes, {chunks[0]} chunks OK",
                                     f"val: 20 images in 4 classes, {chunks[1]} chunks OK"]
    assert m["complete"] and m["engine"] == "litdata"
    assert all(0.1 < v < 0.9 for v in m["splits"]["train"]["mean"])
    assert len(m["splits"]["train"]["parts"]) == 3  # 180 images in parts of 64


def test_shuffled_stream_is_a_seeded_permutation(shards):
    split = open_shards(shards).split("train")
    orders = []
    for seed in (1, 1, 2):
        loader = StreamLoader(split, 10, transform=DecodeResize(24), shuffle=True, seed=seed)
        ids = []
        for x, _ in loader.batches(0):
            assert x.shape[1:] == (3, 24, 24) and x.dtype == torch.float32
            ids += loader.last_ids.tolist()
        orders.append(ids)
    assert sorted(orders[0]) == list(range(180))
    assert orders[0] == orders[1] and orders[0] != orders[2] and orders[0] != sorted(orders[0])


def test_tarball_source_packs_the_same_samples(folder, shards, tmp_path):
    tgz = tmp_path / "src.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder[0], arcname="src")
    out = tmp_path / "from_tar"
    pack_images(tgz, out, part_size=64, chunk_bytes="256KB", holdout_per_class=5)
    a, b = open_shards(out), open_shards(shards)
    assert a.classes == b.classes and a.split("train").counts == b.split("train").counts
    assert sorted(v for v in stream_all(a.split("val")).values()) == \
        sorted(v for v in stream_all(b.split("val")).values())


def test_corrupt_source_image_is_one_line_naming_it(tmp_path, capsys):
    root = tmp_path / "src"
    make_image_folder(root, n=12, sizes=(60, 80))
    bad = root / "c1" / "0005.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    rc = main(["data", "pack", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith("cnnzoo data: error:") and str(bad) in err and "decode" in err


def test_truncated_or_corrupted_shard_is_one_line_naming_it(folder, tmp_path, capsys):
    out = tmp_path / "s"
    pack_images(folder[0], out, part_size=100, chunk_bytes="256KB")
    chunk = sorted((out / "train").glob("chunk-1-*.bin"))[0]
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    assert main(["data", "verify", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(chunk) in err and "truncated" in err
    with pytest.raises(ValueError, match=f"{chunk}: shard truncated"):
        StreamLoader(open_shards(out).split("train"), 8, transform=DecodeResize(16))
    chunk.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])  # same size
    assert main(["data", "verify", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(chunk) in err and "corrupted" in err


def test_interrupted_pack_resumes_keeping_finished_parts(folder, tmp_path):
    out = tmp_path / "s"

    def stop_after_first_part(split, done, total):
        if done >= 64:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack_images(folder[0], out, part_size=64, chunk_bytes="256KB",
                    progress=stop_after_first_part)
    with pytest.raises(ValueError, match="packing did not finish"):
        open_shards(out)
    first = {p: p.stat().st_mtime_ns for p in (out / "train").glob("chunk-0-*.bin")}
    calls = []
    pack_images(folder[0], out, part_size=64, chunk_bytes="256KB",
                progress=lambda *a: calls.append(a))
    assert first and {p: p.stat().st_mtime_ns for p in first} == first  # part 0 kept
    assert calls[-1] == ("train", 200, 200)
    assert open_shards(out).split("train").counts == (50, 50, 50, 50)
    assert sorted(stream_all(open_shards(out).split("train"))) == list(range(200))
    with pytest.raises(ValueError, match="other settings"):
        pack_images(folder[0], out, part_size=32)


def test_stored_order_mixes_the_classes_of_a_class_sorted_folder(shards):
    """An ImageFolder lists its images class by class; litdata never mixes chunks within a
    batch, so shards written in listing order give one-class chunks and batches (a network
    trained on them stays at chance: benchmarks/stream_cifar.py measured 10% on CIFAR-10).
    Pack writes a seeded permutation instead: in storage order (an unshuffled stream) the
    labels change about as often as in a random order (3/4 of neighbours for 4 classes), and
    every chunk-sized run of samples holds every class."""
    split = open_shards(shards).split("train")
    loader = StreamLoader(split, 30, transform=digest, normalize_batches=False)
    labels, ids = [], []
    for _, y in loader.batches(0):
        labels += y.tolist()
        ids += loader.last_ids.tolist()
    assert sorted(ids) == list(range(180)) and ids != sorted(ids)
    changes = sum(a != b for a, b in zip(labels, labels[1:], strict=False))
    assert changes > 0.5 * (len(labels) - 1)  # listing order: 3 changes
    assert all(len(set(labels[i:i + 30])) == 4 for i in range(0, 180, 30))


def test_pack_order_is_seeded(folder, tmp_path):
    orders = []
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        out = tmp_path / name
        pack_images(folder[0], out, part_size=64, chunk_bytes="256KB", seed=seed)
        loader = StreamLoader(open_shards(out).split("train"), 50, transform=digest,
                              normalize_batches=False)
        ids = []
        for _ in loader.batches(0):
            ids += loader.last_ids.tolist()
        orders.append(ids)
    assert orders[0] == orders[1] and orders[0] != orders[2]
