"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html).

The binary version is the one read by default: fixed-length records of label byte(s) and
3,072 pixel bytes (1,024 red, then green, then blue, each 32x32 row-major), read straight from
the official tarball or its extracted folder. CIFAR-10: data_batch_1..5.bin and test_batch.bin
with one label byte, class names in batches.meta.txt. CIFAR-100: train.bin and test.bin with
two label bytes (coarse, fine); the fine label (100 classes) is used, names from
fine_label_names.txt.

The python version is a set of pickles, and unpickling can run arbitrary code; it is read only
through `RestrictedUnpickler`, which admits the numpy pieces an array needs and nothing else.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

from cnnzoo.data.dataset import ImageDataset, channel_stats

RECORD_PIXELS = 3 * 32 * 32
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_NAMES = (*CIFAR10_TRAIN, "test_batch.bin", "batches.meta.txt")
CIFAR100_NAMES = ("train.bin", "test.bin", "fine_label_names.txt")
PY10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
PY10_NAMES = (*PY10_TRAIN, "test_batch", "batches.meta")
PY100_NAMES = ("train", "test", "meta")
_MARKERS = {"data_batch_1.bin", "train.bin", "data_batch_1"}
_FOLDERS = ("cifar-10-batches-bin", "cifar-100-binary", "cifar-10-batches-py",
            "cifar-100-python")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches: dicts, lists, bytes, ints and numpy arrays only.

    `find_class` is the only way a pickle reaches code; it admits numpy's array
    reconstruction (under its numpy 1 and numpy 2 module names) and `_codecs.encode`, which
    Python 3 uses to pickle bytes at protocol 2. Anything else raises UnpicklingError naming it.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays, lists and dicts "
                f"are allowed in a CIFAR batch"
            )
        if module == "_codecs":
            return codecs.encode
        if name == "_reconstruct":
            return _reconstruct
        return getattr(np, name)


def restricted_loads(data: bytes, source: str = "pickle") -> object:
    """Unpickle `data` with RestrictedUnpickler (Python 2 strings read as bytes)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(f"{source}: {err}") from None
    except (EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{source}: not a readable CIFAR pickle ({err})") from None


def _records(raw: bytes, label_bytes: int, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    size = label_bytes + RECORD_PIXELS
    if len(raw) == 0 or len(raw) % size:
        raise ValueError(f"{source}: {len(raw)} bytes is not a whole number of "
                         f"{size}-byte CIFAR records")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
    labels = torch.from_numpy(rec[:, label_bytes - 1].astype(np.int64))  # fine label is last
    images = torch.from_numpy(rec[:, label_bytes:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def _names_file(raw: bytes | None, default: list[str]) -> list[str]:
    if raw is None:
        return default
    names = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
    return names or default


def _unpickled_batch(raw: bytes, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    obj = restricted_loads(raw, source)
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict in a CIFAR batch, got {type(obj).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data = d.get("data")
    labels = d.get("fine_labels", d.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != RECORD_PIXELS:
        raise ValueError(f"{source}: 'data' must be a uint8 array (N, 3072)")
    if labels is None or len(labels) != len(data):
        raise ValueError(f"{source}: need one label per image in 'labels' or 'fine_labels'")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.as_tensor(np.asarray(labels, dtype=np.int64))


def _meta_names(raw: bytes | None, source: str, default: list[str]) -> list[str]:
    if raw is None:
        return default
    obj = restricted_loads(raw, source)
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in dict(obj).items()}
    names = d.get("fine_label_names", d.get("label_names"))
    if not names:
        return default
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_members(path: Path) -> dict[str, bytes]:
    """The CIFAR files of a tarball or folder, by base name, read in one pass."""
    wanted = set(CIFAR10_NAMES + CIFAR100_NAMES + PY10_NAMES + PY100_NAMES)
    files: dict[str, bytes] = {}
    if path.is_dir():
        folders = [path, *(path / f for f in _FOLDERS if (path / f).is_dir())]
        for folder in folders:
            for name in wanted:
                if (folder / name).is_file() and name not in files:
                    files[name] = (folder / name).read_bytes()
        return files
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    files[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable CIFAR tarball ({err})") from None
    return files


def is_cifar(path: Path) -> bool:
    """True for a CIFAR tarball (binary or python) or a folder holding one's files."""
    if path.is_dir():
        return any((d / m).is_file() for d in (path, *(path / f for f in _FOLDERS))
                   for m in _MARKERS)
    if not tarfile.is_tarfile(path):
        return False
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:  # stop at the first file that tells CIFAR from an image folder
                base = member.name.rsplit("/", 1)[-1]
                if base in _MARKERS:
                    return True
                if base.lower().endswith((".png", ".jpg", ".jpeg")):
                    return False
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


