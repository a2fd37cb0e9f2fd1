"""VGG-11/13/16/19, with and without batch normalisation, the torchvision way.

Simonyan, Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", arXiv:1409.1556 (https://arxiv.org/abs/1409.1556). The convolution stacks are
the paper's Table 1 columns A (VGG-11), B (VGG-13), D (VGG-16) and E (VGG-19), kept below as
`VGG_TABLE_1`.

State-dict names are torchvision's (`features.N`, `classifier.N`), so a torchvision
checkpoint loads with the identity mapping.

Deviations from the paper (all shared with torchvision):
- The `_bn` variants put BatchNorm after every conv (Ioffe & Szegedy 2015, arXiv:1502.03167,
  a year after VGG); their convs keep their bias, as torchvision's do.
- An adaptive 7x7 average pool sits between the convs and the classifier, so inputs other
  than 224x224 reach the same 25088-wide first FC layer (the paper instead turns the FC
  layers into convs for dense evaluation at other scales).
- Initialisation as torchvision's: Kaiming-normal (fan-out) convs, N(0, 0.01) FC weights,
  zero biases. The paper drew weights with variance 1e-2 for net A and started the deeper
  nets' first four convs and three FC layers from a trained net A (noting that Glorot
  initialisation later made that pre-training unnecessary).
- Columns A-LRN and C (1x1 convs) of Table 1 are not registered.

Small images: no small-image stem. Five 2x2 max-pools need a side of at least 32, so
CIFAR (32x32) runs as is and Fashion-MNIST (28x28) is resized to 32x32 by the data
pipeline. The 1x1 map after the last pool is then spread over the 7x7 average pool, i.e.
the classifier keeps its ImageNet size (about 120M of the parameters).

Feature maps (`features_only=True`): the ReLU output before each of the five max-pools
(strides 1, 2, 4, 8, 16); the 2x2 pools round down, so a map's side is floor(input / reduction).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.registry import register_model

Stages = tuple[tuple[int, ...], ...]

# Table 1 of the VGG paper: the 3x3 convs of each configuration as output channels, one
# tuple per stage; every stage ends with a 2x2 stride-2 max-pool.
VGG_TABLE_1: dict[str, Stages] = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),  # VGG-11
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),  # VGG-13
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),  # VGG-16
    "E": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),  # VGG-19
}


def make_features(stages: Stages, in_chans: int, batch_norm: bool) -> nn.Sequential:
    """conv3x3 (+BN) + ReLU for each entry, a 2x2 max-pool after each stage, in one
    flat `nn.Sequential` so the indices match torchvision's `features.N`."""
    layers: list[nn.Module] = []
    channels = in_chans
    for stage in stages:
        for width in stage:
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(ZooModel):
    """Stacks of 3x3 convs separated by max-pools, then three fully connected layers.

    Args:
        stages: one column of `VGG_TABLE_1`.
        num_classes: size of the classifier output.
        in_chans: channels of the input image.
        batch_norm: BatchNorm after every conv (the `_bn` variants).
        dropout: drop probability after each of the first two FC layers (paper: 0.5).
    """

    family = "vgg"
    paper = (
        "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image "
        "Recognition, arXiv:1409.1556"
    )

    def __init__(
        self,
        stages: Stages,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.features = make_features(stages, in_chans, batch_norm)
        width = stages[-1][-1]
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier: nn.Module = nn.Identity()  # num_classes=0: no classifier
        if num_classes > 0:
            self.classifier = nn.Sequential(
                nn.Linear(width * 7 * 7, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, num_classes),
            )
        # Feature maps: the ReLU just before each max-pool; stage i runs after i pools.
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.feature_info = [FeatureInfo(f"features.{p - 1}", stage[-1], 2**i)
                             for i, (p, stage) in enumerate(zip(pools, stages, strict=True))]

        self.num_classes = num_classes
        self.num_features = width
        self.input_size = (in_chans, 224, 224)
        # Each stage halves the side (floor), and the last pool needs a 2x2 map.
        self.min_input_size = 2 ** len(stages)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # N x 512 x 7 x 7 (224 input)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # N x 25088
        return self.classifier(x)

    def forward_steps(self) -> list[str]:
        return [f"features.{i}" for i in range(len(self.features))]


def _vgg(column: str, batch_norm: bool, num_classes: int, in_chans: int, dropout: float) -> VGG:
    return VGG(VGG_TABLE_1[column], num_classes, in_chans, batch_norm=batch_norm, dropout=dropout)


@register_model
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11, Table 1 column A."""
    return _vgg("A", False, num_classes, in_chans, dropout)


@register_model
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (column A) with BatchNorm."""
    return _vgg("A", True, num_classes, in_chans, dropout)


@register_model
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13, Table 1 column B."""
    return _vgg("B", False, num_classes, in_chans, dropout)


@register_model
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (column B) with BatchNorm."""
    return _vgg("B", True, num_classes, in_chans, dropout)


@register_model
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16, Table 1 column D."""
    return _vgg("D", False, num_classes, in_chans, dropout)


@register_model
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (column D) with BatchNorm."""
    return _vgg("D", True, num_classes, in_chans, dropout)


@register_model
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19, Table 1 column E."""
    return _vgg("E", False, num_classes, in_chans, dropout)


@register_model
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (column E) with BatchNorm."""
    return _vgg("E", True, num_classes, in_chans, dropout)
