"""Per-sample decoding and the named augmentation recipes, run in DataLoader worker processes
on the encoded JPEG/PNG bytes of a streamed data set.

A recipe turns (bytes, source, rng) into a uint8 (3, size, size) tensor. Normalisation is not
done here: like the in-memory path, the training side converts and normalises whole uint8
batches on the device, with the preset's `mean` and `std` (a uint8 batch is a quarter of the
bytes of a float one to collate and move).

Decoding. JPEGs go through `simplejpeg` (libjpeg-turbo) when it is installed (the `fast-jpeg`
extra), 1.1-1.4x faster than Pillow on 400x350 quality-90 JPEGs (quiet and loaded machine,
benchmarks/decode_throughput.py); both run libjpeg-turbo's default integer DCT with fancy
upsampling, so they give identical pixels on those images (tests/data/test_recipe.py allows
a difference of 2 levels, for builds of libjpeg-turbo whose SIMD code differs; CMYK JPEGs,
which each library converts to RGB its own way, differ by 1). Everything else (PNG, and any
JPEG simplejpeg rejects) goes to Pillow. Grayscale, palette and RGBA/LA images become RGB;
alpha is dropped, not composited, as torchvision's ImageFolder loader does with
`convert("RGB")`.

Recipes (`PRESETS`):
- "imagenet", train: RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) as torchvision
  defines it (up to 10 draws of area fraction and log-uniform aspect ratio; a box that does not
  fit is re-drawn; after 10 misses, the largest centred box within the ratio range), resized
  bilinearly with antialiasing (crop, then resize, as torchvision's PIL path; torch's uint8
  kernel gives Pillow's pixels within 1 level, see `resize`), then a horizontal flip with
  probability 1/2.
  Eval: resize the shorter side to 256 (the longer side truncated, as torchvision's Resize
  does), then the centred 224 crop (offset rounded, as torchvision's CenterCrop does). For
  other sizes the eval resize keeps the ratio 224/256.
- "imagenet-ta": "imagenet" with TrivialAugment Wide after the flip (train only).
- "cifar" (32x32 images, He et al. 2015, arXiv:1512.03385, section 4.2): train pads 4 zero
  pixels on each side, takes a random size x size crop and flips with probability 1/2; eval
  returns the image as it is. An image that is not size x size is first resized to it.

Not done, and why. Pillow's `draft()` (decoding a JPEG at 1/2, 1/4 or 1/8 scale in the DCT
domain) can only serve a crop at least twice the output on both sides (448 px for 224); on
ImageNet-like 400x350 images no RandomResizedCrop box, nor the eval resize to 256, is that
large, so it would never apply; where it does, it swaps the antialiased bilinear filter for
libjpeg's DCT scaling, a different low-pass from the one the recipe states.

TrivialAugment Wide (cnnzoo.data.trivial_augment) is the separate preset "imagenet-ta": on
the benchmark CPU (AMD EPYC, Zen 5) it adds 0.2 ms to the recipe's 0.9 ms per image (+23%;
benchmarks/decode_throughput.py prints both), modest but not free, so the plain "imagenet"
preset stays without it.

Determinism: every random choice comes from the `rng` passed in, in a fixed order (crop box,
flip, then TrivialAugment's op, bin and sign), so a sample's augmentation is a pure function of
the caller's seed for it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnzoo.data.trivial_augment import trivial_augment

try:  # the optional fast JPEG decoder (pip install cnnzoo[fast-jpeg])
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CIFAR-10's training set, per channel in [0, 1] units.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

_JPEG_MAGIC = b"\xff\xd8"

Transform = Callable[[bytes, str, np.random.Generator], torch.Tensor]


# ----------------------------------------------------------------------------------- decoding

def decode_pil(data: bytes, source: str) -> np.ndarray:
    """Decode with Pillow to (H, W, 3) uint8 RGB; ValueError naming `source` if it fails."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img if img.mode == "RGB" else img.convert("RGB")
            return np.array(img)  # writable, as torch.from_numpy wants
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError and "image file is truncated" are OSErrors.
        reason = " ".join(str(err).split())
        raise ValueError(f"{source}: cannot decode image ({reason})") from None


def decode(data: bytes, source: str) -> np.ndarray:
    """Decode JPEG/PNG bytes to (H, W, 3) uint8 RGB, with simplejpeg for JPEGs if installed.

    Raises:
        ValueError: one line naming `source`, if the bytes are not a readable image.
    """
    if simplejpeg is not None and data[:2] == _JPEG_MAGIC:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # not for simplejpeg: Pillow decodes it or names the error
    return decode_pil(data, source)


def fast_decoder() -> str | None:
    """Name and version of the fast JPEG decoder in use, None when Pillow does everything."""
    return None if simplejpeg is None else f"simplejpeg {simplejpeg.__version__}"


# ------------------------------------------------------------------------------ geometry

