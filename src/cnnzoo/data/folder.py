"""ImageFolder: one sub-folder per class of PNG/JPEG files, decoded once with Pillow into a
uint8 tensor cache.

Layouts: `<root>/<class>/<image>` (the train split) or `<root>/{train,test}/<class>/<image>`
(`val` is accepted for test); the same inside a .tar or .tar.gz, which is read directly from
the archive (nothing extracted). Classes are the sorted folder names.

Cache: `<root>/.cnnzoo-cache-<key>.pt` (saved atomically with torch.save, loaded with
weights_only=True), where the key hashes every file's relative path, size and mtime plus the
resize option, so adding, removing or touching a file rebuilds it. A read-only root (or a
tarball) puts the cache in the user cache folder instead.

Images: all grayscale ("L") gives 1 channel, anything else is converted to RGB. Different
sizes are an error unless `image_size` asks for a bilinear resize to a common square size.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from cnnzoo.data.cache import user_cache_dir
from cnnzoo.data.dataset import ImageDataset, channel_stats
from cnnzoo.fileio import atomic_write

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_DIRS = {"train": ("train",), "test": ("test", "val")}
_CACHE_VERSION = 1


def _is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS) and not PurePosixPath(name).name.startswith(".")


def _decode(data: bytes, source: str, size: int | None) -> np.ndarray:
    """One image as (H, W) uint8 if grayscale ("L"), else (H, W, 3) RGB."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img if img.mode in ("L", "RGB") else img.convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as err:  # Pillow's UnidentifiedImageError is an OSError
        raise ValueError(f"{source}: cannot decode image ({err})") from None


def decode_images(items: list[tuple[str, bytes]], image_size: int | None,
                  where: str) -> torch.Tensor:
    """Decode (name, bytes) pairs into one uint8 (N, C, H, W) tensor, on all CPU cores
    (Pillow releases the GIL while decoding). C is 1 when every image is grayscale, else 3
    (grayscale images then repeat their channel, as Pillow's convert("RGB") does)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        arrays = list(pool.map(lambda it: _decode(it[1], it[0], image_size), items))
    first = arrays[0].shape[:2]
    for (name, _), a in zip(items, arrays, strict=True):
        if a.shape[:2] != first:
            raise ValueError(
                f"{where}: images differ in size ({first[1]}x{first[0]} for {items[0][0]}, "
                f"{a.shape[1]}x{a.shape[0]} for {name}); pass image_size to resize them to "
                f"a common square size"
            )
    if all(a.ndim == 2 for a in arrays):
        return torch.from_numpy(np.stack(arrays)).unsqueeze(1).contiguous()
    rgb = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
    return torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous()


def _split_root(path: Path, split: str) -> Path:
    for d in SPLIT_DIRS[split]:
        if (path / d).is_dir():
            return path / d
    if split == "train" and not any((path / d).is_dir() for d in ("test", "val")):
        return path
    raise FileNotFoundError(
        f"{path}: no {split!r} split (expected a {' or '.join(SPLIT_DIRS[split])} folder of "
        f"class folders); hold one out of the training split with train_val_split"
    )


def _list_folder(root: Path) -> list[tuple[str, Path]]:
    """(class, file) for every image under root/<class>/, sorted."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class folders (expected <root>/<class>/<image>.png|jpg)")
    entries = []
    for cls in classes:
        files = sorted(p for p in (root / cls).rglob("*") if p.is_file() and _is_image(p.name))
        if not files:
            raise ValueError(f"{root / cls}: class folder has no PNG/JPEG images")
        entries.extend((cls, f) for f in files)
    return entries


