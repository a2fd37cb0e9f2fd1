"""The offsets of a net's deformable convolutions: what each predicts for an input, the
effective dilation they give a 3x3 filter (Dai et al. 2017, Table 2), where the stacked
layers sample (their Fig. 5), and how the dilation on the object's units follows its size
(scale elasticity) and differs from the background's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.data import ImageDataset
from cnnzoo.experiments._deformations import zoomed
from cnnzoo.experiments.common import mean_std

FOREGROUND = 0.1  # a pixel above 10% of full scale is part of the object


@torch.no_grad()
def offsets_of(model: nn.Module, paths: list[str], x: torch.Tensor) -> list[torch.Tensor]:
    """The offsets (N, 2 * 9, H, W) each deformable conv at `paths` predicts for input x."""
    found: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(p).conv_offset.register_forward_hook(
        lambda _m, _i, out, p=p: found.__setitem__(p, out.detach())) for p in paths]
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return [found[p] for p in paths]


def effective_dilation(offset: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Mean distance between horizontally and vertically adjacent sampling points of each
    output unit's k x k filter (Dai et al. Table 2), in input-grid units: (N, H, W).

    A regular (zero-offset, dilation-1) convolution gives exactly 1.
    """
    n, _, h, w = offset.shape
    off = offset.view(n, kernel, kernel, 2, h, w)  # taps row-major, (dy, dx)
    grid = torch.stack(torch.meshgrid(torch.arange(kernel), torch.arange(kernel),
                                      indexing="ij"), -1).to(offset)  # (k, k, 2)
    pts = grid.view(1, kernel, kernel, 2, 1, 1) + off
    horiz = (pts[:, :, 1:] - pts[:, :, :-1]).norm(dim=3)  # (N, k, k-1, H, W)
    vert = (pts[:, 1:] - pts[:, :-1]).norm(dim=3)
    total = horiz.sum((1, 2)) + vert.sum((1, 2))
    return total / (horiz[0, :, :, 0, 0].numel() + vert[0, :, :, 0, 0].numel())


def sampling_points(offsets: list[torch.Tensor], unit: tuple[int, int],
                    strides: list[int] | None = None) -> torch.Tensor:
    """The 9^L sampling points of output `unit` through L stacked 3x3 deformable layers
    (padding 1, dilation 1), in the first layer's input-grid coordinates (row, col).

    Args:
        offsets: each layer's offsets for one image, (18, H, W), first layer first.
        unit: (row, col) in the last layer's output.
        strides: each layer's stride (default all 1).
    """
    strides = strides or [1] * len(offsets)
    pts = torch.tensor([unit], dtype=torch.float32)  # (P, 2) in the last layer's output
    taps = torch.stack(torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij"),
                       -1).view(9, 2)
    for off, stride in zip(reversed(offsets), reversed(strides), strict=True):
        _, h, w = off.shape
        # the layer's offsets at (possibly fractional) output points: bilinear, border-clamped
        norm = torch.stack([pts[:, 1] / max(w - 1, 1), pts[:, 0] / max(h - 1, 1)], -1) * 2 - 1
        at = F.grid_sample(off[None], norm.view(1, 1, -1, 2), mode="bilinear",
                           padding_mode="border", align_corners=True)[0, :, 0]  # (18, P)
        delta = at.T.reshape(-1, 9, 2)  # (P, 9, (dy, dx))
        # eq. 2 of the paper: p0 + p_k + delta_k, p0 = output position * stride - padding
        pts = (pts[:, None] * stride - 1 + taps[None] + delta).reshape(-1, 2)
    return pts


def unit_masks(images: torch.Tensor, map_size: tuple[int, int]) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """(object, background) bool masks (N, h, w) of a feature map over uint8 images: the
    fraction of foreground pixels in each unit's cell >= 3/4, or 0.

    The map has stride j = H // h with unit i centred on pixel j i (padding (k - 1) / 2
    everywhere), so its cell is the j pixels [j i - j // 2, j i - j // 2 + j).
    """
    h, w = map_size
    j = images.shape[-2] // h
    fg = (images.float().mean(1, keepdim=True) > FOREGROUND * 255).float()
    fg = F.pad(fg, (j // 2, j, j // 2, j))  # zeros (background) beyond the image
    frac = F.avg_pool2d(fg, j)[:, 0, :h, :w]
    return frac >= 0.75, frac == 0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of values over mask (N, h, w) -> (N,), NaN where the mask is empty."""
    count = mask.sum((1, 2))
    total = (values * mask).sum((1, 2))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def dilation_map(model: nn.Module, paths: list[str], ds: ImageDataset,
                 images: torch.Tensor) -> torch.Tensor:
    """Effective dilation averaged over the deformable layers, (N, h, w), for uint8 images."""
    x = (images.float() / 255 - torch.tensor(ds.mean).view(1, -1, 1, 1)) \
        / torch.tensor(ds.std).view(1, -1, 1, 1)
    maps = [effective_dilation(o) for o in offsets_of(model, paths, x)]
    size = maps[-1].shape[-2:]
    return torch.stack([F.adaptive_avg_pool2d(m[:, None], size)[:, 0] for m in maps]).mean(0)


def scale_elasticity(model: nn.Module, paths: list[str], ds: ImageDataset,
                     images: torch.Tensor, scales: list[float]) -> dict[str, Any]:
    """Per image, slope of log(mean object-unit dilation) on log(zoom); mean and SE."""
    per_scale = []
    for s in scales:
        zoom = zoomed(images, s)
        dil = dilation_map(model, paths, ds, zoom)
        obj, _ = unit_masks(zoom, dil.shape[-2:])
        per_scale.append(masked_mean(dil, obj))
    d = torch.stack(per_scale, 1)  # (N, S)
    ok = torch.isfinite(d).all(1) & (d > 0).all(1)
    logs = torch.tensor(scales).log()
    lx = logs - logs.mean()
    slopes = ((d[ok].log() - d[ok].log().mean(1, keepdim=True)) * lx).sum(1) / (lx**2).sum()
    m, sd = mean_std(slopes.tolist())
    return {"scales": scales, "images": int(ok.sum()), "elasticity": m,
            "elasticity_se": sd / math.sqrt(max(int(ok.sum()), 1)),
            "dilation_by_scale": [_num(v) for v in d[ok].mean(0).tolist()],
            "dilation_by_scale_se": [_num(v) for v in
                                     (d[ok].std(0) / math.sqrt(max(int(ok.sum()), 1))).tolist()]}


def object_vs_background(model: nn.Module, paths: list[str], ds: ImageDataset,
                         images: torch.Tensor) -> dict[str, Any]:
    """Mean dilation on object and background units of the same images, paired."""
    dil = dilation_map(model, paths, ds, images)
    obj, bg = unit_masks(images, dil.shape[-2:])
    a, b = masked_mean(dil, obj), masked_mean(dil, bg)
    ok = torch.isfinite(a) & torch.isfinite(b)
    diff_m, diff_sd = mean_std((a[ok] - b[ok]).tolist())
    return {"images": int(ok.sum()), "object": _num(mean_std(a[ok].tolist())[0]),
            "background": _num(mean_std(b[ok].tolist())[0]), "difference": _num(diff_m),
            "difference_se": _num(diff_sd / math.sqrt(max(int(ok.sum()), 1)))}


def _num(v: float) -> float | None:
    return None if not math.isfinite(v) else round(float(v), 5)
