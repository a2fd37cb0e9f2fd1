"""EfficientNet-B0..B7 and compound scaling of B0 by any coefficient.

Tan, Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
arXiv:1905.11946 (https://arxiv.org/abs/1905.11946).

B0 is Table 1: a 3x3 stride-2 stem conv, seven stages of MBConv blocks, a 1x1 conv to 1280,
global pooling and FC. An MBConv block (MobileNetV2's inverted residual with SE) is a 1x1
expansion conv (absent when the expand ratio is 1), a kxk depthwise conv, squeeze-and-
excitation on the expanded maps with max(1, block input channels // 4) reduced channels, and a
1x1 projection with BN and no activation; when the stride is 1 and the channels do not change,
the block adds its input back, its branch dropped per sample by stochastic depth (DropPath).
SiLU (swish) follows every other conv and sits inside SE.

Compound scaling (Sec. 3.3): for a coefficient phi, depth d = alpha^phi, width w = beta^phi,
resolution r = gamma^phi with alpha = 1.2, beta = 1.1, gamma = 1.15. Channels become
make_divisible(c * w, 8), repeats ceil(n * d). `compound_scaling(phi)` gives the multipliers,
`CompoundScaling` holds any width/depth/resolution triple (so width-only, depth-only and
resolution-only variants are one object each), `EfficientNet(scaling)` builds from it and
`efficientnet_scaled` is the registered builder over both. B1..B7 use the released
coefficients (tensorflow/tpu `efficientnet_params`), not a phi: the paper does not list phi.

Module names are readable: `stem`, `stages.<i>.<j>.expand/dw/se/project`, `head`,
`classifier`. `convert.EFFICIENTNET_RULES` maps torchvision's `features.<i>.<j>.block.<k>` keys
onto them.

Small images (`small_input=True`): the stem conv runs at stride 1 instead of 2, so the network
divides the side by 16, not 32 (a 32x32 image ends at 2x2, 28x28 at 2x2 instead of 1x1), and
the native input size becomes 32. Any side >= 1 goes through either way (every stride-2 conv
here is padded "same"), so min_input_size is 1.

Deviations from the paper / released code, following torchvision (whose weights and
reference logits this matches):
- BatchNorm uses PyTorch's defaults (eps 1e-5, momentum 0.1) for B0-B4 and eps 1e-3,
  momentum 0.01 for B5-B7, as torchvision does; the TF code uses eps 1e-3 and momentum 0.01
  (decay 0.99) everywhere.
- The head conv has make_divisible(1280 * w, 8) channels (paper Table 1 scaled), which equals
  torchvision's 4 * (last stage channels) for B0-B7.
- Stochastic depth rate grows linearly from 0 at the first block to drop_path_rate *
  (n - 1) / n at the last (torchvision's rule); default 0.2 (the TF code's drop_connect_rate;
  the paper's text says 0.3).
- Native input sizes are the released resolutions (B2 260); torchvision evaluates B2 at 288.
- "Same" padding is symmetric (k - 1) // 2, as torchvision; TF pads asymmetrically at stride 2.

Feature maps (`features_only=True`): the last block of each stride, i.e. the output of
every stage followed by a stride-2 stage, and of the last: B0's stages 1, 2, 3, 5, 7 of
Table 1's MBConv rows (16, 24, 40, 112, 320 channels at strides 2, 4, 8, 16, 32; 1..16 with
`small_input`). The 1x1 head conv (1280) is not a stage and is not built, as in timm. Every
conv is padded, so a map's side is ceil(input / reduction).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from cnnzoo.layers import ConvNormAct, DropPath, SqueezeExcite, make_divisible
from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.registry import register_model

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


@dataclass(frozen=True)
class MBConvStage:
    """One row of Table 1: `repeats` MBConv blocks; the first has `stride`, the rest 1."""

    expand_ratio: int
    kernel: int
    stride: int
    out_ch: int
    repeats: int


# Tan & Le 2019, Table 1 (EfficientNet-B0), stages 2-8 (MBConv1 / MBConv6, kernel, channels,
# layers). Table 1 gives resolutions, not strides; the strides are those of the released
# code (tensorflow/tpu efficientnet_builder.py block strings), which produce those resolutions.
B0_STAGES: tuple[MBConvStage, ...] = (
    MBConvStage(expand_ratio=1, kernel=3, stride=1, out_ch=16, repeats=1),   # 112 x 112
    MBConvStage(expand_ratio=6, kernel=3, stride=2, out_ch=24, repeats=2),   # 56 x 56
    MBConvStage(expand_ratio=6, kernel=5, stride=2, out_ch=40, repeats=2),   # 28 x 28
    MBConvStage(expand_ratio=6, kernel=3, stride=2, out_ch=80, repeats=3),   # 14 x 14
    MBConvStage(expand_ratio=6, kernel=5, stride=1, out_ch=112, repeats=3),  # 14 x 14
    MBConvStage(expand_ratio=6, kernel=5, stride=2, out_ch=192, repeats=4),  # 7 x 7
    MBConvStage(expand_ratio=6, kernel=3, stride=1, out_ch=320, repeats=1),  # 7 x 7
)
B0_STEM_CHANNELS = 32  # Table 1 stage 1: Conv3x3 (stride 2)
B0_HEAD_CHANNELS = 1280  # Table 1 stage 9: Conv1x1 & Pooling & FC
B0_RESOLUTION = 224
SMALL_RESOLUTION = 32  # native side of a small_input network (CIFAR; Fashion-MNIST is 28)

# Sec. 3.3: the grid search at phi = 1 under alpha * beta^2 * gamma^2 ~ 2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


@dataclass(frozen=True)
class CompoundScaling:
    """Width, depth and resolution of a network relative to B0.

    Attributes:
        width_mult: channel multiplier; channels become make_divisible(c * width_mult, 8).
        depth_mult: repeats multiplier; each stage gets ceil(repeats * depth_mult) blocks.
        resolution: native input side in pixels.
    """

    width_mult: float = 1.0
    depth_mult: float = 1.0
    resolution: int = B0_RESOLUTION

    def __post_init__(self) -> None:
        if not (self.width_mult > 0 and self.depth_mult > 0 and self.resolution >= 1):
            raise ValueError(f"CompoundScaling: expected positive multipliers and resolution "
                             f">= 1, got {self}")

    def channels(self, channels: int) -> int:
        return make_divisible(channels * self.width_mult, 8)

    def repeats(self, repeats: int) -> int:
        return int(math.ceil(repeats * self.depth_mult))

    def scale_stages(self, stages: Sequence[MBConvStage]) -> tuple[MBConvStage, ...]:
        """The stage table with scaled channels and repeats (kernels, strides unchanged)."""
        return tuple(dataclasses.replace(s, out_ch=self.channels(s.out_ch),
                                         repeats=self.repeats(s.repeats)) for s in stages)


def compound_scaling(phi: float, *, base_resolution: int = B0_RESOLUTION, alpha: float = ALPHA,
                     beta: float = BETA, gamma: float = GAMMA) -> CompoundScaling:
    """The multipliers of compound coefficient `phi` (paper Eq. 3).

    Args:
        phi: the compound coefficient (0 is B0; may be negative or fractional).
        base_resolution: the resolution at phi = 0 (224; 32 for small-image networks).
        alpha: depth base. beta: width base. gamma: resolution base.

    Returns:
        depth alpha^phi, width beta^phi, resolution round(base_resolution * gamma^phi).
    """
    return CompoundScaling(width_mult=beta**phi, depth_mult=alpha**phi,
                           resolution=max(1, round(base_resolution * gamma**phi)))


class MBConv(nn.Module):
    """Inverted residual with SE: expand 1x1, depthwise kxk, SE, project 1x1 (+ input)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.SiLU,
        se_layer: Callable[..., nn.Module] = SqueezeExcite,
    ):
        super().__init__()
        mid = make_divisible(in_chs * expand_ratio, 8)
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
        self.expand = conv(in_chs, mid, 1) if mid != in_chs else nn.Identity()
        self.dw = conv(mid, mid, kernel_size, stride, groups=mid)
        # SE width from the block's input, not the expanded maps (TF code, torchvision).
        self.se = se_layer(mid, max(1, in_chs // 4), act_layer=act_layer)
        self.project = ConvNormAct(mid, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.use_residual = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path_rate) if self.use_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x

        out = self.expand(x)  # N x (in * e) x H x W
        out = self.dw(out)  # N x (in * e) x H/s x W/s
        out = self.se(out)
        out = self.project(out)  # N x out x H/s x W/s, linear (no activation)

        if self.use_residual:  # stride 1 and as many channels out as in
            out = self.drop_path(out)  # stochastic depth
            out += shortcut
        return out


class EfficientNet(ZooModel):
    """Stem, MBConv stages, 1x1 head conv, pool, dropout, FC; B0 scaled by `scaling`.

    Args:
        scaling: width / depth / resolution relative to B0.
        stages: the unscaled stage table (default Table 1).
        stem_channels: unscaled stem width. head_channels: unscaled head width.
        norm_layer: norm factory. act_layer: activation factory (SiLU).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic-depth rate, linear over blocks from 0.
        small_input: stride-1 stem for 28x28 / 32x32 images.
        num_classes: classifier outputs. in_chans: input channels.

    The arguments before `*` fix the architecture; the keyword-only ones are the options
    `create_model` accepts.
    """

    family = "efficientnet"
    paper = ("Tan & Le 2019, EfficientNet: Rethinking Model Scaling for Convolutional Neural "
             "Networks, arXiv:1905.11946")

    def __init__(
        self,
        scaling: CompoundScaling = CompoundScaling(),  # noqa: B008  (frozen, so shared safely)
        stages: Sequence[MBConvStage] = B0_STAGES,
        stem_channels: int = B0_STEM_CHANNELS,
        head_channels: int = B0_HEAD_CHANNELS,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.SiLU,
        *,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.2,
        small_input: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
    ):
        super().__init__()
        for what, p in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"EfficientNet: expected {what} in [0, 1), got {p}")
        rows = scaling.scale_stages(stages)
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)

        channels = scaling.channels(stem_channels)
        self.stem = conv(in_chans, channels, 3, 1 if small_input else 2)

        total = sum(row.repeats for row in rows)
        index = 0
        stage_list = []
        for row in rows:
            blocks = []
            for j in range(row.repeats):
                blocks.append(MBConv(channels, row.out_ch, kernel_size=row.kernel,
                                     stride=row.stride if j == 0 else 1,
                                     expand_ratio=row.expand_ratio,
                                     drop_path_rate=drop_path_rate * index / total,
                                     norm_layer=norm_layer, act_layer=act_layer))
                channels = row.out_ch
                index += 1
            stage_list.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_list)
        # Feature maps: a stage that is the last of its stride (the next one downsamples, or
        # none follows); the stem's stride times the stages' so far.
        reduction = 1 if small_input else 2
        self.feature_info = []
        for i, row in enumerate(rows):
            reduction *= row.stride
            if i == len(rows) - 1 or rows[i + 1].stride > 1:
                self.feature_info.append(FeatureInfo(f"stages.{i}", row.out_ch, reduction))

        self.num_features = scaling.channels(head_channels)
        self.head = conv(channels, self.num_features, 1)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier: nn.Module = nn.Identity()  # num_classes=0: no classifier
        if num_classes > 0:
            self.classifier = nn.Linear(self.num_features, num_classes)

        self.scaling = scaling
        self.num_classes = num_classes
        self.input_size = (in_chans, scaling.resolution, scaling.resolution)
        self.min_input_size = 1  # each conv is padded (k - 1) // 2: a 1x1 map stays 1x1
        self._init_weights()

    def _init_weights(self) -> None:
        # As torchvision: He-normal (fan_out) convs, norms at 1 / 0, FC uniform in
        # +-1/sqrt(num_classes) with zero bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # N x 32w x 112 x 112 (B0 at 224; 224 x 224 with small_input)
        x = self.stages(x)  # N x 320w x 7 x 7
        return self.head(x)  # N x 1280w x 7 x 7

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))  # global average pooling
        x = self.head_drop(x)
        return self.classifier(x)

    def forward_steps(self) -> list[str]:
        return ["stem"] + [f"stages.{i}" for i in range(len(self.stages))] + ["head"]


