"""ResNet-18/34/50/101/152 for ImageNet, the torchvision way.

He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385 (https://arxiv.org/abs/1512.03385). Stages follow Table 1.

State-dict names are torchvision's (`conv1`, `bn1`, `layer1.0.conv1`,
`layer1.0.downsample.0/1`, `fc`), so a torchvision checkpoint loads with the identity mapping.

The blocks take injectable parts, so SE-ResNet (`senet.py`) and the deformable ResNets
(`deformable.py`) are this network with another part plugged in, not copies of it:
`norm_layer`, `se_layer` (applied to the residual branch after its last norm, before the
addition) and `conv_layer` (the factory of the 3x3 convs, one per stage).

Deviations from the paper:
- Bottleneck puts the stride on the 3x3 conv, not on the first 1x1 conv ("ResNet v1.5",
  as torchvision and timm do); the paper strides the first 1x1. Same parameters, but that
  1x1 now runs at the block's input resolution in the three downsampling blocks: ResNet-50
  costs 4.089 GMACs instead of 3.858 (FlopCounterMode at 224x224), for about +0.5% top-1 per
  NVIDIA's ResNet-50 v1.5 notes, which torchvision cites.
- Shortcuts that change shape are projections (the paper's option B) everywhere; the
  paper's ImageNet ResNet-18/34 in Table 2 use option A (zero padding).
- Options the paper does not have: `zero_init_residual` (zero-init the last norm of each
  block, Goyal et al. 2017, arXiv:1706.02677), `drop_path_rate` (stochastic depth, Huang et
  al. 2016, arXiv:1603.09382; linear in the block index from 0 to the rate, timm's rule) and
  `small_input` (a 3x3 stride-1 stem without max-pool for 28x28/32x32 images, as the CIFAR
  variants in the literature, e.g. kuangliu/pytorch-cifar, do).

Feature maps (`features_only=True`, also for SE-ResNet and the deformable ResNets): the stem
(after conv1-bn1-ReLU, before the max-pool: stride 2) and layer1..layer4 (strides 4, 8, 16,
32; with `small_input` 1, 1, 2, 4, 8). Every stride-2 layer is padded, so a map's side is
ceil(input / reduction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from cnnzoo.layers import DropPath
from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.registry import register_model

NormLayer = Callable[[int], nn.Module]
SELayer = Callable[[int], nn.Module]
# Builds a conv like nn.Conv2d(in, out, kernel_size, stride=, padding=, dilation=, groups=, bias=)
ConvLayer = Callable[..., nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1,
            conv_layer: ConvLayer = nn.Conv2d) -> nn.Module:
    """3x3 convolution with padding 1 and no bias (a norm follows)."""
    return conv_layer(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and an identity (or projection) shortcut: ResNet-18/34, Fig. 2 left.

    `downsample` maps the input to the output's shape where they differ (a projection here,
    the parameter-free option A in `resnet_cifar.py`). The optional parts act on the residual
    branch before the addition: `se` (SENet) and `drop_path` (stochastic depth).
    """

    expansion = 1
    shortcut = True  # an identity path; `resnet_cifar.PlainBlock`, the plain twin, has none

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se_layer: SELayer | None = None,
        conv_layer: ConvLayer = nn.Conv2d,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, conv_layer)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, conv_layer)
        self.bn2 = norm_layer(planes)
        self.se = se_layer(planes) if se_layer is not None else None
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.downsample = downsample
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.se is not None:
            out = self.se(out)  # SENet: rescale the residual branch before the addition
        out = self.drop_path(out)  # stochastic depth (nn.Identity at rate 0)
        if self.downsample is not None:
            shortcut = self.downsample(x)

        out += shortcut
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4): ResNet-50/101/152, Fig. 5 right.

    The stride sits on the 3x3 conv ("ResNet v1.5"; the paper strides the first 1x1).
    """

    expansion = 4
    shortcut = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se_layer: SELayer | None = None,
        conv_layer: ConvLayer = nn.Conv2d,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, conv_layer)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = se_layer(planes * self.expansion) if se_layer is not None else None
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.downsample = downsample
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.se is not None:
            out = self.se(out)  # SENet: rescale the residual branch before the addition
        out = self.drop_path(out)  # stochastic depth (nn.Identity at rate 0)
        if self.downsample is not None:
            shortcut = self.downsample(x)

        out += shortcut
        out = self.relu(out)
        return out


def init_he(model: nn.Module, *, zero_init_residual: bool = False) -> None:
    """He et al. 2015 ("Delving Deep into Rectifiers", arXiv:1502.01852) for every conv,
    fan_out as torchvision does; norms start at scale 1, shift 0; optionally the last norm
    of every residual block at 0, so each block starts as the identity (Goyal et al. 2017).
    Shared by every ResNet-shaped family (ImageNet, CIFAR, compact)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                m.zero_init_last()


