"""Effective-receptive-field heatmaps and their fits: the nets measured (plain, residual and
deformable CIFAR ResNets) and their theoretical fields, the mosaic inputs, the gradient maps
of a centre unit (Luo et al. 2016), the radii and shape fits that summarise one map, and its
picture.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnzoo.experiments.base import pyplot
from cnnzoo.experiments.common import mean_std
from cnnzoo.models.resnet_cifar import CifarResNet, make_deformable
from cnnzoo.profile.receptive_field import receptive_field

MASS = 0.95  # r95: the radius of the disc that holds this share of a heatmap's mass
EDGE = 2  # px: gradient mass this close to the canvas border means the field is cut off


def build(family: str, depth: int, width: int, deform_layers: int, in_chans: int,
          num_classes: int, seed: int) -> CifarResNet:
    """A CIFAR ResNet of `family`: "plain" (no shortcuts), "residual", or "deformable" (the
    residual net with its last `deform_layers` 3x3 convs deformable, zero offsets), seeded."""
    torch.manual_seed(seed)
    model = CifarResNet(depth, base_width=width, in_chans=in_chans, num_classes=num_classes,
                        shortcut=family != "plain")
    if family == "deformable":
        make_deformable(model, deform_layers)
    return model


def theoretical_field(model: nn.Module, in_chans: int, side: int) -> dict[str, Any]:
    """The theoretical field of the final feature map's centre unit on a side x side input:
    rf and jump (px), the unit's centre in the input (px), input_dependent, and clipped (the
    field is wider than the input)."""
    f = receptive_field(model, (in_chans, side, side)).features
    unit = (f.output_shape[2] // 2, f.output_shape[3] // 2)
    return {"rf": f.rf[0], "jump": f.jump[0], "input_dependent": f.input_dependent,
            "centre": tuple(f.start[a] + f.jump[a] * unit[a] for a in (0, 1)),
            "clipped": f.rf[0] > side}


def mosaic(images: torch.Tensor, count: int, side: int, generator: torch.Generator
           ) -> torch.Tensor:
    """`count` uint8 canvases (count, C, side, side) tiled with random `images` (N, C, t, t)
    at a random phase, so no position of the canvas is special."""
    n, c, t, _ = images.shape
    k = math.ceil(side / t) + 1
    idx = torch.randint(n, (count, k * k), generator=generator)
    tiles = images[idx].view(count, k, k, c, t, t).permute(0, 3, 1, 4, 2, 5)
    big = tiles.reshape(count, c, k * t, k * t)
    dy, dx = torch.randint(t, (2,), generator=generator).tolist()
    return big[:, :, dy:dy + side, dx:dx + side].contiguous()


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor, batch: int = 16) -> None:
    """Batch-norm running statistics re-estimated on x (cumulative average), eval mode after."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(x), batch):
        model(x[start:start + batch])
    for m in norms:
        m.momentum = 0.1
    model.eval()


