"""IDX files (MNIST, Fashion-MNIST): LeCun et al.'s format, read with every header field checked.

Format (http://yann.lecun.com/exdb/mnist/, and torchvision's read_sn3_pascalvincent_tensor):
a big-endian 4-byte magic whose third byte is the element type (0x08 = uint8) and fourth
byte the number of dimensions, then one big-endian uint32 per dimension, then the data.
Images are 0x00000803 (N, H, W), labels 0x00000801 (N,). Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_UINT8 = 0x08


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or .gz) into a uint8 numpy array of the header's shape.

    Raises:
        ValueError: one line naming the file when the magic number, element type, sizes or
            length are not what the format says.
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises these on a truncated or corrupt stream
        raise ValueError(f"{path}: not a readable IDX file ({err})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    zero, dtype, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zero != 0 or ndim == 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{magic:08x}")
    if dtype != _UINT8:
        raise ValueError(f"{path}: IDX element type 0x{dtype:02x}, expected 0x08 (uint8)")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header says {ndim} dimensions but the file ends early")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX dimensions {dims} need {expected} bytes, the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: str | Path, labels_path: str | Path,
                  num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read matching image and label files.

    Returns:
        images uint8 (N, 1, H, W) and labels int64 (N,).
    """
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}"
        )
    if len(labels) and labels.max() >= num_classes:
        raise ValueError(
            f"{labels_path}: label {int(labels.max())} outside the {num_classes} classes"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1).contiguous()
    return x, torch.from_numpy(labels.astype(np.int64))


def find_idx_files(folder: Path, prefix: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of split `prefix` ("train" or "t10k") in `folder`, raw or
    gzip, or None when either is missing."""
    found = []
    for kind, nd in (("images", 3), ("labels", 1)):
        stem = f"{prefix}-{kind}-idx{nd}-ubyte"
        hit = next((folder / n for n in (f"{stem}.gz", stem) if (folder / n).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]