@dataclass(frozen=True)
class Release:
    scaling: CompoundScaling
    dropout: float
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1


# tensorflow/tpu efficientnet_builder.py `efficientnet_params` (width, depth, resolution,
# dropout); BatchNorm eps / momentum of B5-B7 as torchvision's weights were trained with.
RELEASES: dict[str, Release] = {
    "efficientnet_b0": Release(CompoundScaling(1.0, 1.0, 224), 0.2),
    "efficientnet_b1": Release(CompoundScaling(1.0, 1.1, 240), 0.2),
    "efficientnet_b2": Release(CompoundScaling(1.1, 1.2, 260), 0.3),
    "efficientnet_b3": Release(CompoundScaling(1.2, 1.4, 300), 0.3),
    "efficientnet_b4": Release(CompoundScaling(1.4, 1.8, 380), 0.4),
    "efficientnet_b5": Release(CompoundScaling(1.6, 2.2, 456), 0.4, 1e-3, 0.01),
    "efficientnet_b6": Release(CompoundScaling(1.8, 2.6, 528), 0.5, 1e-3, 0.01),
    "efficientnet_b7": Release(CompoundScaling(2.0, 3.1, 600), 0.5, 1e-3, 0.01),
}


def _released(name: str, *, small_input: bool = False, **kw) -> EfficientNet:
    """A row of `RELEASES`: its scaling (at 32 px with `small_input`) and BatchNorm constants."""
    release = RELEASES[name]
    scaling = release.scaling
    if small_input:
        scaling = dataclasses.replace(scaling, resolution=SMALL_RESOLUTION)
    norm = partial(nn.BatchNorm2d, eps=release.bn_eps, momentum=release.bn_momentum)
    return EfficientNet(scaling, norm_layer=norm, small_input=small_input, **kw)


