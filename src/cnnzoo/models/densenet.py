"""DenseNet-121/161/169/201 for ImageNet and DenseNet-BC (L=100, k=12) for 32x32 images.

Huang, Liu, van der Maaten, Weinberger 2017, "Densely Connected Convolutional Networks",
arXiv:1608.06993 (https://arxiv.org/abs/1608.06993).

Inside a dense block every layer sees the concatenation of the block's input and all earlier
layers' outputs and adds k (the growth rate) new feature maps, so a block of n layers on c0
input channels ends with c0 + n*k. Each layer is the paper's bottleneck ("B"): BN-ReLU-1x1
conv to 4k maps, BN-ReLU-3x3 conv to k maps. Between blocks a transition (BN-ReLU-1x1 conv-2x2
average pool) halves the resolution and keeps floor(theta * m) of the m channels, theta = 0.5
("C", compression). B + C = DenseNet-BC; every network here is one.

State-dict names are torchvision's (`features.conv0`, `features.norm0`,
`features.denseblock1.denselayer1.norm1/conv1/norm2/conv2`, `features.transition1.norm/conv`,
`features.norm5`, `classifier`), so `from_torchvision` is the identity.

Small images (`small_input=True`): the ImageNet stem (7x7/2 conv, 3x3/2 max-pool) divides the
side by 4 before the first block, and with the three 2x2 pools of the transitions a 28x28 image
is gone (28 -> 7 -> 3 -> 1 -> 0; the ImageNet nets need at least 29x29). `small_input` swaps in
the stem the paper uses on CIFAR (Sec. 3, "Implementation Details"): a single 3x3 stride-1 conv,
no norm, no pooling, then the first dense block at full resolution. `densenet_bc100` is always
built that way. The conv0 weight then has another shape, so torchvision weights do not load.

Deviations from the paper:
- `drop_rate` (the paper's 0.2 dropout, used on CIFAR without augmentation) drops only each
  dense layer's k new maps, as torchvision does; the paper puts dropout after every conv
  except the first (also after the 1x1 bottleneck and the transition convs).
- DenseNet-161 (k=48, stem 96) is torchvision's / the authors' released model; the paper's
  Table 1 lists 121/169/201/264 with k=32.
- The stem of the small-input ImageNet configs keeps `num_init_features` (64 or 96) channels;
  the paper's CIFAR nets use 2k.
- Memory-efficient (checkpointed) concatenation is not implemented.

Feature maps (`features_only=True`): the output of each dense block, before the transition
(or `norm5`) that follows it: the concatenation the transition sees, at strides 4, 8, 16, 32
(1, 2, 4, 8 with the small-image stem). The 2x2 transition pools round down, so a map's side
is floor(input / reduction) for inputs the stem divides exactly.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.registry import register_model

NormLayer = Callable[[int], nn.Module]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * k maps), BN-ReLU-3x3 conv (k maps); returns the k new maps."""

    def __init__(self, in_chs: int, growth_rate: int, *, bn_size: int = 4,
                 drop_rate: float = 0.0, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        mid = bn_size * growth_rate  # "we let each 1x1 convolution produce 4k feature-maps"
        self.norm1 = norm_layer(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, mid, kernel_size=1, bias=False)
        self.norm2 = norm_layer(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))  # N x 4k x H x W
        out = self.conv2(self.relu2(self.norm2(out)))  # N x k x H x W
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """`num_layers` dense layers; layer i sees in_chs + i*k channels, the block returns
    in_chs + num_layers*k (its input and every layer's output, concatenated)."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, *, bn_size: int = 4,
                 drop_rate: float = 0.0, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size=bn_size,
                               drop_rate=drop_rate, norm_layer=norm_layer)
            self.add_module(f"denselayer{i + 1}", layer)
        self.out_channels = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)  # the dense connection: + k channels
        return x


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv-2x2 average pool: compresses channels and halves the resolution."""

    def __init__(self, in_chs: int, out_chs: int, *, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.norm = norm_layer(in_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(ZooModel):
    """A stem, dense blocks joined by transitions, a final BN-ReLU, global pool and FC.

    Args:
        growth_rate: k, the maps each dense layer adds.
        block_config: dense layers per block.
        num_init_features: channels of the stem conv.
        bn_size: the bottleneck's 1x1 conv outputs bn_size * k maps (4 in the paper).
        compression: theta, the fraction of channels a transition keeps.
        drop_rate: dropout on each dense layer's new maps.
        small_input: the paper's CIFAR stem (one 3x3 stride-1 conv) for 28x28 / 32x32 images.
        num_classes: classifier outputs.
        in_chans: input channels.
        norm_layer: norm factory, `norm_layer(channels)`.
    """

    family = "densenet"
    paper = "Huang et al. 2017, Densely Connected Convolutional Networks, arXiv:1608.06993"

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        *,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        small_input: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        if not block_config or min(block_config) < 1:
            raise ValueError(f"DenseNet: expected dense layers per block >= 1, got {block_config}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"DenseNet: expected compression in (0, 1], got {compression}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"DenseNet: expected drop_rate in [0, 1), got {drop_rate}")

        if small_input:
            stem = [("conv0", nn.Conv2d(in_chans, num_init_features, 3, padding=1, bias=False))]
        else:
            stem = [
                ("conv0", nn.Conv2d(in_chans, num_init_features, 7, stride=2, padding=3,
                                    bias=False)),
                ("norm0", norm_layer(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        self.features = nn.Sequential(OrderedDict(stem))

        channels = num_init_features
        reduction = 1 if small_input else 4  # conv0 /2 and pool0 /2; each transition /2
        self.feature_info: list[FeatureInfo] = []  # each dense block's output
        for i, num_layers in enumerate(block_config, start=1):
            block = DenseBlock(num_layers, channels, growth_rate, bn_size=bn_size,
                               drop_rate=drop_rate, norm_layer=norm_layer)
            self.features.add_module(f"denseblock{i}", block)
            self.feature_info.append(
                FeatureInfo(f"features.denseblock{i}", block.out_channels, reduction))
            reduction *= 2
            channels = block.out_channels
            if i < len(block_config):
                out = math.floor(compression * channels)
                self.features.add_module(f"transition{i}",
                                         Transition(channels, out, norm_layer=norm_layer))
                channels = out
        # torchvision's name for the final norm, kept for every depth so keys stay comparable.
        self.features.add_module("norm5", norm_layer(channels))
        self.classifier: nn.Module = nn.Identity()  # num_classes=0: no classifier
        if num_classes > 0:
            self.classifier = nn.Linear(channels, num_classes)

        self.num_classes = num_classes
        self.num_features = channels
        self.input_size = (in_chans, 32, 32) if small_input else (in_chans, 224, 224)
        transitions = len(block_config) - 1
        self.min_input_size = next(
            h for h in itertools.count(1) if _final_side(h, small_input, transitions) >= 1
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # As torchvision: He-normal convs (fan_in), norms at scale 1 / shift 0, FC bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # N x 1024 x 7 x 7 for DenseNet-121 at 224
        return F.relu(x)  # the last BN-ReLU before pooling

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def forward_steps(self) -> list[str]:
        return [f"features.{name}" for name, _ in self.features.named_children()]


def _final_side(side: int, small_input: bool, transitions: int) -> int:
    """Side of the last dense block's maps for an input of `side` pixels."""
    if not small_input:
        side = (side - 1) // 2 + 1  # conv0 7x7, stride 2, padding 3
        side = (side - 1) // 2 + 1  # pool0 3x3, stride 2, padding 1
    for _ in range(transitions):
        side //= 2  # 2x2 average pool, stride 2, no padding
    return side


@dataclass(frozen=True)
class DenseNetConfig:
    growth_rate: int
    block_config: tuple[int, ...]
    num_init_features: int


# ImageNet configs as torchvision's `_densenet(growth_rate, block_config, num_init_features)`
# (121/169/201: paper Table 1). DenseNet-BC (L=100, k=12) for CIFAR (paper Table 2): three
# blocks of (L - 4) / 6 = 16 bottleneck layers, a stem of 2k = 24 maps.
DENSENET_CONFIGS: dict[str, DenseNetConfig] = {
    "densenet121": DenseNetConfig(32, (6, 12, 24, 16), 64),
    "densenet161": DenseNetConfig(48, (6, 12, 36, 24), 96),
    "densenet169": DenseNetConfig(32, (6, 12, 32, 32), 64),
    "densenet201": DenseNetConfig(32, (6, 12, 48, 32), 64),
    "densenet_bc100": DenseNetConfig(12, (16, 16, 16), 24),
}


def _densenet(name: str, *, num_classes: int, in_chans: int, drop_rate: float,
              small_input: bool) -> DenseNet:
    cfg = DENSENET_CONFIGS[name]
    return DenseNet(cfg.growth_rate, cfg.block_config, cfg.num_init_features,
                    drop_rate=drop_rate, small_input=small_input,
                    num_classes=num_classes, in_chans=in_chans)


@register_model
def densenet121(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                small_input: bool = False) -> DenseNet:
    """DenseNet-121 (k=32, blocks 6-12-24-16)."""
    return _densenet("densenet121", num_classes=num_classes, in_chans=in_chans,
                     drop_rate=drop_rate, small_input=small_input)


@register_model
def densenet161(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                small_input: bool = False) -> DenseNet:
    """DenseNet-161 (k=48, blocks 6-12-36-24, stem 96)."""
    return _densenet("densenet161", num_classes=num_classes, in_chans=in_chans,
                     drop_rate=drop_rate, small_input=small_input)


@register_model
def densenet169(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                small_input: bool = False) -> DenseNet:
    """DenseNet-169 (k=32, blocks 6-12-32-32)."""
    return _densenet("densenet169", num_classes=num_classes, in_chans=in_chans,
                     drop_rate=drop_rate, small_input=small_input)


@register_model
def densenet201(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                small_input: bool = False) -> DenseNet:
    """DenseNet-201 (k=32, blocks 6-12-48-32)."""
    return _densenet("densenet201", num_classes=num_classes, in_chans=in_chans,
                     drop_rate=drop_rate, small_input=small_input)


@register_model
def densenet_bc100(*, num_classes: int = 1000, in_chans: int = 3,
                   drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-BC (L=100, k=12) for 32x32 images: 3x3 stem, three blocks of 16 layers."""
    return _densenet("densenet_bc100", num_classes=num_classes, in_chans=in_chans,
                     drop_rate=drop_rate, small_input=True)