_STATS_CACHE: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _split_arrays(files: dict[str, bytes], split: str,
                  source: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    def cat(parts):
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    if "data_batch_1.bin" in files:  # CIFAR-10 binary
        names = CIFAR10_TRAIN if split == "train" else ("test_batch.bin",)
        label_bytes, classes = 1, _names_file(files.get("batches.meta.txt"), _numbered(10))
        parts = [_records(_need(files, n, source), label_bytes, f"{source}:{n}") for n in names]
        return *cat(parts), classes
    if "train.bin" in files:  # CIFAR-100 binary
        name = "train.bin" if split == "train" else "test.bin"
        classes = _names_file(files.get("fine_label_names.txt"), _numbered(100))
        return *_records(_need(files, name, source), 2, f"{source}:{name}"), classes
    if "data_batch_1" in files:  # CIFAR-10 python
        names = PY10_TRAIN if split == "train" else ("test_batch",)
        classes = _meta_names(files.get("batches.meta"), f"{source}:batches.meta", _numbered(10))
        parts = [_unpickled_batch(_need(files, n, source), f"{source}:{n}") for n in names]
        return *cat(parts), classes
    if "train" in files:  # CIFAR-100 python
        name = "train" if split == "train" else "test"
        classes = _meta_names(files.get("meta"), f"{source}:meta", _numbered(100))
        return *_unpickled_batch(_need(files, name, source), f"{source}:{name}"), classes
    raise ValueError(f"{source}: no CIFAR batch files found (expected data_batch_1.bin, "
                     f"train.bin, data_batch_1 or train)")


def _need(files: dict[str, bytes], name: str, source: str) -> bytes:
    if name not in files:
        raise ValueError(f"{source}: CIFAR file {name} is missing")
    return files[name]


def _numbered(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def load_cifar_path(path: str | Path, split: str, name: str | None = None) -> ImageDataset:
    """CIFAR-10/100 from a tarball or folder, binary or python format."""
    path = Path(path)
    files = _read_members(path)
    source = str(path)
    images, labels, classes = _split_arrays(files, split, source)
    if len(labels) and labels.max() >= len(classes):
        raise ValueError(f"{source}: label {int(labels.max())} outside the {len(classes)} "
                         f"classes")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns,
           tuple(sorted((n, len(b)) for n, b in files.items())))
    if key not in _STATS_CACHE:
        train = images if split == "train" else _split_arrays(files, "train", source)[0]
        _STATS_CACHE[key] = channel_stats(train)
    return ImageDataset(images, labels, classes, *_STATS_CACHE[key], name=name or source)


def load_cifar_named(name: str, split: str, searched: list[Path],
                     missing: Callable[[str, list[Path]], Exception]) -> ImageDataset:
    """"cifar10" or "cifar100" from the first searched folder holding its tarball or files."""
    tarball = "cifar-10-binary.tar.gz" if name == "cifar10" else "cifar-100-binary.tar.gz"
    folder = "cifar-10-batches-bin" if name == "cifar10" else "cifar-100-binary"
    marker = "data_batch_1.bin" if name == "cifar10" else "train.bin"
    for root in searched:
        if (root / folder / marker).is_file():
            return load_cifar_path(root / folder, split, name)
        if (root / tarball).is_file():
            return load_cifar_path(root / tarball, split, name)
    raise missing(name, searched)
