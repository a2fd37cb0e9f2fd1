"""Geometric deformation of uint8 images for the deformable experiment: a rotation, a zoom
and Simard et al.'s elastic distortion (2003, ICDAR, "Best Practices for Convolutional Neural
Networks Applied to Visual Document Analysis"), all in one bilinear resampling.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from cnnzoo.data import ImageDataset


def elastic_displacement(n: int, size: tuple[int, int], alpha: float, sigma: float,
                         generator: torch.Generator) -> torch.Tensor:
    """Simard et al.'s elastic field: uniform [-1, 1] per pixel, Gaussian-smoothed
    (normalised kernel of `sigma` px, reflected borders), times `alpha`; (n, H, W, 2) in
    pixels, (dx, dy)."""
    h, w = size
    field = torch.rand(n * 2, 1, h, w, generator=generator) * 2 - 1
    if sigma > 0:
        radius = min(int(math.ceil(3 * sigma)), h - 1, w - 1)
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-t**2 / (2 * sigma**2))
        k = k / k.sum()
        field = F.pad(field, (radius, radius, radius, radius), mode="reflect")
        field = F.conv2d(field, k.view(1, 1, -1, 1))
        field = F.conv2d(field, k.view(1, 1, 1, -1))
    return (alpha * field).view(n, 2, h, w).permute(0, 2, 3, 1)


def deform_images(images: torch.Tensor, *, degrees: torch.Tensor, scale: torch.Tensor,
                  displacement: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate, zoom and elastically distort uint8 images (N, C, H, W) in one bilinear
    resampling (black outside); returns uint8.

    The output pixel p reads the input at A p + d(p): A the rotation/zoom of `rotate_scale`,
    d the elastic `displacement` (N, H, W, 2) in pixels, or none.
    """
    n, _, h, w = images.shape
    a = degrees * (math.pi / 180)
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if displacement is not None:
        # pixels -> normalised units (align_corners=False: 2 / size per pixel)
        grid = grid + displacement * torch.tensor([2 / w, 2 / h])
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def deformed_copy(ds: ImageDataset, params: dict[str, Any], seed: int) -> ImageDataset:
    """`ds` with every image deformed by its own random draw (seeded); labels and statistics
    unchanged."""
    g = torch.Generator().manual_seed(seed)
    n = len(ds)
    degrees = (2 * torch.rand(n, generator=g) - 1) * params["rotate_degrees"]
    lo, hi = params["scale"]
    scale = lo + (hi - lo) * torch.rand(n, generator=g)
    disp = elastic_displacement(n, ds.image_size, params["elastic_alpha"],
                                params["elastic_sigma"], g)
    images = deform_images(ds.images, degrees=degrees, scale=scale, displacement=disp)
    return ImageDataset(images, ds.labels.clone(), ds.classes, ds.mean, ds.std,
                        f"{ds.name} (deformed)")


def zoomed(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom only (no rotation, no distortion), uint8 in and out."""
    n = images.shape[0]
    return deform_images(images, degrees=torch.zeros(n), scale=torch.full((n,), factor))
