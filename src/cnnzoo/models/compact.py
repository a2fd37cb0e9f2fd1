"""Compact ResNet-8 for 28x28 images: the Fashion-MNIST speedrun model.

He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385 (https://arxiv.org/abs/1512.03385), §4.2: the CIFAR net with n = 1 block per
stage (6n + 2 = 8 weighted layers: a 3x3 stem conv, three stages of one two-conv block, the FC),
widened by a factor k as in Zagoruyko & Komodakis 2016, "Wide Residual Networks",
arXiv:1605.07146 (https://arxiv.org/abs/1605.07146): stage widths 16k, 32k, 64k.

Why it exists: the speed bar (`benchmarks/fashion_mnist_speedrun.py`, docs/speedrun.md) asks
for 94% Fashion-MNIST test accuracy in under 10 minutes on a 2-core CPU. The zoo's CIFAR
ResNet-20 costs ~31 MMACs per 28x28 image, which leaves time for only ~4 epochs there; this
net does the same three-stage job in ~10 MMACs at k = 2 by halving the resolution once, in
the stem, before any block runs.

Layout (k = 2, 28x28 input):

    stem   3x3 conv 1->32, BN, ReLU, 2x2 max-pool     N x 32 x 14 x 14
    layer1 BasicBlock 32, stride 1                    N x 32 x 14 x 14
    layer2 BasicBlock 64, stride 2                    N x 64 x 7 x 7
    layer3 BasicBlock 128, stride 2                   N x 128 x 4 x 4
    head   global average pool, FC 128 -> classes

Deviations from both papers:
- A 2x2 max-pool after the stem conv (a LeNet/VGG-style conv-pool), so the blocks run at
  14x14 instead of 28x28: a quarter of the MACs, at the price of the finest detail. With
  `stem_pool=False` the blocks run at full resolution (~37 MMACs at k = 2).
- Post-activation `resnet.BasicBlock` (the ResNet paper's block), not WRN's pre-activation
  block, and no dropout; shortcuts that change shape are 1x1 projections (option B, as
  `resnet.py`), not the CIFAR net's zero-padding option A, because with one block per stage
  most blocks change shape and option A would throw away half of their shortcut.
- Optional `zero_init_residual` (Goyal et al. 2017, arXiv:1706.02677), as `resnet.py`.
- Optional `pool_first`: the stem runs conv, max-pool, BN, ReLU (the conv-pool-norm-act
  order of Keller Jordan's airbench CIFAR-10 speedruns) instead of conv, BN, ReLU, max-pool.
  The conv's output is the only 28x28 map in the net; pooling it first leaves BN and ReLU a
  quarter of the pixels, and on a CPU those memory-bound passes over the full-size map cost
  more than their share of the time: a training step is 11-14% faster
  (`benchmarks/compact_step_speed.py`, docs/speedrun.md). The two orders
  agree exactly when BN's scale is positive (BN and ReLU are then increasing maps, which
  commute with max); they differ where a channel's learned scale turns negative.

`compact_resnet10` is the same net with two blocks in the last stage (4x4 maps, where one more
block costs 4.72 MMACs and adds 295k parameters).

Feature maps (`features_only=True`): the stem conv (before its pool, stride 1) and
layer1..layer3 (strides 2, 4, 8 with `stem_pool`, else 1, 2, 4).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.layers import ConvNormAct
from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.registry import register_model
from cnnzoo.models.resnet import BasicBlock, NormLayer, conv1x1, init_he

# He et al. §4.2: widths of the three stages at k = 1; WRN multiplies them by k.
BASE_WIDTHS = (16, 32, 64)


class CompactResNet(ZooModel):
    """Stem conv (+ max-pool), three stages of BasicBlocks, global average pool, FC.

    Args:
        blocks: BasicBlocks per stage (three stages).
        widen_factor: k; the stages have 16k, 32k, 64k channels, the stem 16k.
        num_classes: classifier outputs.
        in_chans: input channels.
        stem_pool: halve the resolution with a 2x2 max-pool after the stem conv.
        pool_first: with stem_pool, pool the conv's output before the stem's BN and ReLU.
        zero_init_residual: zero the last norm's scale in every block.
        norm_layer: norm factory, `norm_layer(channels)`.
    """

    family = "compact"
    paper = ("He et al. 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385; "
             "widened as Zagoruyko & Komodakis 2016, Wide Residual Networks, arXiv:1605.07146")

    def __init__(
        self,
        blocks: tuple[int, int, int] = (1, 1, 1),
        *,
        widen_factor: int = 2,
        num_classes: int = 10,
        in_chans: int = 1,
        stem_pool: bool = True,
        pool_first: bool = False,
        zero_init_residual: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        if len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"CompactResNet: expected 3 stage depths >= 1, got {tuple(blocks)}")
        if widen_factor < 1:
            raise ValueError(f"CompactResNet: expected widen_factor >= 1, got {widen_factor}")
        if pool_first and not stem_pool:
            raise ValueError("CompactResNet: pool_first=True needs stem_pool=True")
        widths = tuple(w * widen_factor for w in BASE_WIDTHS)
        self._norm_layer = norm_layer
        self.inplanes = widths[0]

        self.stem = ConvNormAct(in_chans, widths[0], 3, norm_layer=norm_layer)
        self.pool = nn.MaxPool2d(2) if stem_pool else nn.Identity()
        if pool_first:  # conv, pool, BN, ReLU: the BN becomes stem.2 in the state dict
            self.stem.insert(1, self.pool)
            self.pool = nn.Identity()
        self.layer1 = self._make_layer(widths[0], blocks[0], stride=1)
        self.layer2 = self._make_layer(widths[1], blocks[1], stride=2)
        self.layer3 = self._make_layer(widths[2], blocks[2], stride=2)
        # Feature maps: the stem (which holds the pool with pool_first) and each stage.
        p = 2 if stem_pool else 1
        self.feature_info = [FeatureInfo("stem", widths[0], p if pool_first else 1),
                             FeatureInfo("layer1", widths[0], p),
                             FeatureInfo("layer2", widths[1], 2 * p),
                             FeatureInfo("layer3", widths[2], 4 * p)]
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc: nn.Module = nn.Identity()  # num_classes=0: no classifier
        if num_classes > 0:
            self.fc = nn.Linear(widths[2], num_classes)

        self.num_classes = num_classes
        self.num_features = widths[2]
        self.input_size = (in_chans, 28, 28)
        # The 2x2/2 max-pool turns a 1x1 map into 0x0; the 3x3/2 pad-1 convs and 1x1/2
        # projections map 1x1 to 1x1. So 2 pixels with the pool, 1 without.
        self.min_input_size = 2 if stem_pool else 1

        init_he(self, zero_init_residual=zero_init_residual)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride),
                                       self._norm_layer(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample,
                             norm_layer=self._norm_layer)]
        self.inplanes = planes
        for _ in range(1, blocks):
            layers.append(BasicBlock(planes, planes, norm_layer=self._norm_layer))
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))  # N x 16k x 14 x 14 (28x28 input, stem_pool)
        x = self.layer1(x)  # N x 16k x 14 x 14
        x = self.layer2(x)  # N x 32k x 7 x 7
        x = self.layer3(x)  # N x 64k x 4 x 4
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward_steps(self) -> list[str]:
        return ["stem", "pool", "layer1", "layer2", "layer3"]


# One line each: the options are CompactResNet's keyword-only arguments (see `registry`).
@register_model
def compact_resnet8(**kw) -> CompactResNet:
    """ResNet-8 (one block per stage) widened by k, with a pooled stem for 28x28 images.

    k = 2: 308,074 parameters and 10.32 MMACs per 1x28x28 image at 10 classes.
    """
    return CompactResNet((1, 1, 1), **kw)


@register_model
def compact_resnet10(**kw) -> CompactResNet:
    """compact_resnet8 with two blocks in the last stage (1, 1, 2): 10 weighted layers.

    k = 2: 603,498 parameters and 15.04 MMACs per 1x28x28 image at 10 classes.
    """
    return CompactResNet((1, 1, 2), **kw)
