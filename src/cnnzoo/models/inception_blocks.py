"""The Inception module and its parts: Table 1's rows, Fig. 2's two modules, Sec. 5's head.

Szegedy et al. 2015, "Going Deeper with Convolutions", arXiv:1409.4842
(https://arxiv.org/abs/1409.4842). `googlenet.py` stacks them into the network.

- `InceptionSpec` / `GOOGLENET_TABLE_1`: the branch widths of each Inception row of Table 1;
  `scaled(spec, d)` divides them by d (at least 1 channel) for narrow nets.
- `Inception`: the module with dimension reductions (Fig. 2b), torchvision's names.
- `NaiveInception`: the module without them (Fig. 2a), the baseline of the paper's cost
  argument (the inception experiment compares the two).
- `InceptionAux`: the auxiliary classifier on 4a and 4d.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from cnnzoo.layers import ConvNormAct

ConvBlock = Callable[..., nn.Module]  # (in_chs, out_chs, kernel_size, stride=1) -> module


@dataclass(frozen=True)
class InceptionSpec:
    """One row of Table 1: the output channels of each branch of an Inception module."""

    ch1x1: int  # "#1x1"
    ch3x3red: int  # "#3x3 reduce"
    ch3x3: int  # "#3x3"
    ch5x5red: int  # "#5x5 reduce"
    ch5x5: int  # "#5x5"
    pool_proj: int  # "pool proj"

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


# Table 1 of Szegedy et al. 2015, the Inception rows.
GOOGLENET_TABLE_1: dict[str, InceptionSpec] = {
    "3a": InceptionSpec(64, 96, 128, 16, 32, 32),  # 256 out, 28x28
    "3b": InceptionSpec(128, 128, 192, 32, 96, 64),  # 480
    "4a": InceptionSpec(192, 96, 208, 16, 48, 64),  # 512, 14x14
    "4b": InceptionSpec(160, 112, 224, 24, 64, 64),  # 512
    "4c": InceptionSpec(128, 128, 256, 24, 64, 64),  # 512
    "4d": InceptionSpec(112, 144, 288, 32, 64, 64),  # 528
    "4e": InceptionSpec(256, 160, 320, 32, 128, 128),  # 832
    "5a": InceptionSpec(256, 160, 320, 32, 128, 128),  # 832, 7x7
    "5b": InceptionSpec(384, 192, 384, 48, 128, 128),  # 1024
}


def scaled(spec: InceptionSpec, divisor: int) -> InceptionSpec:
    """A Table 1 row with every width divided by `divisor` (at least 1 channel)."""
    return InceptionSpec(*(max(1, w // divisor) for w in dataclasses.astuple(spec)))


class Inception(nn.Module):
    """Four parallel branches concatenated on channels (Fig. 2b): 1x1; 1x1 reduce then 3x3;
    1x1 reduce then 5x5; 3x3 max-pool then 1x1 projection.

    Names are torchvision's (`branch1`..`branch4`), so its weights load by the conv-unit
    renaming alone. `kernel_5x5` is 5 in the paper, 3 in torchvision.
    """

    def __init__(self, in_chs: int, spec: InceptionSpec, conv_block: ConvBlock, kernel_5x5: int):
        super().__init__()
        self.branch1 = conv_block(in_chs, spec.ch1x1, 1)
        self.branch2 = nn.Sequential(
            conv_block(in_chs, spec.ch3x3red, 1),
            conv_block(spec.ch3x3red, spec.ch3x3, 3),
        )
        self.branch3 = nn.Sequential(
            conv_block(in_chs, spec.ch5x5red, 1),
            conv_block(spec.ch5x5red, spec.ch5x5, kernel_5x5),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_chs, spec.pool_proj, 1),
        )
        self.out_channels = spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x))
        return torch.cat(branches, 1)


class NaiveInception(nn.Module):
    """Fig. 2a: 1x1, 3x3 and 5x5 convs straight on the input, and a 3x3 max-pool (stride 1)
    passed through unprojected; outputs in + #1x1 + #3x3 + #5x5 channels.

    Uses the #1x1, #3x3, #5x5 entries of a Table 1 row; the reduce and pool-proj entries
    belong to the reduced module only. `conv_block` defaults to the paper form's conv (bias,
    ReLU, no norm).
    """

    def __init__(self, in_chs: int, spec: InceptionSpec, conv_block: ConvBlock | None = None,
                 kernel_5x5: int = 5):
        super().__init__()
        conv_block = conv_block or partial(ConvNormAct, norm_layer=None)
        self.branch1 = conv_block(in_chs, spec.ch1x1, 1)
        self.branch2 = conv_block(in_chs, spec.ch3x3, 3)
        self.branch3 = conv_block(in_chs, spec.ch5x5, kernel_5x5)
        self.branch4 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True)
        self.out_channels = in_chs + spec.ch1x1 + spec.ch3x3 + spec.ch5x5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x))
        return torch.cat(branches, 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier (Sec. 5): average pool to 4x4, 1x1 conv to 128, FC 1024 + ReLU,
    dropout 0.7, FC to the classes; 128 and 1024 divided by `width_div`."""

    def __init__(self, in_chs: int, num_classes: int, conv_block: ConvBlock, pool: nn.Module,
                 dropout: float, width_div: int = 1):
        super().__init__()
        self.pool = pool
        self.conv = conv_block(in_chs, 128 // width_div, 1)
        self.fc1 = nn.Linear(128 // width_div * 4 * 4, 1024 // width_div)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(p=dropout)
        self.fc2 = nn.Linear(1024 // width_div, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x))  # N x 128/d x 4 x 4
        x = torch.flatten(x, 1)  # N x 2048/d
        x = self.dropout(self.relu(self.fc1(x)))
        return self.fc2(x)