class ResNet(ZooModel):
    """A stem, four stages of residual blocks (64, 128, 256, 512 planes), pool, FC.

    Args:
        block: `BasicBlock` or `Bottleneck` (or a block with the same constructor).
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-34/50 (Table 1).
        se_layer: per-block attention on the residual branch, `se_layer(channels)` (SENet).
        conv_layers: the 3x3 conv factory of each of the four stages (default nn.Conv2d).
        num_classes: classifier outputs.
        in_chans: input channels.
        small_input: 3x3 stride-1 stem without max-pool, for 28x28 / 32x32 images.
        zero_init_residual: zero the last norm's scale in every block, so each block
            starts as the identity followed by ReLU.
        drop_path_rate: stochastic-depth rate of the last block (linear from 0 at the first).
        norm_layer: norm factory, `norm_layer(channels)`.

    The arguments before `*` fix the architecture (each builder sets them); the keyword-only
    ones are the options `create_model` accepts.
    """

    family = "resnet"
    paper = "He et al. 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        se_layer: SELayer | None = None,
        conv_layers: Sequence[ConvLayer] | None = None,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ResNet: expected 4 stage depths, got {tuple(layers)}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"ResNet: expected drop_path_rate in [0, 1), got {drop_path_rate}")
        conv_layers = tuple(conv_layers) if conv_layers is not None else (nn.Conv2d,) * 4
        if len(conv_layers) != 4:
            raise ValueError(f"ResNet: expected 4 conv_layers (one per stage), got {conv_layers}")
        self._norm_layer = norm_layer
        self._se_layer = se_layer
        self.inplanes = 64

        if small_input:
            # CIFAR-style stem: keep the full 32x32 resolution into layer1.
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)

        # Stochastic depth: linear in the block index, 0 at the first block, the rate at the last.
        total = sum(layers)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        ends = [sum(layers[:i + 1]) for i in range(4)]
        self.layer1 = self._make_layer(block, 64, layers[0], 1, conv_layers[0], rates[:ends[0]])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, conv_layers[1],
                                       rates[ends[0]:ends[1]])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, conv_layers[2],
                                       rates[ends[1]:ends[2]])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, conv_layers[3],
                                       rates[ends[2]:])
        # Feature maps: the stem (after the ReLU, before the max-pool) and each stage.
        s = 1 if small_input else 2  # the stride of conv1, and of the max-pool
        e = block.expansion
        self.feature_info = [FeatureInfo("relu", 64, s), FeatureInfo("layer1", 64 * e, s * s),
                             FeatureInfo("layer2", 128 * e, 2 * s * s),
                             FeatureInfo("layer3", 256 * e, 4 * s * s),
                             FeatureInfo("layer4", 512 * e, 8 * s * s)]

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc: nn.Module = nn.Identity()  # num_classes=0: no classifier
        if num_classes > 0:
            self.fc = nn.Linear(512 * block.expansion, num_classes)

        self.num_classes = num_classes
        self.num_features = 512 * block.expansion
        self.input_size = (in_chans, 32, 32) if small_input else (in_chans, 224, 224)
        # Every stride-2 layer (7x7/2 pad 3, max-pool 3/2 pad 1, 3x3/2 pad 1, 1x1/2) maps a
        # 1x1 map to a 1x1 map, so one pixel goes through (torchvision's meta says 1 too).
        self.min_input_size = 1

        self._init_weights(zero_init_residual)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        conv_layer: ConvLayer,
        drop_path_rates: Sequence[float],
    ) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # Projection shortcut (option B) where the shape changes.
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )
        common = dict(norm_layer=norm_layer, se_layer=self._se_layer, conv_layer=conv_layer)
        layers = [block(self.inplanes, planes, stride, downsample,
                        drop_path_rate=drop_path_rates[0], **common)]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            layers.append(block(self.inplanes, planes, drop_path_rate=drop_path_rates[i],
                                **common))
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        init_he(self, zero_init_residual=zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)  # N x 64 x 56 x 56 (224 input); 32 x 32 with small_input

        x = self.layer1(x)  # N x 64e x 56 x 56  (e = block.expansion)
        x = self.layer2(x)  # N x 128e x 28 x 28
        x = self.layer3(x)  # N x 256e x 14 x 14
        x = self.layer4(x)  # N x 512e x 7 x 7
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)

    def forward_steps(self) -> list[str]:
        return ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]


# Table 1: blocks per stage (conv2_x .. conv5_x).
RESNET_LAYERS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


# One line each: the options are ResNet's keyword-only arguments (see `registry`).
@register_model
def resnet18(**kw) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2)."""
    return ResNet(*RESNET_LAYERS[18], **kw)


@register_model
def resnet34(**kw) -> ResNet:
    """ResNet-34 (BasicBlock, 3-4-6-3)."""
    return ResNet(*RESNET_LAYERS[34], **kw)


@register_model
def resnet50(**kw) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3)."""
    return ResNet(*RESNET_LAYERS[50], **kw)


@register_model
def resnet101(**kw) -> ResNet:
    """ResNet-101 (Bottleneck, 3-4-23-3)."""
    return ResNet(*RESNET_LAYERS[101], **kw)


@register_model
def resnet152(**kw) -> ResNet:
    """ResNet-152 (Bottleneck, 3-8-36-3)."""
    return ResNet(*RESNET_LAYERS[152], **kw)
