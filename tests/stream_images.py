"""A generated ImageFolder for the streaming tests: JPEGs of varied sizes (60-400 px, mixed
aspect ratios), a few grayscale, a few PNG; image i is in class c{i % classes}."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(root: Path, n: int = 200, classes: int = 4, *, sizes=(60, 400),
                      seed: int = 0) -> dict[str, str]:
    """Write the images; returns {relative path: class}."""
    rng = random.Random(seed)
    made = {}
    for i in range(n):
        cls = f"c{i % classes}"
        (root / cls).mkdir(parents=True, exist_ok=True)
        w, h = rng.randint(*sizes), rng.randint(*sizes)
        # smooth gradients plus a little noise: small files, like photographs
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 40 * (i % 6))], -1)
        noise = np.random.default_rng(i).integers(0, 30, (h, w, 3))
        img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        if i % 17 == 0:
            img = img.convert("L")
        name = f"{cls}/{i:04d}.{'png' if i % 23 == 0 else 'jpg'}"
        img.save(root / name, quality=90)
        made[name] = cls
    return made
