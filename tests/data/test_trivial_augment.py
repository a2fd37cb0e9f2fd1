"""TrivialAugment Wide (cnnzoo.data.trivial_augment) on images made here."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from cnnzoo.data.trivial_augment import N_BINS, OPS, SPACE, apply_op, draw


def coordinate_image(h: int = 48, w: int = 64) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 3 + 20, y * 4 + 20, np.full_like(x, 99)],
                                    axis=2).astype(np.uint8))


def test_the_wide_space_has_torchvisions_14_ops_and_ranges():
    assert len(OPS) == 14
    assert SPACE["posterize"][0][0] == 8 and SPACE["posterize"][0][-1] == 2  # bits
    assert SPACE["solarize"][0][0] == 255 and SPACE["solarize"][0][-1] == 0  # threshold
    assert SPACE["rotate"][0][-1] == 135 and SPACE["translate_x"][0][-1] == 32
    assert all(m is None or len(m) == N_BINS == 31 for m, _ in SPACE.values())


@pytest.mark.parametrize("op", OPS)
def test_every_op_keeps_size_and_mode_and_the_non_identity_ones_change_the_image(op):
    # Noise in 30..200: sharpening changes it (not a linear ramp), autocontrast stretches it.
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(30, 201, (48, 64, 3), dtype=np.uint8))
    magnitudes, _ = SPACE[op]
    magnitude = 0.0 if magnitudes is None else float(magnitudes[N_BINS // 2])
    out = apply_op(img, op, magnitude)
    assert out.size == img.size and out.mode == "RGB"
    same = (np.asarray(out) == np.asarray(img)).all()
    assert same == (op == "identity")


def test_translate_x_shifts_the_content_and_fills_black():
    img = coordinate_image()
    out = np.asarray(apply_op(img, "translate_x", 5.0))
    src = np.asarray(img)
    assert (out[:, 5:] == src[:, :-5]).all() and (out[:, :5] == 0).all()


def test_ops_are_drawn_uniformly_and_signed_magnitudes_with_both_signs():
    rng = np.random.default_rng(0)
    draws = [draw(rng) for _ in range(2800)]
    counts = Counter(op for op, _ in draws)
    assert set(counts) == set(OPS)
    assert all(abs(c - 200) < 60 for c in counts.values())  # sd ~ 13.7 per op
    signed = [m for op, m in draws if SPACE[op][1] and m != 0]
    assert abs(np.mean([m < 0 for m in signed]) - 0.5) < 0.05
    assert all(m >= 0 for op, m in draws if not SPACE[op][1])