# The options are EfficientNet's keyword-only arguments (see `registry`); each release keeps
# its own dropout as the default.


@register_model
def efficientnet_b0(*, drop_rate: float = RELEASES["efficientnet_b0"].dropout,
                    **kw) -> EfficientNet:
    """EfficientNet-B0 (Table 1), 224x224."""
    return _released("efficientnet_b0", drop_rate=drop_rate, **kw)


@register_model
def efficientnet_b1(*, drop_rate: float = RELEASES["efficientnet_b1"].dropout,
                    **kw) -> EfficientNet:
    """EfficientNet-B1 (width 1.0, depth 1.1), 240x240."""
    return _released("efficientnet_b1", drop_rate=drop_rate, **kw)


@register_model
def efficientnet_b2(*, drop_rate: float = RELEASES["efficientnet_b2"].dropout,
                    **kw) -> EfficientNet:
    """EfficientNet-B2 (width 1.1, depth 1.2), 260x260."""
    return _released("efficientnet_b2", drop_rate=drop_rate, **kw)


@register_model
def efficientnet_b3(*, drop_rate: float = RELEASES["efficientnet_b3"].dropout,
                    **kw) -> EfficientNet:
    """EfficientNet-B3 (width 1.2, depth 1.4), 300x300."""
    return _released("efficientnet_b3", drop_rate=drop_rate, **kw)


