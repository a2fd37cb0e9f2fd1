"""SE-ResNet-18/34/50/101/152: ResNet with a Squeeze-and-Excitation gate in every block.

Hu, Shen, Albanie, Sun, Wu 2018, "Squeeze-and-Excitation Networks", arXiv:1709.01507
(https://arxiv.org/abs/1709.01507), Fig. 3 (SE-ResNet module).

The network is `resnet.ResNet` with `se_layer` plugged into its blocks: the SE gate
rescales the residual branch after its last norm and before the addition with the identity
("Squeeze and Excitation both act before summation with the identity branch"). State-dict
names are timm's (`layer1.0.se.fc1`, `layer1.0.se.fc2`), so `from_timm("seresnet50", sd)` is
the identity mapping.

Deviations from the paper:
- Everything `resnet.py` lists for the underlying ResNet (stride on the 3x3 conv of the
  Bottleneck, "ResNet v1.5"), as timm's `seresnet*` do. The paper's Caffe SE-ResNet-50 also
  strides the first 1x1.
- The reduced width is timm's `make_divisible(C / 16, 8)` with no 90% guard (round_limit=0),
  not the paper's C / r: it differs only where C / 16 < 8, i.e. the 64-channel blocks of
  SE-ResNet-18/34 (8 instead of 4).
"""

from __future__ import annotations

from torch import nn

from cnnzoo.layers import SqueezeExcite
from cnnzoo.models.registry import register_model
from cnnzoo.models.resnet import RESNET_LAYERS, ResNet

SE_REDUCTION = 16  # the paper's r ("We set r=16 in all our models")


def se_channels(channels: int, reduction: int = SE_REDUCTION, divisor: int = 8) -> int:
    """timm's `make_divisible(channels / reduction, divisor, round_limit=0)`.

    Nearest multiple of `divisor`, at least `divisor`; unlike `cnnzoo.layers.make_divisible`
    it never bumps up a value that rounding shrank by more than 10%.
    """
    v = channels / reduction
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def se_layer(channels: int) -> nn.Module:
    """The SE gate of one block: 1x1 conv fc1 (C -> se_channels(C)), ReLU, fc2, sigmoid."""
    return SqueezeExcite(channels, rd_channels=se_channels(channels))


class SEResNet(ResNet):
    """`ResNet` with `se_layer` in every block (see `ResNet` for the arguments)."""

    family = "senet"
    paper = "Hu et al. 2018, Squeeze-and-Excitation Networks, arXiv:1709.01507"


# One line each: the options are ResNet's keyword-only arguments (see `registry`).
@register_model
def se_resnet18(**kw) -> SEResNet:
    """SE-ResNet-18 (BasicBlock + SE, 2-2-2-2)."""
    return SEResNet(*RESNET_LAYERS[18], se_layer=se_layer, **kw)


@register_model
def se_resnet34(**kw) -> SEResNet:
    """SE-ResNet-34 (BasicBlock + SE, 3-4-6-3)."""
    return SEResNet(*RESNET_LAYERS[34], se_layer=se_layer, **kw)


@register_model
def se_resnet50(**kw) -> SEResNet:
    """SE-ResNet-50 (Bottleneck + SE, 3-4-6-3); timm `seresnet50`, 28,088,024 parameters."""
    return SEResNet(*RESNET_LAYERS[50], se_layer=se_layer, **kw)


@register_model
def se_resnet101(**kw) -> SEResNet:
    """SE-ResNet-101 (Bottleneck + SE, 3-4-23-3)."""
    return SEResNet(*RESNET_LAYERS[101], se_layer=se_layer, **kw)


@register_model
def se_resnet152(**kw) -> SEResNet:
    """SE-ResNet-152 (Bottleneck + SE, 3-8-36-3)."""
    return SEResNet(*RESNET_LAYERS[152], se_layer=se_layer, **kw)