def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box for an image of height x width.

    Returns:
        (top, left, h, w) in pixels.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))  # w / h
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Ten misses (an extreme aspect ratio, or scale near 1): the whole image, trimmed to the
    # ratio range, centred.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, h, w) uint8 tensor, bilinear with antialiasing.

    torch's uint8 kernel for this (the one torchvision's tensor transforms use) implements
    Pillow's bilinear filter, i.e. torchvision's PIL path: within 1 level of Pillow's pixels
    (rounding; most are equal), at ~1/3 of Pillow's time for a 224x224 output. The result
    keeps channels-last strides; callers make it contiguous once at the end.
    """
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) over HWC memory
    if tuple(x.shape[-2:]) == size:
        return x[0]
    x = x.contiguous(memory_format=torch.channels_last)  # a crop view has the parent's strides
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def shorter_side_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) with the shorter side `side` and the longer int(side * long / short), as
    torchvision's Resize(int) computes it."""
    if width <= height:
        return int(side * height / width), side
    return side, int(side * width / height)


def center_crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's CenterCrop(size) in an image at least size x size."""
    return round((height - size) / 2), round((width - size) / 2)


def _finish(x: torch.Tensor, flip: bool) -> torch.Tensor:
    """(3, h, w) of any strides -> contiguous, flipped left-right if asked."""
    return (x.flip(-1) if flip else x).contiguous()


# ------------------------------------------------------------------------------ recipes
# Small classes rather than closures, so that DataLoader workers started with "spawn" or
# "forkserver" can pickle them.

@dataclass(frozen=True)
class ImageNetTrain:
    """RandomResizedCrop(size, scale, ratio) + horizontal flip (p = 1/2), then TrivialAugment
    Wide if asked (in that order, as torchvision's ImageNet reference recipe)."""

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    trivial_augment: bool = False

    def __call__(self, data: bytes, source: str, rng: np.random.Generator) -> torch.Tensor:
        pixels = decode(data, source)
        top, left, h, w = random_resized_crop_box(*pixels.shape[:2], rng, self.scale, self.ratio)
        out = resize(pixels[top:top + h, left:left + w], (self.size, self.size))
        flip = rng.random() < 0.5
        if not self.trivial_augment:
            return _finish(out, flip)
        hwc = (out.flip(-1) if flip else out).permute(1, 2, 0).numpy()
        img = trivial_augment(Image.fromarray(hwc), rng)
        return _finish(torch.from_numpy(np.array(img)).permute(2, 0, 1), flip=False)


@dataclass(frozen=True)
class ImageNetEval:
    """Resize the shorter side to `resize`, then the centred size x size crop."""

    size: int = 224
    resize: int = 256

    def __call__(self, data: bytes, source: str, rng: np.random.Generator) -> torch.Tensor:
        pixels = decode(data, source)
        x = resize(pixels, shorter_side_size(*pixels.shape[:2], self.resize))
        top, left = center_crop_box(*x.shape[-2:], self.size)
        return _finish(x[:, top:top + self.size, left:left + self.size], flip=False)


@dataclass(frozen=True)
class CifarTrain:
    """Zero-pad `padding` pixels per side, random size x size crop, horizontal flip (p = 1/2)."""

    size: int = 32
    padding: int = 4

    def __call__(self, data: bytes, source: str, rng: np.random.Generator) -> torch.Tensor:
        x = resize(decode(data, source), (self.size, self.size))
        p = self.padding
        padded = F.pad(x, (p, p, p, p))
        top, left = (int(v) for v in rng.integers(0, 2 * p + 1, size=2))
        out = padded[:, top:top + self.size, left:left + self.size]
        return _finish(out, flip=rng.random() < 0.5)


@dataclass(frozen=True)
class CifarEval:
    """The image as it is (resized to size x size if it is not already)."""

    size: int = 32

    def __call__(self, data: bytes, source: str, rng: np.random.Generator) -> torch.Tensor:
        return _finish(resize(decode(data, source), (self.size, self.size)), flip=False)


@dataclass(frozen=True)
class Preset:
    """A named recipe: its default output side and the statistics its batches are normalised
    with on the device ((x / 255 - mean) / std, per channel)."""

    name: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: Callable[..., Transform]  # called with size=
    eval: Callable[..., Transform]


PRESETS: dict[str, Preset] = {
    "imagenet": Preset("imagenet", 224, IMAGENET_MEAN, IMAGENET_STD, ImageNetTrain, ImageNetEval),
    "imagenet-ta": Preset("imagenet-ta", 224, IMAGENET_MEAN, IMAGENET_STD,
                          partial(ImageNetTrain, trivial_augment=True), ImageNetEval),
    "cifar": Preset("cifar", 32, CIFAR_MEAN, CIFAR_STD, CifarTrain, CifarEval),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; ValueError naming the known ones otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def make_transform(preset: str, train: bool, size: int | None = None) -> Transform:
    """The per-sample transform of a preset, for DataLoader workers.

    Args:
        preset: a name in PRESETS ("imagenet", "imagenet-ta", "cifar").
        train: the augmented training transform, else the deterministic evaluation one.
        size: output side; None = the preset's own (224 for imagenet, 32 for cifar). For
            imagenet eval the shorter side is first resized to round(size * 256 / 224).

    Returns:
        A picklable callable (data: bytes, source: str, rng: numpy.random.Generator) ->
        uint8 tensor (3, size, size). `source` names the sample in error messages; the rng is
        the only source of randomness (eval transforms do not use it).
    """
    p = get_preset(preset)
    size = p.size if size is None else size
    if size < 1:
        raise ValueError(f"make_transform: size must be >= 1 pixel, got {size}")
    if train:
        return p.train(size=size)
    if p.eval is ImageNetEval:
        return ImageNetEval(size=size, resize=round(size * 256 / 224))
    return p.eval(size=size)
