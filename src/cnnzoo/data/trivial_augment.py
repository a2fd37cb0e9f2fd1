"""TrivialAugment Wide on one Pillow image, with every choice drawn from a numpy Generator.

Müller & Hutter 2021, "TrivialAugment: Tuning-free Yet State-of-the-Art Data Augmentation"
(arXiv:2103.10158): per image, one op drawn uniformly from 14 and one of 31 magnitude bins
drawn uniformly, its sign flipped with probability 1/2 for the signed ops. The "wide" ranges and
the op definitions are torchvision's TrivialAugmentWide (the one its ImageNet recipe uses):
nearest-neighbour resampling, black fill, shears about the top-left corner. Geometric signs are
conventions only: each signed magnitude is drawn with both signs, so the distribution of images
is the same either way.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

N_BINS = 31


def _bins(lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, hi, N_BINS)


# op name -> (magnitudes per bin, signed); None = the op takes no magnitude.
SPACE: dict[str, tuple[np.ndarray | None, bool]] = {
    "identity": (None, False),
    "shear_x": (_bins(0.0, 0.99), True),  # tan of the shear angle
    "shear_y": (_bins(0.0, 0.99), True),
    "translate_x": (_bins(0.0, 32.0), True),  # pixels
    "translate_y": (_bins(0.0, 32.0), True),
    "rotate": (_bins(0.0, 135.0), True),  # degrees
    "brightness": (_bins(0.0, 0.99), True),  # enhancement factor 1 + m
    "color": (_bins(0.0, 0.99), True),
    "contrast": (_bins(0.0, 0.99), True),
    "sharpness": (_bins(0.0, 0.99), True),
    "posterize": (8 - np.round(np.arange(N_BINS) / ((N_BINS - 1) / 6)), False),  # bits 8..2
    "solarize": (_bins(255.0, 0.0), False),  # threshold
    "autocontrast": (None, False),
    "equalize": (None, False),
}
OPS = tuple(SPACE)
_ENHANCE = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color,
            "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness}


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    # PIL's AFFINE data maps each output pixel (x, y) to the input (a x + b y + c, d x + e y + f).
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.NEAREST, fillcolor=0)


def apply_op(img: Image.Image, op: str, magnitude: float) -> Image.Image:
    """One TrivialAugment op on an RGB image."""
    if op == "identity":
        return img
    if op == "shear_x":
        return _affine(img, (1, magnitude, 0, 0, 1, 0))
    if op == "shear_y":
        return _affine(img, (1, 0, 0, magnitude, 1, 0))
    if op == "translate_x":
        return _affine(img, (1, 0, -int(magnitude), 0, 1, 0))
    if op == "translate_y":
        return _affine(img, (1, 0, 0, 0, 1, -int(magnitude)))
    if op == "rotate":
        return img.rotate(magnitude, resample=Image.NEAREST, fillcolor=0)
    if op in _ENHANCE:
        return _ENHANCE[op](img).enhance(1.0 + magnitude)
    if op == "posterize":
        return ImageOps.posterize(img, int(magnitude))
    if op == "solarize":
        return ImageOps.solarize(img, magnitude)
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    raise ValueError(f"unknown TrivialAugment op {op!r}; known: {', '.join(OPS)}")


def draw(rng: np.random.Generator) -> tuple[str, float]:
    """(op, signed magnitude). Always three draws (op, bin, sign), so that the stream a caller
    continues with does not depend on which op came up."""
    op = OPS[int(rng.integers(len(OPS)))]
    bin_, negative = int(rng.integers(N_BINS)), bool(rng.integers(2))
    magnitudes, signed = SPACE[op]
    magnitude = 0.0 if magnitudes is None else float(magnitudes[bin_])
    return op, -magnitude if signed and negative else magnitude


def trivial_augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """TrivialAugment Wide: one random op at a random magnitude."""
    op, magnitude = draw(rng)
    return apply_op(img, op, magnitude)

