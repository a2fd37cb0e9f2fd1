"""AlexNet, in torchvision's single-tower layout.

Krizhevsky, Sutskever, Hinton 2012, "ImageNet Classification with Deep Convolutional Neural
Networks" (NeurIPS 2012). The channel widths (64, 192, 384, 256, 256) are those of the
one-tower model in Krizhevsky 2014, "One weird trick for parallelizing convolutional neural
networks", arXiv:1404.5997 (https://arxiv.org/abs/1404.5997), which is what torchvision
implements and what its ImageNet weights were trained with.

State-dict names are torchvision's (`features.N`, `classifier.N`), so a torchvision
checkpoint loads with the identity mapping.

Deviations from the 2012 paper (all shared with torchvision):
- One tower instead of the paper's two GPU halves (96/256/384/384/256 channels, with the
  2-GPU connectivity of Fig. 2); widths as in arXiv:1404.5997 above.
- No local response normalisation (the paper's Sec. 3.3).
- First conv 11x11 stride 4 with padding 2 (the paper states no padding for a 224 input,
  which does not give its 55x55 map); an adaptive 6x6 average pool before the classifier,
  so inputs other than 224x224 reach the same 9216-wide first FC layer.
- PyTorch's default initialisation, not the paper's N(0, 0.01) with biases of 1.

Small images (`small_input=True`, for Fashion-MNIST 28x28 and CIFAR 32x32): the 11x11
stride-4 first conv becomes a 3x3 stride-1 conv and the max-pool after it is dropped (an
`nn.Identity` keeps the torchvision indices of every later layer). The two remaining
overlapping 3x3/2 max-pools then take a 28x28 image to exactly the 6x6 map the classifier
was sized for (32x32 gives 7x7, averaged to 6x6). Smallest side: 63 native, 7 small.

Feature maps (`features_only=True`): the ReLU output before each of the three max-pools
(conv1, conv2, conv5: 64, 192, 256 channels at strides 4, 8, 16; with `small_input` the first
pool is gone but its stage stays, at strides 1, 1, 2). The 11x11 conv and the pools are
unpadded, so a map's side is one less than input / reduction (55 for 224 / 4), not equal.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.registry import register_model


class AlexNet(ZooModel):
    """Five convs with overlapping max-pools, then three fully connected layers.

    Args:
        num_classes: size of the classifier output.
        in_chans: channels of the input image.
        dropout: drop probability before each of the first two FC layers (paper: 0.5).
        small_input: 3x3 stride-1 first conv and no first max-pool, for 28x28/32x32 images.
    """

    family = "alexnet"
    paper = (
        "Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural "
        "Networks (NeurIPS 2012); one-tower widths of arXiv:1404.5997"
    )

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        dropout: float = 0.5,
        small_input: bool = False,
    ):
        super().__init__()
        if small_input:
            conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1)
            pool1: nn.Module = nn.Identity()
        else:
            conv1 = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
            pool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.features = nn.Sequential(
            conv1,
            nn.ReLU(inplace=True),
            pool1,
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier: nn.Module = nn.Identity()  # num_classes=0: no classifier
        if num_classes > 0:
            self.classifier = nn.Sequential(
                nn.Dropout(p=dropout),
                nn.Linear(256 * 6 * 6, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )

        # Feature maps: the ReLU before each max-pool, after conv1, conv2 and conv5
        # (torchvision indices); the small stem drops conv1's stride 4 and the first pool.
        r = (1, 1, 2) if small_input else (4, 8, 16)
        self.feature_info = [FeatureInfo("features.1", 64, r[0]),
                             FeatureInfo("features.4", 192, r[1]),
                             FeatureInfo("features.11", 256, r[2])]

        self.num_classes = num_classes
        self.num_features = 256
        self.input_size = (in_chans, 32, 32) if small_input else (in_chans, 224, 224)
        # The last 3x3/2 max-pool needs a 3x3 map. Native: 63 -> conv 15 -> pools 7, 3, 1
        # (torchvision's documented min_size). Small: 7 -> 7 -> pools 3, 1.
        self.min_input_size = 7 if small_input else 63

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # N x 256 x 6 x 6 (224 input; 28 input with small_input)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # N x 9216
        return self.classifier(x)

    def forward_steps(self) -> list[str]:
        return [f"features.{i}" for i in range(len(self.features))]


@register_model
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5,
            small_input: bool = False) -> AlexNet:
    """AlexNet, torchvision layout (61,100,840 parameters at 1000 classes)."""
    return AlexNet(num_classes, in_chans, dropout=dropout, small_input=small_input)
