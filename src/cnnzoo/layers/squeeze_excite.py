"""Squeeze-and-Excitation (Hu et al. 2018, "Squeeze-and-Excitation Networks", arXiv:1709.01507).

squeeze: global average pooling to one value per channel; excitation: FC (C -> C/r), ReLU,
FC (C/r -> C), sigmoid; the block's input is rescaled channel-wise by the result.
The two FC layers are 1x1 convolutions with bias on the pooled (N, C, 1, 1) tensor, which is
the same function as `nn.Linear` and the layout timm and torchvision store their weights in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """SE gate.

    Args:
        channels: channels of the tensor being rescaled.
        rd_channels: width of the bottleneck; default `channels // reduction`.
        reduction: the paper's r (16).
        act_layer: activation between the two FCs (ReLU in SENet, SiLU in EfficientNet).
        gate_layer: the gate (sigmoid).
    """

    def __init__(
        self,
        channels: int,
        rd_channels: int | None = None,
        *,
        reduction: int = 16,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        gate_layer: Callable[[], nn.Module] = nn.Sigmoid,
    ):
        super().__init__()
        if rd_channels is None:
            rd_channels = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = gate_layer()

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate in [0, 1], shape (N, C, 1, 1)."""
        s = x.mean((2, 3), keepdim=True)  # squeeze: N x C x 1 x 1
        return self.gate(self.fc2(self.act(self.fc1(s))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excitation(x)
