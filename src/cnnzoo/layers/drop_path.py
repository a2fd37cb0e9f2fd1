"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth", arXiv:1603.09382).

In training, each sample's residual branch is dropped with probability `p` and the kept ones
are scaled by 1 / (1 - p), so the expected output equals the eval-mode output (identity).
"""

from __future__ import annotations

import torch
from torch import nn


def _check_p(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"DropPath: expected a drop probability in [0, 1), got {p}")


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of `x` with probability `p` and scale the rest by 1 / (1 - p).

    Args:
        x: (N, ...) the residual branch, one draw per sample along dim 0.
        p: drop probability in [0, 1); p = 1 would divide by zero.
        training: identity when False.
    """
    _check_p(p)
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # one draw per sample
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        _check_p(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
