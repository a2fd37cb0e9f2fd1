"""`pack_images(src, out)`: an ImageFolder (directory or .tar/.tar.gz, any image sizes) into a
shard directory of encoded bytes (layout: `cnnzoo.data.shards`).

Listing. A directory is listed as `folder.py` lists it (sorted classes, sorted files); a
tarball in archive order, in a first pass that reads names and offsets only, so that no image
is held in memory beyond the part being written. A sample's id is its position in that
listing of its split; labels index the sorted class names.

Order. The samples are written in a seeded random permutation of the listing (`seed`), not in
listing order. An ImageFolder is sorted by class, and litdata's shuffle permutes chunks and
items within a chunk but never mixes chunks in a batch: packed in listing order, every chunk
(and so every batch) would hold one or two classes, and a network trained on it learns nothing
(measured: 10% on CIFAR-10 against 76.6% in memory, benchmarks/stream_cifar.py). Shuffling at
pack time, as webdataset's and litdata's docs advise, makes every chunk a sample of all
classes. A tarball is therefore read by member offset (a compressed one is first decompressed
into a temporary file beside the output), not in one forward pass.

Checking. Every image is decoded once (JPEG in Pillow's draft mode, 1/8 scale: the whole
stream is still read, so truncation and corruption show, for about a tenth of the work); an
image that does not decode stops the pack with one line naming the file. The decoded draft
gives the per-channel statistics for normalisation and the size histogram.

Resuming. The split's listing is cut into parts of `part_size` images; part P is written by
its own litdata BinaryWriter (chunk-P-K.bin, P.index.json) and then marked done in
.parts/SPLIT-P.json with its counts and the SHA-256 of its chunks. A pack interrupted at any
point and run again with the same arguments keeps the marked parts (after checking their
files' sizes) and rewrites the rest; the manifest says "complete" only after every part is
marked, litdata's index.json is merged and every chunk is re-hashed against its mark.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
import shutil
import tarfile
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from cnnzoo.data.folder import SPLIT_DIRS, _is_image, _list_folder, _split_root
from cnnzoo.data.shards import FORMAT, MANIFEST, VERSION, file_sha256, verify_shards
from cnnzoo.fileio import atomic_write_text

try:
    from litdata.streaming.writer import BinaryWriter
except ImportError:  # the optional `stream` extra
    BinaryWriter = None

PART_SIZE = 10_000  # images per resumable part
CHUNK_BYTES = "64MB"  # litdata chunk size: the unit a rank or worker reads
_RANK_ENV = "DATA_OPTIMIZER_GLOBAL_RANK"  # how litdata's own optimize names a writer's files

Progress = Callable[[str, int, int], None]  # (split, images done, images in split)


def require_litdata(what: str) -> None:
    if BinaryWriter is None:
        raise RuntimeError(f"{what} needs litdata (the `stream` extra): pip install litdata "
                           f"(on the CPU torch build: pip install --no-deps litdata "
                           f"lightning-utilities boto3 requests, as `make setup` does)")


# ---- listing --------------------------------------------------------------------------------

class _Entry:
    __slots__ = ("cls", "name", "path", "offset", "size")

    def __init__(self, cls: str, name: str, path: Path | None, offset: int = 0,
                 size: int = 0) -> None:
        self.cls, self.name, self.path = cls, name, path
        self.offset, self.size = offset, size  # a tar member's data, in the uncompressed tar


def _list_dir(src: Path) -> dict[str, list[_Entry]]:
    splits = {"train": [_Entry(c, str(f), f) for c, f in _list_folder(_split_root(src, "train"))]}
    with contextlib.suppress(FileNotFoundError):
        splits["val"] = [_Entry(c, str(f), f) for c, f in _list_folder(_split_root(src, "test"))]
    return splits


def _tar_split(parts: tuple[str, ...]) -> str:
    return next((s for s, dirs in SPLIT_DIRS.items() if len(parts) >= 3 and parts[-3] in dirs), "")


def _list_tarball(src: Path) -> dict[str, list[_Entry]]:
    found: dict[str, list[_Entry]] = {"train": [], "test": [], "": []}
    try:
        with tarfile.open(src, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if member.isfile() and _is_image(member.name) and len(parts) >= 2:
                    found[_tar_split(parts)].append(
                        _Entry(parts[-2], member.name, None, member.offset_data, member.size))
                tar.members = []  # tarfile keeps every TarInfo otherwise: memory grows
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{src}: not a readable tar archive ({err})") from None
    if not (found["train"] or found["test"]):
        found["train"] = found[""]
    if not found["train"]:
        raise FileNotFoundError(f"{src}: no images (expected [train/]<class>/<image> members)")
    return {"train": found["train"], **({"val": found["test"]} if found["test"] else {})}


def _hold_out(splits: dict[str, list[_Entry]], per_class: int) -> dict[str, list[_Entry]]:
    """Move the last `per_class` images of each class from train to val."""
    if "val" in splits:
        raise ValueError("holdout_per_class: the source already has a val/test split")
    by_class: dict[str, list[_Entry]] = {}
    for e in splits["train"]:
        by_class.setdefault(e.cls, []).append(e)
    short = [c for c, es in by_class.items() if len(es) <= per_class]
    if short:
        raise ValueError(f"holdout_per_class: {per_class} would leave no training image of "
                         f"class {short[0]!r}")
    held = {id(e) for es in by_class.values() for e in es[-per_class:]}
    return {"train": [e for e in splits["train"] if id(e) not in held],
            "val": [e for e in splits["train"] if id(e) in held]}


# ---- checking one image -----------------------------------------------------------------------

def check_image(data: bytes, source: str) -> tuple[int, int, bool, np.ndarray]:
    """Decode `data` (JPEG at 1/8 scale) to prove it is whole.

    Returns:
        (height, width, grayscale, [sum, sum of squares, pixels] per RGB channel in [0, 1]).

    Raises:
        ValueError: "<source>: cannot decode image (...)".
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            gray = img.mode in ("L", "1", "I;16", "I")
            img.draft("RGB", (max(1, w // 8), max(1, h // 8)))  # JPEG only; others ignore it
            a = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise ValueError(f"{source}: cannot decode image ({err})") from None
    flat = a.reshape(-1, 3)
    return h, w, gray, np.stack([flat.sum(0), (flat * flat).sum(0),
                                 np.full(3, float(len(flat)))])


# ---- writing parts ----------------------------------------------------------------------------

@contextlib.contextmanager
def _writer_rank(rank: int) -> Iterator[None]:
    old = os.environ.get(_RANK_ENV)
    os.environ[_RANK_ENV] = str(rank)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_RANK_ENV, None)
        else:
            os.environ[_RANK_ENV] = old


def _part_files(root: Path, part: int) -> list[Path]:
    return sorted(root.glob(f"chunk-{part}-*.bin")) + [root / f"{part}.index.json"]


def _mark_path(out: Path, split: str, part: int) -> Path:
    return out / ".parts" / f"{split}-{part:05d}.json"


def _done_mark(out: Path, root: Path, split: str, part: int) -> dict[str, Any] | None:
    """The part's mark when the part is finished and its files still have their sizes."""
    try:
        mark = json.loads(_mark_path(out, split, part).read_text())
    except (OSError, ValueError):
        return None
    for f in mark["files"]:
        p = root / f["name"]
        if not p.is_file() or p.stat().st_size != f["bytes"]:
            return None
    return mark if (root / f"{part}.index.json").is_file() else None


def _write_part(out: Path, root: Path, split: str, part: int, first: int,
                entries: list[tuple[int, _Entry]], read: Callable[[_Entry], bytes],
                label: dict[str, int], n_classes: int, chunk_bytes: str,
                pool: ThreadPoolExecutor) -> dict[str, Any]:
    for stale in _part_files(root, part):
        stale.unlink(missing_ok=True)
    datas = [read(e) for _, e in entries]
    checks = list(pool.map(lambda it: check_image(it[0], it[1].name),
                           zip(datas, (e for _, e in entries), strict=True)))
    counts = [0] * n_classes
    # litdata prints the inferred format once per writer and warns about images larger than
    # a chunk (such a chunk just grows): noise for a pack of thousands of parts.
    with _writer_rank(part), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        writer = BinaryWriter(str(root), chunk_bytes=chunk_bytes)
        # litdata's index is the storage position (first + k); "id" is the listing position
        for k, ((sample_id, e), data) in enumerate(zip(entries, datas, strict=True)):
            writer.add_item(first + k, {"data": data, "label": label[e.cls], "id": sample_id})
            counts[label[e.cls]] += 1
        writer.done()
    stats = sum(c[3] for c in checks)
    sizes = Counter(f"{h}x{w}" for h, w, _, _ in checks)
    files = [{"name": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(root.glob(f"chunk-{part}-*.bin"))]
    mark = {"part": part, "count": len(entries), "counts": counts, "files": files,
            "gray": sum(g for _, _, g, _ in checks), "stats": stats.tolist(),
            "sizes": dict(sizes.most_common(16))}
    atomic_write_text(_mark_path(out, split, part), json.dumps(mark))
    return mark


def _merge_index(root: Path, parts: int) -> None:
    """litdata's index.json: the parts' own indexes, concatenated in part order (what
    BinaryWriter's merge does; the part indexes stay as the parts' completion evidence)."""
    chunks, config = [], None
    for p in range(parts):
        index = json.loads((root / f"{p}.index.json").read_text())
        config = config or index["config"]
        chunks.extend(index["chunks"])
    atomic_write_text(root / "index.json", json.dumps({"chunks": chunks, "config": config},
                                                      sort_keys=True))


def _split_summary(marks: list[dict[str, Any]], n_classes: int) -> dict[str, Any]:
    count = sum(m["count"] for m in marks)
    stats = np.sum([np.array(m["stats"]) for m in marks], axis=0)
    mean = stats[0] / stats[2]
    std = np.sqrt(np.maximum(stats[1] / stats[2] - mean * mean, 0.0))
    sizes: Counter = Counter()
    for m in marks:
        sizes.update(m["sizes"])
    h, w = (int(v) for v in sizes.most_common(1)[0][0].split("x"))
    gray = sum(m["gray"] for m in marks) == count
    return {"count": count,
            "counts": [sum(m["counts"][c] for m in marks) for c in range(n_classes)],
            "in_chans": 1 if gray else 3, "typical_size": [h, w],
            "mean": [float(mean.mean())] if gray else mean.tolist(),
            "std": [float(std.mean())] if gray else std.tolist(),
            "parts": [{k: m[k] for k in ("part", "count", "counts", "files")} for m in marks]}


def pack_images(src: str | Path, out: str | Path, *, part_size: int = PART_SIZE,
                chunk_bytes: str = CHUNK_BYTES, holdout_per_class: int = 0,
                progress: Progress | None = None, threads: int | None = None,
                seed: int = 0) -> list[str]:
    """Pack the ImageFolder `src` into the shard directory `out` (see the module docstring).

    Args:
        src: a directory or .tar/.tar.gz: `<class>/<image>`, or `train/` and `test/` (or
            `val/`) folders of those; the test/val split becomes the "val" split.
        out: the shard directory (created; an unfinished pack of the same source resumes).
        part_size: images per resumable part.
        chunk_bytes: litdata chunk size, e.g. "64MB".
        holdout_per_class: move the last N images of each class (listing order) from train
            to a val split.
        progress: called with (split, images done, images in split) after each part.
        threads: decode-check threads (default: all cores).
        seed: of the permutation the samples are written in (see "Order" above).

    Returns:
        The verification lines (`verify_shards`).
    """
    require_litdata("cnnzoo data pack")
    src, out = Path(src), Path(out)
    if part_size < 1:
        raise ValueError(f"part_size: must be >= 1, got {part_size}")
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such directory or tarball")
    splits = _list_dir(src) if src.is_dir() else _list_tarball(src)
    if holdout_per_class:
        splits = _hold_out(splits, holdout_per_class)
    classes = sorted({e.cls for e in splits["train"]})
    label = {c: i for i, c in enumerate(classes)}
    for name, entries in splits.items():
        extra = sorted({e.cls for e in entries} - set(classes))
        if extra:
            raise ValueError(f"{src}: {name} split has classes the train split lacks: {extra[:5]}")
    settings = {"source": str(src.resolve()), "part_size": part_size, "chunk_bytes": chunk_bytes,
                "holdout_per_class": holdout_per_class, "seed": seed,
                "listed": {k: len(v) for k, v in splits.items()}}
    _start(out, settings)
    summaries = {}
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool, \
            _Reader(src, out / ".parts") as reader:
        for name, entries in splits.items():
            root = out / name
            root.mkdir(parents=True, exist_ok=True)
            numbered = list(enumerate(entries))  # (sample id, entry), written permuted
            order = np.random.default_rng([seed, len(numbered)]).permutation(len(numbered))
            numbered = [numbered[i] for i in order]
            n_parts = -(-len(numbered) // part_size)
            marks = []
            for p in range(n_parts):
                mark = _done_mark(out, root, name, p)
                if mark is None:
                    chunk = numbered[p * part_size:(p + 1) * part_size]
                    mark = _write_part(out, root, name, p, p * part_size, chunk, reader.read,
                                       label, len(classes), chunk_bytes, pool)
                marks.append(mark)
                if progress is not None:
                    progress(name, min((p + 1) * part_size, len(numbered)), len(numbered))
            _merge_index(root, n_parts)
            summaries[name] = _split_summary(marks, len(classes))
    manifest = {"format": FORMAT, "version": VERSION, "engine": "litdata", "complete": True,
                "classes": classes, "settings": settings, "splits": summaries}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return verify_shards(out)


def _start(out: Path, settings: dict[str, Any]) -> None:
    """Create `out`, or check that its unfinished pack had the same settings."""
    out.mkdir(parents=True, exist_ok=True)
    started = out / ".parts" / "settings.json"
    if started.is_file():
        before = json.loads(started.read_text())
        if before != settings:
            raise ValueError(f"{out}: holds a pack with other settings ({before}); choose "
                             f"another --out or delete it")
        (out / MANIFEST).unlink(missing_ok=True)  # rewritten once every part is done
    elif any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; choose another --out")
    started.parent.mkdir(exist_ok=True)
    atomic_write_text(started, json.dumps(settings))


class _Reader:
    """Bytes of a listed entry: a file read, or a tar member's bytes read at its offset (from
    the tarball itself, or for a compressed one from a temporary decompressed copy in
    `tmp_dir`, made on the first read and deleted on exit)."""

    def __init__(self, src: Path, tmp_dir: Path) -> None:
        self.src, self.tmp_dir = src, tmp_dir
        self.file: Any = None

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()

    def _open(self) -> Any:
        with open(self.src, "rb") as f:
            magic = f.read(6)
        for prefix, opener in ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open),
                               (b"\xfd7zXZ", lzma.open)):
            if magic.startswith(prefix):
                plain = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115 (closed in __exit__)
                with opener(self.src, "rb") as packed:
                    shutil.copyfileobj(packed, plain, 1 << 20)
                return plain
        return open(self.src, "rb")  # noqa: SIM115 (closed in __exit__)

    def read(self, entry: _Entry) -> bytes:
        if entry.path is not None:
            return entry.path.read_bytes()
        if self.file is None:
            self.file = self._open()
        self.file.seek(entry.offset)
        data = self.file.read(entry.size)
        if len(data) != entry.size:
            raise ValueError(f"{self.src}: member {entry.name} is cut short ({len(data)} of "
                             f"{entry.size} bytes; the archive changed since the listing?)")
        return data
