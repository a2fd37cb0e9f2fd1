"""The compound-scaling study's networks: B0-layout scalings scaled by phi (Eq. 3 of Tan & Le
2019), and single-dimension twins matched to each compound variant's MACs on a fixed grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from cnnzoo.models.efficientnet import ALPHA, BETA, GAMMA, CompoundScaling, EfficientNet, MBConv

GRID_STEP = 2 ** (1 / 8)  # width and depth multipliers are searched on this geometric grid
MAX_FACTOR = 16.0  # the largest width or depth multiplier (or resolution ratio) searched


@dataclass(frozen=True)
class Variant:
    """One network of the study.

    Attributes:
        method: "baseline", or the scaled dimension ("width", "depth", "resolution",
            "compound").
        step: 0 for the baseline, i for the i-th budget (the compound variant at phis[i-1]).
        scaling: its width / depth multipliers and input side.
        factor: the scaled dimension relative to the baseline (phi for compound).
    """

    method: str
    step: int
    scaling: CompoundScaling
    factor: float


def compound(base: CompoundScaling, phi: float) -> CompoundScaling:
    """`base` scaled by compound coefficient phi (Eq. 3): depth x alpha^phi, width x beta^phi,
    side x gamma^phi (rounded)."""
    return CompoundScaling(width_mult=base.width_mult * BETA**phi,
                           depth_mult=base.depth_mult * ALPHA**phi,
                           resolution=max(1, round(base.resolution * GAMMA**phi)))


def single(base: CompoundScaling, method: str, factor: float) -> CompoundScaling:
    """`base` with one dimension multiplied by `factor` (the side rounded to a pixel)."""
    if method == "width":
        return CompoundScaling(base.width_mult * factor, base.depth_mult, base.resolution)
    if method == "depth":
        return CompoundScaling(base.width_mult, base.depth_mult * factor, base.resolution)
    if method == "resolution":
        return CompoundScaling(base.width_mult, base.depth_mult,
                               max(1, round(base.resolution * factor)))
    raise ValueError(f"method: expected width, depth or resolution, got {method!r}")


def candidates(base: CompoundScaling, method: str) -> list[float]:
    """The factors searched for `method`, increasing: a 2^(1/8) grid for width and depth,
    every integer side for resolution, up to MAX_FACTOR."""
    if method == "resolution":
        r0 = base.resolution
        return [r / r0 for r in range(r0, int(r0 * MAX_FACTOR) + 1)]
    count = round(math.log(MAX_FACTOR) / math.log(GRID_STEP)) + 1
    return [GRID_STEP**k for k in range(count)]


def match(base: CompoundScaling, method: str, target: float,
          macs_of: Callable[[CompoundScaling], int]) -> float:
    """The factor of `method` whose MACs lie closest to `target` on a log scale.

    MACs never decrease along a dimension, so a binary search finds the first candidate at
    or above the target and compares it with the one before.
    """
    grid = candidates(base, method)
    lo, hi = 0, len(grid) - 1
    if macs_of(single(base, method, grid[hi])) < target:
        return grid[hi]  # the target is out of reach: the largest candidate
    while lo < hi:
        mid = (lo + hi) // 2
        if macs_of(single(base, method, grid[mid])) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = lo
    if lo > 0:
        above = abs(math.log(macs_of(single(base, method, grid[lo])) / target))
        below = abs(math.log(macs_of(single(base, method, grid[lo - 1])) / target))
        best = lo - 1 if below < above else lo
    return grid[best]


def plan(base: CompoundScaling, phis: Sequence[float],
         macs_of: Callable[[CompoundScaling], int]) -> list[Variant]:
    """The baseline, then per budget (one per phi) the compound variant and the width-,
    depth- and resolution-only variants matched to its MACs."""
    variants = [Variant("baseline", 0, base, 1.0)]
    for step, phi in enumerate(phis, start=1):
        scaled = compound(base, phi)
        variants.append(Variant("compound", step, scaled, float(phi)))
        target = macs_of(scaled)
        for method in ("width", "depth", "resolution"):
            factor = match(base, method, target, macs_of)
            variants.append(Variant(method, step, single(base, method, factor), factor))
    return variants


def build(scaling: CompoundScaling, *, in_chans: int, num_classes: int) -> EfficientNet:
    """The B0-layout network at `scaling` (B0's stride-2 stem; no dropout, no drop path).

    The last norm of every residual MBConv starts at zero (Goyal et al. 2017,
    arXiv:1706.02677), so each block starts as the identity: with a few hundred SGD steps,
    a deep variant would otherwise lose to its own harder start rather than to its shape.
    """
    model = EfficientNet(scaling, drop_rate=0.0, drop_path_rate=0.0, num_classes=num_classes,
                         in_chans=in_chans)
    for block in model.modules():
        if isinstance(block, MBConv) and block.use_residual:
            nn.init.zeros_(block.project[1].weight)  # project = conv, norm (no activation)
    return model