def _list_tar(path: Path, split: str) -> list[tuple[str, str, bytes]]:
    """(class, member name, bytes) of the split's images in a tarball, in one pass."""
    found: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": [], "": []}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or not _is_image(member.name) or len(parts) < 2:
                    continue
                where = next((s for s, dirs in SPLIT_DIRS.items()
                              if len(parts) >= 3 and parts[-3] in dirs), "")
                found[where].append((parts[-2], member.name, tar.extractfile(member).read()))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable tar archive ({err})") from None
    items = found[split] if found["train"] or found["test"] else (
        found[""] if split == "train" else [])
    if not items:
        raise FileNotFoundError(
            f"{path}: no {split!r} images (expected [{'|'.join(SPLIT_DIRS[split])}/]<class>/"
            f"<image> members); hold a split out of the training split with train_val_split"
        )
    return sorted(items, key=lambda t: (t[0], t[1]))


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save through `cnnzoo.fileio.atomic_write` (temp file, fsync, rename)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


def _cache_places(root: Path) -> list[tuple[Path, str]]:
    """(folder, file-name prefix) to try for root's cache: next to the data when writable,
    then the user cache."""
    places = [(root, ".cnnzoo-cache-")] if _writable(root) else []
    return [*places, (user_cache_dir() / "folders", f"{_digest(str(root.resolve()))}-")]


def _load_cache(path: Path) -> dict | None:
    try:
        obj = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, TypeError):
        return None
    ok = (isinstance(obj, dict) and isinstance(obj.get("images"), torch.Tensor)
          and obj["images"].dtype == torch.uint8 and isinstance(obj.get("labels"), torch.Tensor)
          and isinstance(obj.get("classes"), list))
    return obj if ok else None


def _cached(root: Path, key: str, build) -> dict:
    places = _cache_places(root)
    for folder, prefix in places:
        path = folder / f"{prefix}{key}.pt"
        if path.is_file() and (obj := _load_cache(path)) is not None:
            return obj
    obj = build()
    for folder, prefix in places:
        path = folder / f"{prefix}{key}.pt"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(obj, path)
        except OSError:
            continue  # e.g. a read-only mount that os.access did not flag: try the next place
        for stale in folder.glob(f"{prefix}*.pt"):  # earlier versions of the same folder
            if stale != path:
                stale.unlink(missing_ok=True)
        break
    return obj


def _read_split(path: Path, split: str, image_size: int | None) -> dict:
    if path.is_dir():
        root = _split_root(path, split)
        entries = _list_folder(root)
        listing = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                   for _, f in entries]
        key = _digest(_CACHE_VERSION, image_size, listing)

        def build() -> dict:
            items = [(str(f), f.read_bytes()) for _, f in entries]
            return _pack(decode_images(items, image_size, str(root)),
                         [c for c, _ in entries])

        return _cached(root, key, build)
    st = path.stat()
    key = _digest(_CACHE_VERSION, image_size, split, st.st_size, st.st_mtime_ns)

    def build_tar() -> dict:
        members = _list_tar(path, split)
        items = [(f"{path}:{name}", data) for _, name, data in members]
        return _pack(decode_images(items, image_size, str(path)), [c for c, _, _ in members])

    return _cached(path.parent / f"{path.name}:{split}", key, build_tar)


def _pack(images: torch.Tensor, names: list[str]) -> dict:
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for c in names], dtype=torch.int64)
    mean, std = channel_stats(images)
    return {"images": images, "labels": labels, "classes": classes,
            "mean": list(mean), "std": list(std)}


def load_image_folder(path: str | Path, split: str = "train", *, image_size: int | None = None,
                      name: str | None = None) -> ImageDataset:
    """An ImageFolder directory or tarball as an ImageDataset (see the module docstring).

    The test split is normalised with the train split's statistics when the source has one.
    """
    path = Path(path)
    data = _read_split(path, split, image_size)
    mean, std = data["mean"], data["std"]
    if split == "test":
        try:
            train = _read_split(path, "train", image_size)
        except FileNotFoundError:
            train = None
        if train is not None and train["classes"] == data["classes"]:
            mean, std = train["mean"], train["std"]
    return ImageDataset(data["images"], data["labels"], list(data["classes"]), tuple(mean),
                        tuple(std), name=name or str(path))
