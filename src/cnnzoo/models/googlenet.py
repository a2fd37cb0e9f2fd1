"""GoogLeNet (Inception v1), in the paper's form and in torchvision's.

Szegedy et al. 2015, "Going Deeper with Convolutions", arXiv:1409.4842
(https://arxiv.org/abs/1409.4842). The Inception channels are the paper's Table 1, kept as
`GOOGLENET_TABLE_1` in `inception_blocks.py` with the modules; the stem and the auxiliary
heads follow Sec. 5 and Fig. 3.

Two forms, chosen by `torchvision_compat`:
- Paper form (default): 5x5 convs in the 5x5 branch, conv bias + ReLU and no normalisation
  (the paper predates BatchNorm), local response normalisation in the stem as in Fig. 3,
  dropout 0.4 before the classifier, auxiliary heads pooling 5x5 with stride 3.
- torchvision form (`torchvision_compat=True`, what `from_torchvision("googlenet", ...)`
  builds): BatchNorm (eps 0.001) after every conv and no conv bias, no LRN, a 3x3 kernel in
  the branch the paper calls 5x5 (a torchvision quirk kept for its weights), dropout 0.2,
  auxiliary heads pooling adaptively to 4x4, torchvision's truncated-normal(0.01) init.
  13,004,888 parameters with the auxiliary heads, 6,624,904 without.

Auxiliary classifiers (on 4a and 4d) exist only in training: with `aux_logits=True` a model
in training mode returns `GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`; in eval mode
it returns the logits alone and the heads do not run. The paper weights their losses by 0.3
(`GoogLeNet.aux_weight`); `GoogLeNet.loss` adds them up for a trainer.

`transform_input=True` re-normalises an input normalised with the ImageNet mean/std into the
(x - 0.5) / 0.5 range torchvision's ported GoogLeNet weights expect; only those weights need it.

Deviations from the paper (both forms):
- Max-pools round up (`ceil_mode`, Caffe's rule, as torchvision); the 7x7 final average
  pool is adaptive (the same at 224x224); the paper's aux pool rounds down.
- Paper form: the LRN constants (size 5, alpha 1e-4, beta 0.75, k 1) are those of Caffe's
  bvlc_googlenet, the paper gives none; convs use Kaiming-normal (fan-in) init and FC
  weights N(0, 0.01), zero biases, since the paper does not state its initialisation and
  without normalisation the 22 layers need a variance-preserving start.

Small images (`small_input=True`, for Fashion-MNIST 28x28 and CIFAR 32x32): the stem
keeps its layers but loses its downsampling, as the CIFAR GoogLeNet of kuangliu/pytorch-cifar
does: the first conv is 3x3 stride 1 and the two stem max-pools are dropped. A 32x32 image
then reaches 3a at 32x32, 4a at 16x16 and 5a at 8x8. Smallest sides, eval mode: 15 native
(torchvision's documented minimum), 2 small. In training with the paper-form auxiliary
heads, their 5x5/3 pool must give exactly 4x4, which holds for 4a maps of 14 to 16, i.e.
inputs of 223 to 270 native and 28 to 33 small; `min_input_size` follows the mode and
`check_input` rejects a larger input with a message that names the range.

Feature maps (`features_only=True`): the stem (after conv3 and its LRN, before the second
max-pool: 192 channels, stride 4), 3b (480, 8), 4e (832, 16) and 5b (1024, 32): the last
output at each resolution, the maps the auxiliary heads and the classifier do not need.
With `small_input` the strides are 1, 1, 2, 4.

Narrow nets (`width_div=d`): every width of the stem, of Table 1 and of the auxiliary heads
divided by d (at least 1 channel), the layout unchanged: with `small_input` the net the
inception experiment trains on a CPU (`slim_googlenet`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from cnnzoo.layers import ConvNormAct
from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.inception_blocks import (
    GOOGLENET_TABLE_1,
    Inception,
    InceptionAux,
    scaled,
)
from cnnzoo.models.registry import register_model


class GoogLeNetOutputs(NamedTuple):
    """What a GoogLeNet with auxiliary heads returns in training (torchvision's order)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor  # head on 4d
    aux_logits1: torch.Tensor  # head on 4a


class InputTransform(nn.Module):
    """torchvision's ported weights expect (x - 0.5) / 0.5 of the [0, 1] image; this undoes
    the ImageNet mean/std normalisation and applies that one instead, per channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return x * (std / 0.5) + (mean - 0.5) / 0.5


def _pool_side(side: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    """Output side of an unpadded pool, PyTorch's rule (a last window must start inside)."""
    out = (side - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= side:
        out -= 1
    return out


def _sides_4a_5a(side: int, small_input: bool) -> tuple[int, int]:
    """Sides of the maps entering 4a and 5a for an input of side `side` (convs keep the
    side except the native 7x7 stride-2 stem conv)."""
    if not small_input:
        side = (side - 1) // 2 + 1  # conv1, 7x7 stride 2 padding 3
        side = _pool_side(side, 3, 2, True)  # maxpool1
        side = _pool_side(side, 3, 2, True)  # maxpool2
    side_4a = _pool_side(side, 3, 2, True)  # maxpool3
    return side_4a, _pool_side(side_4a, 2, 2, True)  # maxpool4


def paper_aux_sides(small_input: bool) -> tuple[int, int]:
    """The input sides (lo, hi) for which the paper's aux pool (5x5, stride 3, feeding a
    2048/d-wide FC) gives exactly 4x4: (223, 270) native, (28, 33) small."""
    fits = [s for s in range(1, 1024) if _pool_side(_sides_4a_5a(s, small_input)[0], 5, 3,
                                                    False) == 4]
    return fits[0], fits[-1]


class GoogLeNet(ZooModel):
    """The 22-layer Inception network of Table 1 / Fig. 3.

    Args:
        num_classes: size of the classifier output.
        in_chans: channels of the input image.
        aux_logits: build the two auxiliary classifiers (used in training only; none
            with num_classes=0).
        torchvision_compat: torchvision's form (BatchNorm, 3x3 "5x5" branch) instead of the
            paper's; see the module docstring.
        transform_input: re-normalise ImageNet-normalised input for torchvision's weights.
        small_input: stem without downsampling, for 28x28 / 32x32 images.
        dropout: before the classifier; None means the form's default (paper 0.4, tv 0.2).
        aux_dropout: inside each auxiliary head (paper: 0.7).
        width_div: divide every width (stem, Table 1, auxiliary heads) by this.
    """

    family = "googlenet"
    paper = "Szegedy et al. 2015, Going Deeper with Convolutions, arXiv:1409.4842"
    aux_weight = 0.3  # Sec. 5: "the losses of the auxiliary classifiers were weighted by 0.3"

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        torchvision_compat: bool = False,
        transform_input: bool = False,
        small_input: bool = False,
        dropout: float | None = None,
        aux_dropout: float = 0.7,
        width_div: int = 1,
    ):
        super().__init__()
        if width_div < 1:
            raise ValueError(f"googlenet: expected width_div >= 1, got {width_div}")
        d = width_div
        if transform_input and in_chans != 3:
            raise ValueError(f"googlenet: transform_input needs in_chans=3, got {in_chans}")
        self.transform_input = transform_input
        self.input_transform = InputTransform() if transform_input else None
        self.small_input = small_input
        if torchvision_compat:
            conv_block = partial(ConvNormAct, norm_layer=partial(nn.BatchNorm2d, eps=0.001))
            kernel_5x5, aux_pool, lrn = 3, partial(nn.AdaptiveAvgPool2d, 4), nn.Identity
            dropout = 0.2 if dropout is None else dropout
        else:
            conv_block = partial(ConvNormAct, norm_layer=None)  # conv with bias, ReLU
            kernel_5x5, aux_pool = 5, partial(nn.AvgPool2d, kernel_size=5, stride=3)
            lrn = partial(nn.LocalResponseNorm, 5, alpha=1e-4, beta=0.75, k=1.0)
            dropout = 0.4 if dropout is None else dropout

        # Stem (Fig. 3). small_input keeps its layers but none of its downsampling.
        if small_input:
            self.conv1 = conv_block(in_chans, 64 // d, 3)
            self.maxpool1: nn.Module = nn.Identity()
        else:
            self.conv1 = conv_block(in_chans, 64 // d, 7, stride=2)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = lrn()
        self.conv2 = conv_block(64 // d, 64 // d, 1)
        self.conv3 = conv_block(64 // d, 192 // d, 3)
        self.lrn2 = lrn()
        self.maxpool2 = nn.Identity() if small_input else nn.MaxPool2d(3, 2, ceil_mode=True)

        def inception(in_chs: int, row: str) -> Inception:
            return Inception(in_chs, scaled(GOOGLENET_TABLE_1[row], d), conv_block, kernel_5x5)

        self.inception3a = inception(192 // d, "3a")
        self.inception3b = inception(self.inception3a.out_channels, "3b")
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception(self.inception3b.out_channels, "4a")
        self.inception4b = inception(self.inception4a.out_channels, "4b")
        self.inception4c = inception(self.inception4b.out_channels, "4c")
        self.inception4d = inception(self.inception4c.out_channels, "4d")
        self.inception4e = inception(self.inception4d.out_channels, "4e")
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = inception(self.inception4e.out_channels, "5a")
        self.inception5b = inception(self.inception5a.out_channels, "5b")

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits and num_classes > 0:  # num_classes=0: no classifier, no aux heads
            self.aux1 = InceptionAux(self.inception4a.out_channels, num_classes, conv_block,
                                     aux_pool(), aux_dropout, d)
            self.aux2 = InceptionAux(self.inception4d.out_channels, num_classes, conv_block,
                                     aux_pool(), aux_dropout, d)

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.fc: nn.Module = nn.Identity()
        if num_classes > 0:
            self.fc = nn.Linear(self.inception5b.out_channels, num_classes)

        # Feature maps: the stem (before maxpool2) and the last module before each later
        # max-pool; the small stem drops conv1's stride and both stem pools.
        r = (1, 1, 2, 4) if small_input else (4, 8, 16, 32)
        self.feature_info = [
            FeatureInfo("lrn2", self.conv3.out_channels, r[0]),
            FeatureInfo("inception3b", self.inception3b.out_channels, r[1]),
            FeatureInfo("inception4e", self.inception4e.out_channels, r[2]),
            FeatureInfo("inception5b", self.inception5b.out_channels, r[3]),
        ]

        self.num_classes = num_classes
        self.num_features = self.inception5b.out_channels
        self.input_size = (in_chans, 32, 32) if small_input else (in_chans, 224, 224)
        self._eval_min_side = next(s for s in range(1, 1024)
                                   if min(_sides_4a_5a(s, small_input)) >= 1)
        # The input sides (lo, hi) the paper-form heads take in training (None: no limit).
        self.aux_sides: tuple[int, int] | None = None
        if self.aux1 is not None and not torchvision_compat:
            self.aux_sides = paper_aux_sides(small_input)
        init_googlenet(self, torchvision_compat=torchvision_compat)

    def _uses_aux(self) -> bool:
        return self.training and self.aux1 is not None

    @property
    def min_input_size(self) -> int:
        """Smallest side accepted now: the training-mode paper aux heads need more."""
        if self.aux_sides is not None and self._uses_aux():
            return self.aux_sides[0]
        return self._eval_min_side

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if self.aux_sides is not None and self._uses_aux():
            lo, hi = self.aux_sides
            if x.shape[2] > hi or x.shape[3] > hi:
                raise ValueError(
                    f"{self.name}: in training the paper-form auxiliary heads (5x5/3 average "
                    f"pool to 4x4) expect (N, {self.input_size[0]}, H, W) with {lo} <= H, W "
                    f"<= {hi}, got {tuple(x.shape)}; use eval(), aux_logits=False or "
                    "torchvision_compat=True"
                )

    def _body(self, x: torch.Tensor, with_aux: bool):
        """The features, and the two auxiliary logits when `with_aux` (else None)."""
        if self.input_transform is not None:
            x = self.input_transform(x)
        aux1 = aux2 = None
        x = self.conv1(x)  # N x 64 x 112 x 112 (224 input; 32 x 32 with small_input at 32)
        x = self.maxpool1(x)  # N x 64 x 56 x 56
        x = self.conv3(self.conv2(self.lrn1(x)))  # N x 192 x 56 x 56
        x = self.maxpool2(self.lrn2(x))  # N x 192 x 28 x 28
        x = self.inception3a(x)  # N x 256 x 28 x 28
        x = self.inception3b(x)  # N x 480 x 28 x 28
        x = self.maxpool3(x)  # N x 480 x 14 x 14
        x = self.inception4a(x)  # N x 512 x 14 x 14
        if with_aux:
            aux1 = self.aux1(x)
        x = self.inception4b(x)
        x = self.inception4c(x)
        x = self.inception4d(x)  # N x 528 x 14 x 14
        if with_aux:
            aux2 = self.aux2(x)
        x = self.inception4e(x)  # N x 832 x 14 x 14
        x = self.maxpool4(x)  # N x 832 x 7 x 7
        x = self.inception5a(x)
        x = self.inception5b(x)  # N x 1024 x 7 x 7
        return x, aux1, aux2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._body(x, with_aux=False)[0]

    def forward_steps(self) -> list[str]:
        steps = ["input_transform"] if self.input_transform is not None else []
        return steps + [
            "conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2",
            "inception3a", "inception3b", "maxpool3",
            "inception4a", "inception4b", "inception4c", "inception4d", "inception4e",
            "maxpool4", "inception5a", "inception5b",
        ]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # N x 1024
        return self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        """Logits; in training with auxiliary heads, `GoogLeNetOutputs` of all three."""
        self.check_input(x)
        with_aux = self._uses_aux()
        x, aux1, aux2 = self._body(x, with_aux)
        logits = self.forward_head(x)
        if with_aux:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits

    def loss(
        self,
        outputs: torch.Tensor | GoogLeNetOutputs,
        target: torch.Tensor,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The training loss: `criterion` on the logits plus `aux_weight` times each
        auxiliary head's, or `criterion` on plain logits."""
        if isinstance(outputs, GoogLeNetOutputs):
            aux = criterion(outputs.aux_logits1, target) + criterion(outputs.aux_logits2, target)
            return criterion(outputs.logits, target) + self.aux_weight * aux
        return criterion(outputs, target)


def init_googlenet(model: nn.Module, *, torchvision_compat: bool = False) -> None:
    """GoogLeNet's initialisation: He-normal convs and N(0, 0.01) linears in the paper form,
    torchvision's truncated N(0, 0.01) everywhere in its form; BatchNorm to identity."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and torchvision_compat:
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# The options are GoogLeNet's keyword-only arguments (see `registry`).
@register_model
def googlenet(**kw) -> GoogLeNet:
    """GoogLeNet; paper form by default, torchvision's with `torchvision_compat=True`."""
    return GoogLeNet(**kw)


def slim_googlenet(width_div: int, **kw) -> GoogLeNet:
    """The paper form for 28x28 / 32x32 images with every width divided by `width_div` (the
    inception experiment's CPU-sized net); `kw` as `googlenet`."""
    return GoogLeNet(small_input=True, width_div=width_div, **kw)