def erf_heatmaps(model: nn.Module, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """|d (centre unit of forward_features, summed over channels) / d input|, summed over
    input channels: (N, H, W), one map per image (eval mode: images do not interact)."""
    model.eval()
    maps = []
    for start in range(0, len(x), batch):
        xb = x[start:start + batch].clone().requires_grad_(True)
        feats = model.forward_features(xb)
        h, w = feats.shape[-2:]
        feats[:, :, h // 2, w // 2].sum().backward()
        maps.append(xb.grad.abs().sum(1))
    model.zero_grad(set_to_none=True)
    return torch.cat(maps)


def distances(shape: tuple[int, int], centre: tuple[float, float]) -> np.ndarray:
    ys, xs = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(ys - centre[0], xs - centre[1])


def mass_radius(heat: np.ndarray, centre: tuple[float, float], q: float = MASS) -> float:
    """Smallest radius (px, linear between pixel distances) around `centre` whose disc holds
    fraction q of the heatmap's mass."""
    d = distances(heat.shape, centre).ravel()
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(heat.ravel()[order])
    cum = cum / cum[-1]
    i = int(np.searchsorted(cum, q))
    if i == 0:
        return float(d[order[0]])
    d0, d1, c0, c1 = d[order[i - 1]], d[order[i]], cum[i - 1], cum[i]
    return float(d0 + (d1 - d0) * (q - c0) / max(c1 - c0, 1e-12))


def second_moment_radius(heat: np.ndarray, centre: tuple[float, float]) -> float:
    """sqrt(E|p - centre|^2) under the heatmap as a distribution (sqrt(2) sigma for a
    Gaussian)."""
    d = distances(heat.shape, centre)
    return float(np.sqrt((heat * d**2).sum() / heat.sum()))


def r_squared(sse: float, sst: float, noise: float = 0.0) -> float:
    """1 - SSE / SST, both less the squared error that pixel noise alone gives (`noise`, the
    summed variance of the mean heatmap): a finite number of images caps the plain R^2 below
    1 whatever the shape, and the question is the shape. NaN when noise explains everything."""
    if sst - noise <= 0:
        return math.nan
    return float(1 - max(sse - noise, 0.0) / (sst - noise))


def fit_gaussian(heat: np.ndarray, centre: tuple[float, float], noise: float = 0.0
                 ) -> dict[str, float]:
    """Least-squares A exp(-dy^2 / 2 sy^2 - dx^2 / 2 sx^2) centred at `centre`: sigmas by
    grid search (A in closed form for each), and R^2 against the heatmap (see `r_squared`)."""
    h, w = heat.shape
    sig = np.geomspace(0.5, max(h, w), 120)
    gy = np.exp(-((np.arange(h) - centre[0])[None] ** 2) / (2 * sig[:, None] ** 2))  # (S, H)
    gx = np.exp(-((np.arange(w) - centre[1])[None] ** 2) / (2 * sig[:, None] ** 2))
    num = gy @ heat @ gx.T  # <heat, gy_i (x) gx_j>
    den = np.outer((gy**2).sum(1), (gx**2).sum(1))
    gain = num**2 / den  # reduction of the squared error
    i, j = np.unravel_index(np.argmax(gain), gain.shape)
    sst = ((heat - heat.mean()) ** 2).sum()
    sse = (heat**2).sum() - gain[i, j]
    return {"sigma_y": float(sig[i]), "sigma_x": float(sig[j]), "r2": r_squared(sse, sst, noise)}


def fit_square(heat: np.ndarray, centre: tuple[float, float], noise: float = 0.0
               ) -> dict[str, float]:
    """Least-squares uniform square (value A inside, 0 outside) centred at `centre`: the
    side (odd, px) and R^2; what a theoretical-field-shaped ERF would look like."""
    d = np.maximum(*np.abs(np.mgrid[:heat.shape[0], :heat.shape[1]]
                           - np.array(centre).reshape(2, 1, 1)))
    order = np.argsort(d.ravel(), kind="stable")
    dd = d.ravel()[order]
    cum = np.cumsum(heat.ravel()[order])
    ends = np.searchsorted(dd, np.unique(dd), side="right")  # pixels within each half-side
    gain = cum[ends - 1] ** 2 / ends  # best A = mean inside; SSE drops by sum^2 / count
    k = int(np.argmax(gain))
    sst = ((heat - heat.mean()) ** 2).sum()
    sse = (heat**2).sum() - gain[k]
    return {"side": float(2 * np.unique(dd)[k] + 1), "r2": r_squared(sse, sst, noise)}


def sqrt_fit(x: list[float], y: list[float]) -> dict[str, float]:
    """y = a sqrt(x) + b by least squares: a, b and R^2."""
    sx, yy = np.sqrt(np.asarray(x, float)), np.asarray(y, float)
    a, b = np.polyfit(sx, yy, 1)
    sst = ((yy - yy.mean()) ** 2).sum()
    sse = ((yy - (a * sx + b)) ** 2).sum()
    return {"a": float(a), "b": float(b), "r2": float(1 - sse / sst) if sst > 0 else 1.0}


def power_fit(x: list[float], y: list[float]) -> dict[str, float]:
    """y = c x^a by least squares in log-log: exponent a and R^2 (of the logs)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    a, b = np.polyfit(lx, ly, 1)
    resid = ly - (a * lx + b)
    sst = ((ly - ly.mean()) ** 2).sum()
    return {"exponent": float(a), "coef": float(np.exp(b)),
            "r2": float(1 - (resid**2).sum() / sst) if sst > 0 else 1.0}


def heatmap_stats(maps: torch.Tensor, centre: tuple[float, float], rf_side: float,
                  bootstrap: int, seed: int) -> dict[str, Any]:
    """Every number of one net's ERF, from its per-image heatmaps (N, H, W)."""
    per_image = maps.double().numpy()
    total = per_image.mean(0).sum()
    heat = per_image.mean(0) / total
    # summed variance of the mean heatmap's pixels (same normalisation): the pixel noise
    noise = float(per_image.var(0, ddof=1).sum() / len(per_image) / total**2) \
        if len(per_image) > 1 else 0.0
    rng = np.random.default_rng(seed)
    boots = [mass_radius(per_image[rng.integers(0, len(per_image), len(per_image))].mean(0),
                         centre) for _ in range(bootstrap)]
    r95 = mass_radius(heat, centre)
    radii = [second_moment_radius(m, centre) for m in per_image if m.sum() > 0]
    m, s = mean_std(radii)
    border = np.ones_like(heat, dtype=bool)
    border[EDGE:-EDGE, EDGE:-EDGE] = False
    return {
        "r95": r95, "r95_se": float(np.std(boots, ddof=1)) if bootstrap > 1 else 0.0,
        # mass at the canvas border: the field reaches past the input, r95 is a lower bound
        "edge_mass": float(heat[border].sum()),
        "r50": mass_radius(heat, centre, 0.5), "ratio": 2 * r95 / rf_side,
        "gauss": fit_gaussian(heat, centre, noise), "square": fit_square(heat, centre, noise),
        "per_image_radius_cv": s / m if m > 0 else math.nan, "heat": heat,
    }


def draw_heatmap(ax: Any, heat: np.ndarray, t: dict[str, Any], r95: float, title: str) -> None:
    """One heatmap, scaled to its peak, with the theoretical field `t` (dashed square) and the
    disc of radius r95."""
    plt = pyplot()
    ax.imshow(heat / heat.max(), cmap="inferno", vmin=0, vmax=1)
    cy, cx = t["centre"]
    half = (t["rf"] - 1) / 2
    ax.add_patch(plt.Rectangle((cx - half - 0.5, cy - half - 0.5), t["rf"], t["rf"],
                               fill=False, ec="cyan", lw=1, ls="--"))
    ax.add_patch(plt.Circle((cx, cy), r95, fill=False, ec="lime", lw=1))
    ax.set_xlim(-0.5, heat.shape[1] - 0.5)
    ax.set_ylim(heat.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