@register_model
def efficientnet_b4(*, drop_rate: float = RELEASES["efficientnet_b4"].dropout,
                    **kw) -> EfficientNet:
    """EfficientNet-B4 (width 1.4, depth 1.8), 380x380."""
    return _released("efficientnet_b4", drop_rate=drop_rate, **kw)


@register_model
def efficientnet_b5(*, drop_rate: float = RELEASES["efficientnet_b5"].dropout,
                    **kw) -> EfficientNet:
    """EfficientNet-B5 (width 1.6, depth 2.2), 456x456."""
    return _released("efficientnet_b5", drop_rate=drop_rate, **kw)


@register_model
def efficientnet_b6(*, drop_rate: float = RELEASES["efficientnet_b6"].dropout,
                    **kw) -> EfficientNet:
    """EfficientNet-B6 (width 1.8, depth 2.6), 528x528."""
    return _released("efficientnet_b6", drop_rate=drop_rate, **kw)


@register_model
def efficientnet_b7(*, drop_rate: float = RELEASES["efficientnet_b7"].dropout,
                    **kw) -> EfficientNet:
    """EfficientNet-B7 (width 2.0, depth 3.1), 600x600."""
    return _released("efficientnet_b7", drop_rate=drop_rate, **kw)


@register_model
def efficientnet_scaled(*, num_classes: int = 1000, in_chans: int = 3, phi: float = 0.0,
                        width_mult: float | None = None, depth_mult: float | None = None,
                        resolution: int | None = None, drop_rate: float = 0.2,
                        drop_path_rate: float = 0.2, small_input: bool = False) -> EfficientNet:
    """B0 scaled by compound coefficient `phi` and / or explicit multipliers.

    Each of `width_mult`, `depth_mult`, `resolution` given replaces the value phi implies, so
    `width_mult=2.0` alone is width-only scaling and `phi=1.0` alone is compound scaling.
    The resolution phi implies starts from 224, or from 32 with `small_input`.
    """
    base = B0_RESOLUTION if not small_input else SMALL_RESOLUTION
    implied = compound_scaling(phi, base_resolution=base)
    scaling = CompoundScaling(
        width_mult=implied.width_mult if width_mult is None else width_mult,
        depth_mult=implied.depth_mult if depth_mult is None else depth_mult,
        resolution=implied.resolution if resolution is None else resolution,
    )
    return EfficientNet(scaling, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                        small_input=small_input, num_classes=num_classes, in_chans=in_chans)
