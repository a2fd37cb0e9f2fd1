"""A shard directory: an image data set as litdata chunks of encoded JPEG/PNG bytes, for data
sets too large to hold decoded in memory (see docs/large_data.md).

Layout (written by `cnnzoo.data.pack.pack_images`):

    SHARDS/manifest.json          classes, per split: images per class, channels, typical size,
                                  mean/std, and per part its chunk files with SHA-256 and bytes
    SHARDS/train/index.json       litdata's index of the split (what StreamingDataset reads)
    SHARDS/train/chunk-P-K.bin    part P's chunks; P.index.json: part P's own index
    SHARDS/val/...                the validation split, when one was packed

A sample is {"data": the file's bytes, "label": class index, "id": its position in the split's
sorted listing}; the id is what the tests record to check sharding and resume.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "cnnzoo-shards"
VERSION = 1
SPLITS = ("train", "val")


def is_shard_dir(path: str | Path) -> bool:
    """Whether `path` is a directory holding a shard manifest."""
    return (Path(path) / MANIFEST).is_file()


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ShardSplit:
    """One packed split.

    Attributes:
        root: the split's folder (litdata's input_dir).
        count: images in the split; counts: images per class (index = label).
        in_chans: 1 when every image is grayscale, else 3.
        typical_size: (H, W) of the most common image size.
        mean, std: per-channel statistics in [0, 1], from the training split.
        parts: the manifest's part entries (chunk files with their SHA-256 and bytes).
    """

    root: Path
    count: int
    counts: tuple[int, ...]
    in_chans: int
    typical_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    parts: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ShardSet:
    """A shard directory's manifest: the classes and its splits."""

    path: Path
    classes: tuple[str, ...]
    splits: dict[str, ShardSplit]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> ShardSplit:
        if name not in self.splits:
            raise FileNotFoundError(f"{self.path}: no {name!r} split packed (has "
                                    f"{', '.join(self.splits)}); pack one with "
                                    f"`cnnzoo data pack --holdout-per-class N` or from a source "
                                    f"with a val/ or test/ folder")
        return self.splits[name]


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        if (path / ".parts" / "settings.json").is_file():
            raise ValueError(f"{path}: packing did not finish; run `cnnzoo data pack` again "
                             f"with the same arguments to complete it") from None
        raise FileNotFoundError(f"{path}: not a shard directory (no {MANIFEST}; make one with "
                                f"`cnnzoo data pack SRC --out {path}`)") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path / MANIFEST}: unreadable shard manifest ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{path / MANIFEST}: not a {FORMAT} v{VERSION} manifest")
    if not manifest.get("complete"):
        raise ValueError(f"{path}: packing did not finish; run `cnnzoo data pack` again with "
                         f"the same arguments to complete it")
    return manifest


def open_shards(path: str | Path) -> ShardSet:
    """The shard directory at `path` (its manifest; no chunk is read)."""
    path = Path(path)
    m = read_manifest(path)
    splits = {}
    train_stats = m["splits"]["train"]
    for name, s in m["splits"].items():
        splits[name] = ShardSplit(
            root=path / name, count=int(s["count"]), counts=tuple(s["counts"]),
            in_chans=int(s["in_chans"]), typical_size=tuple(s["typical_size"]),
            # every split is normalised with the training split's statistics
            mean=tuple(train_stats["mean"]), std=tuple(train_stats["std"]),
            parts=tuple(s["parts"]))
    return ShardSet(path, tuple(m["classes"]), splits)


def verify_shards(path: str | Path) -> list[str]:
    """Check every chunk file against the manifest (bytes and SHA-256) and litdata's index.

    Returns:
        One line per split, e.g. "train: 50,000 images in 10 classes, 40 chunks OK".

    Raises:
        ValueError: one line naming the first missing, truncated or corrupted chunk.
    """
    shards = open_shards(path)
    lines = []
    for name, split in shards.splits.items():
        files = [f for part in split.parts for f in part["files"]]
        for f in files:
            chunk = split.root / f["name"]
            if not chunk.is_file():
                raise ValueError(f"{chunk}: shard missing (listed in {path}/{MANIFEST})")
            size = chunk.stat().st_size
            if size != f["bytes"]:
                raise ValueError(f"{chunk}: shard truncated or altered ({size:,} bytes, "
                                 f"manifest says {f['bytes']:,})")
            if file_sha256(chunk) != f["sha256"]:
                raise ValueError(f"{chunk}: shard corrupted (SHA-256 differs from the manifest)")
        counted = sum(int(p["count"]) for p in split.parts)
        if counted != split.count or sum(split.counts) != split.count:
            raise ValueError(f"{path}/{MANIFEST}: {name} split counts disagree ({counted} in "
                             f"its parts, {sum(split.counts)} over classes, {split.count} total)")
        index = json.loads((split.root / "index.json").read_text())
        indexed = sum(int(c["chunk_size"]) for c in index["chunks"])
        if indexed != split.count:
            raise ValueError(f"{split.root / 'index.json'}: indexes {indexed} images, manifest "
                             f"says {split.count}")
        lines.append(f"{name}: {split.count:,} images in {shards.num_classes} classes, "
                     f"{len(files)} chunks OK")
    return lines
