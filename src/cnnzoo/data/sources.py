"""Where data sets live and how a name or a path becomes an ImageDataset.

Named sets are looked up, in order, in: the `data_dir` argument (`--data-dir`), the
environment variable CNNZOO_DATA, the system folder a distribution package installs
(Debian's `dataset-fashion-mnist`: /usr/share/datasets/fashion-mnist), then the user cache
($XDG_CACHE_HOME/cnnzoo or ~/.cache/cnnzoo, where `cnnzoo data NAME` downloads to). In each
root both `<root>/<name>/` and `<root>/` itself are tried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnzoo.data.cache import user_cache_dir
from cnnzoo.data.cifar import is_cifar, load_cifar_named, load_cifar_path
from cnnzoo.data.dataset import ImageDataset, channel_stats, check_split, parse_synthetic
from cnnzoo.data.folder import load_image_folder
from cnnzoo.data.idx import find_idx_files, read_idx_pair

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


@dataclass(frozen=True)
class DatasetInfo:
    """An official data set: its files with their published MD5s and where to fetch them.

    Attributes:
        name: the name `load_dataset` and `cnnzoo data` accept.
        kind: "idx" or "cifar" (the reader).
        base_url: official download location (files are base_url + file name).
        files: file name -> MD5 as published by the data set's authors.
        classes: class names (CIFAR-100's are read from its meta file instead).
        system_dirs: folders a distribution package installs the files into.
    """

    name: str
    kind: str
    base_url: str
    files: dict[str, str]
    classes: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = field(default=())


# MD5s: Fashion-MNIST from zalandoresearch/fashion-mnist's README; MNIST as torchvision lists
# them for the ossci-datasets mirror of yann.lecun.com; CIFAR from
# https://www.cs.toronto.edu/~kriz/cifar.html (binary versions).
DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "idx", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        FASHION_MNIST_CLASSES,
        ("/usr/share/datasets/fashion-mnist",),
    ),
    "mnist": DatasetInfo(
        "mnist", "idx", "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        tuple(str(i) for i in range(10)),
    ),
    "cifar10": DatasetInfo(
        "cifar10", "cifar", "https://www.cs.toronto.edu/~kriz/",
        {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        CIFAR10_CLASSES,
    ),
    "cifar100": DatasetInfo(
        "cifar100", "cifar", "https://www.cs.toronto.edu/~kriz/",
        {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"},
    ),
}


def search_roots(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for data set `name`, in order (see the module docstring)."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    if os.environ.get("CNNZOO_DATA"):
        roots.append(Path(os.environ["CNNZOO_DATA"]))
    info = DATASETS.get(name)
    roots.extend(Path(d) for d in (info.system_dirs if info else ()))
    roots.append(user_cache_dir())
    candidates = []
    for root in roots:
        candidates.extend([root / name, root])
    return list(dict.fromkeys(candidates))  # drop duplicates, keep order


def _missing(name: str, searched: list[Path]) -> FileNotFoundError:
    places = ", ".join(str(p) for p in searched)
    return FileNotFoundError(
        f"data set {name!r} not found (searched {places}); "
        f"download it with `cnnzoo data {name}` or point --data-dir / CNNZOO_DATA at it"
    )


# Training-split statistics per source, so that loading the test split twice (or train then
# test) reads the training images only once per process. Key: files with size and mtime.
_STATS_CACHE: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _file_key(*paths: Path) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def load_idx(name: str, split: str, data_dir: str | Path | None = None) -> ImageDataset:
    """MNIST or Fashion-MNIST from the first search root holding both of its splits' files."""
    info = DATASETS[name]
    searched = search_roots(name, data_dir)
    for folder in searched:
        train = find_idx_files(folder, "train")
        test = find_idx_files(folder, "t10k")
        if train is None or test is None:
            continue
        images, labels = read_idx_pair(*(train if split == "train" else test),
                                       len(info.classes))
        key = _file_key(*train)
        if split == "train":
            stats = _STATS_CACHE.setdefault(key, channel_stats(images))
        elif key not in _STATS_CACHE:
            stats = _STATS_CACHE.setdefault(key, channel_stats(read_idx_pair(*train, 10)[0]))
        else:
            stats = _STATS_CACHE[key]
        return ImageDataset(images, labels, list(info.classes), *stats, name=name)
    raise _missing(name, searched)


def load_dataset(name_or_path: str | Path, split: str = "train", *,
                 data_dir: str | Path | None = None,
                 image_size: int | None = None) -> ImageDataset:
    """Load a data set split into memory.

    Args:
        name_or_path: "fashion-mnist", "mnist", "cifar10", "cifar100",
            "synthetic[:CxHxW[:CLASSES[:N]]]", or a path: an ImageFolder directory (one
            sub-folder per class, or `train/` and `test/` folders of those), a .tar/.tar.gz of
            one (extracted once into the user cache), a CIFAR binary tarball or its extracted
            folder, or a CIFAR python-pickle folder.
        split: "train" or "test".
        data_dir: first folder to search for a named data set.
        image_size: ImageFolder only: resize every image to this square side when decoding
            (needed when the images differ in size).

    Returns:
        The split, normalisation statistics taken from the training split.
    """
    check_split(split)
    spec = str(name_or_path)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return parse_synthetic(spec, split)
    if spec in DATASETS:
        if DATASETS[spec].kind == "idx":
            return load_idx(spec, split, data_dir)
        return load_cifar_named(spec, split, search_roots(spec, data_dir), _missing)
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join([*DATASETS, "synthetic"])
        raise FileNotFoundError(f"data set {spec!r}: no such path, and not one of: {names}")
    if is_cifar(path):
        return load_cifar_path(path, split)
    return load_image_folder(path, split, image_size=image_size)


