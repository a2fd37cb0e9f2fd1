"""The gradient-flow experiment's instruments: per-layer gradient norms of a net on one batch
(float64, so nothing underflows), and conv-output stds through a plain ReLU stack under an init.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("he-fan-in", "he-fan-out", "xavier", "pytorch-default")


def gradient_profile(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Per conv layer, in forward order: |d loss / d weight| and |d loss / d output| (L2).

    Runs on a float64 copy in train mode (BN on batch statistics, as in training); `model`
    is not changed.
    """
    net = copy.deepcopy(model).double().train()
    for m in net.modules():  # an in-place ReLU would overwrite the conv outputs we keep
        if isinstance(m, nn.ReLU):
            m.inplace = False
    convs: list[nn.Conv2d] = []
    outputs: list[torch.Tensor] = []

    def keep(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        convs.append(module)
        outputs.append(output)

    hooks = [m.register_forward_hook(keep) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        loss = F.cross_entropy(net(x.double()), y)
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(loss, [c.weight for c in convs] + outputs)
    n = len(convs)
    return {"loss": loss.item(),
            "weight_grad": [g.norm().item() for g in grads[:n]],
            "output_grad": [g.norm().item() for g in grads[n:]]}


def attenuation(norms: list[float]) -> float:
    """First layer's gradient norm over the last layer's (inf when the last is 0)."""
    return norms[0] / norms[-1] if norms[-1] > 0 else math.inf


def depth_trend(by_depth: dict[int, float]) -> float:
    """A(deepest) / A(shallowest)."""
    depths = sorted(by_depth)
    return by_depth[depths[-1]] / by_depth[depths[0]]


def geo_mean(values: list[float]) -> float:
    """Geometric mean; a zero or infinite value decides it (min of the zeros, or inf)."""
    if any(v <= 0 or math.isinf(v) for v in values):
        return min(values) if min(values) <= 0 else math.inf
    return math.exp(sum(math.log(v) for v in values) / len(values))


def init_conv(conv: nn.Conv2d, init: str) -> None:
    """Set a conv's weights by one of INITS."""
    if init == "he-fan-in":
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    elif init == "he-fan-out":
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    elif init == "xavier":
        nn.init.xavier_normal_(conv.weight)
    elif init == "pytorch-default":
        conv.reset_parameters()
    else:
        raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")


@torch.no_grad()
def activation_stds(x: torch.Tensor, depth: int, width: int, init: str) -> list[float]:
    """Std of each conv's output in a stack of `depth` 3x3 convs (no bias) with ReLU between."""
    stds = []
    for _ in range(depth):
        # float32 is enough: the default init's std falls by ~1e-20 over 50 layers, far
        # above float32's smallest normal number (1e-38).
        conv = nn.Conv2d(x.shape[1], width, 3, padding=1, bias=False)
        init_conv(conv, init)
        pre = conv(x)
        stds.append(pre.std().item())
        x = F.relu(pre)
    return stds


def valid_tap_fraction(height: int, width: int, kernel: int = 3) -> float:
    """Mean over output positions of the fraction of a kernel's taps inside the image, for a
    stride-1 conv zero-padded by kernel // 2 (the taps on padding see zeros)."""
    pad = kernel // 2

    def per_axis(n: int) -> float:
        inside = sum(min(i + pad, n - 1) - max(i - pad, 0) + 1 for i in range(n))
        return inside / (n * kernel)

    return per_axis(height) * per_axis(width)


def log_linear_fit(values: list[float]) -> tuple[float, float]:
    """Least-squares line through (i, ln v_i): (exp(slope), R²)."""
    ys = torch.tensor([math.log(v) for v in values], dtype=torch.float64)
    xs = torch.arange(len(ys), dtype=torch.float64)
    xc, yc = xs - xs.mean(), ys - ys.mean()
    slope = float((xc * yc).sum() / (xc * xc).sum())
    residual = yc - slope * xc
    total = float((yc * yc).sum())
    r2 = 1.0 - float((residual * residual).sum()) / total if total > 0 else 1.0
    return math.exp(slope), r2
