"""CIFAR ResNet-20/32/44/56/110/1202 and their plain twins plain-20/32/44/56/110.

He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385 (https://arxiv.org/abs/1512.03385), §4.2 "CIFAR-10 and Analysis":
a 3x3 conv (16 filters), then 3 stages of n blocks of two 3x3 convs on 32x32, 16x16, 8x8
maps with 16, 32, 64 filters (subsampling by a stride-2 conv), global average pooling and a
10-way FC: 6n + 2 weighted layers. Every shortcut is an identity; where the shape changes it is
option A: the input subsampled with stride 2 and zero-padded to the new channel count, so the
residual net and its plain twin (the same layers without the shortcuts) have exactly the same
parameters.

The block is `resnet.BasicBlock`, or for the plain twins `PlainBlock` (the same layers, no
addition: only this paper's plain nets need it), and each stage is an `nn.Sequential` of
blocks (`layer1[0]`, ...), so a lesion experiment can swap one block for `nn.Identity()`.

Deviations from the paper:
- Option A places the original channels first and the zeros after them; the paper does not
  say where the zeros go (some re-implementations, e.g. akamaster/pytorch_resnet_cifar10, pad
  on both sides). Any placement computes the same family of functions up to a channel order.
- Weights start with He et al.'s normal init with fan_out, as the ImageNet ResNet here (the
  paper uses [13], He et al. 2015 arXiv:1502.01852, whose §2.2 shows fan_in or fan_out both
  keep the signal's scale).

`make_deformable(model, count)` turns the last `count` 3x3 convs into deformable ones
with the same weights (the deformable experiment's twin).

Feature maps (`features_only=True`): the stem (conv1-bn1-ReLU) and layer1..layer3, at
strides 1, 1, 2, 4 (16, 16, 32, 64 channels); a map's side is ceil(input / reduction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.layers import DeformConv2d
from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.registry import register_model
from cnnzoo.models.resnet import BasicBlock, NormLayer, conv3x3, init_he


class ShortcutA(nn.Module):
    """Option A: identity with stride-2 subsampling and zero channels appended (no parameters).

    Subsampling keeps the top-left pixel of every 2x2 cell, the pixel a stride-2 3x3 conv with
    padding 1 is centred on, so both paths of the block see the same positions.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"ShortcutA: cannot shrink {in_planes} channels to {out_planes}")
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # zeros in the new channels

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


class PlainBlock(BasicBlock):
    """`BasicBlock` without the identity path: a layer pair of the plain nets (He et al. §4.1).

    The same parameters under the same names, so a plain net loads its residual twin's weights.
    """

    shortcut = False

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: None = None, *,
                 norm_layer: NormLayer = nn.BatchNorm2d):
        if downsample is not None:
            raise ValueError("PlainBlock: a block without shortcut takes no downsample")
        super().__init__(inplanes, planes, stride, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)  # no `out += x`: the plain twin
        return out


class CifarResNet(ZooModel):
    """The 6n + 2 layer CIFAR net of He et al. §4.2, residual or plain.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110, 1202 in the paper).
        num_classes: classifier outputs.
        in_chans: input channels.
        shortcut: False builds the plain twin (no identity paths, same layers).
        norm_layer: norm factory, `norm_layer(channels)`.
        base_width: channels of the first stage (16 in the paper); the stages have
            w, 2w, 4w. Narrower nets keep the depth and the shortcut structure at a fraction
            of the cost (about (w/16)^2), which is what the CPU experiments need.
    """

    family = "resnet_cifar"
    paper = ("He et al. 2015, Deep Residual Learning for Image Recognition (§4.2, CIFAR-10), "
             "arXiv:1512.03385")

    def __init__(
        self,
        depth: int,
        shortcut: bool = True,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
        base_width: int = 16,
    ):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CifarResNet: expected depth = 6n + 2 with n >= 1, got {depth}")
        if base_width < 1:
            raise ValueError(f"CifarResNet: expected base_width >= 1, got {base_width}")
        n = (depth - 2) // 6
        w = base_width
        self.depth = depth
        self._norm_layer = norm_layer
        self._shortcut = shortcut
        self.inplanes = w

        self.conv1 = conv3x3(in_chans, w)
        self.bn1 = norm_layer(w)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(w, n, stride=1)
        self.layer2 = self._make_layer(2 * w, n, stride=2)
        self.layer3 = self._make_layer(4 * w, n, stride=2)
        self.feature_info = [FeatureInfo("relu", w, 1), FeatureInfo("layer1", w, 1),
                             FeatureInfo("layer2", 2 * w, 2), FeatureInfo("layer3", 4 * w, 4)]
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc: nn.Module = nn.Identity()  # num_classes=0: no classifier
        if num_classes > 0:
            self.fc = nn.Linear(4 * w, num_classes)

        self.num_classes = num_classes
        self.num_features = 4 * w
        self.input_size = (in_chans, 32, 32)
        # 3x3/2 pad-1 convs and the [::2] subsample both map 1x1 to 1x1.
        self.min_input_size = 1

        init_he(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        block = BasicBlock if self._shortcut else PlainBlock
        downsample = None
        if self._shortcut and (stride != 1 or self.inplanes != planes):
            downsample = ShortcutA(self.inplanes, planes, stride)
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer=self._norm_layer)]
        self.inplanes = planes
        for _ in range(1, blocks):
            layers.append(block(planes, planes, norm_layer=self._norm_layer))
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # N x 16 x 32 x 32
        x = self.layer1(x)  # N x 16 x 32 x 32
        x = self.layer2(x)  # N x 32 x 16 x 16
        x = self.layer3(x)  # N x 64 x 8 x 8
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward_steps(self) -> list[str]:
        return ["conv1", "bn1", "relu", "layer1", "layer2", "layer3"]


def make_deformable(model: CifarResNet, count: int) -> list[str]:
    """The deformable twin (Dai et al. 2017, arXiv:1703.06211), in place: the last `count`
    3x3 convs of the residual stages become `DeformConv2d`s with the same weights and zero
    offsets, so the model still computes the same function.

    Returns:
        the paths of the deformable convs, in forward order.
    """
    convs = [(block, name, f"{stage}.{i}.{name}")
             for stage in ("layer1", "layer2", "layer3")
             for i, block in enumerate(getattr(model, stage)) for name in ("conv1", "conv2")]
    if not 1 <= count <= len(convs):
        raise ValueError(f"deform_layers: expected 1..{len(convs)} (the 3x3 convs of the "
                         f"residual stages), got {count}")
    for block, name, _ in convs[-count:]:
        conv: nn.Conv2d = getattr(block, name)
        dcn = DeformConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                           conv.padding, conv.dilation, bias=conv.bias is not None)
        with torch.no_grad():
            dcn.weight.copy_(conv.weight)
        setattr(block, name, dcn)
    return [path for _, _, path in convs[-count:]]


# §4.2: n = 3, 5, 7, 9, 18, 200 -> 20, 32, 44, 56, 110, 1202 layers. Plain-1202 is not in the
# paper (its plain nets stop at 110, Fig. 6), so it is not registered. One line each: the
# options are CifarResNet's keyword-only arguments (see `registry`).


@register_model
def resnet20(**kw) -> CifarResNet:
    """CIFAR ResNet-20 (n = 3): 269,722 parameters at 10 classes (paper: 0.27M)."""
    return CifarResNet(20, **kw)


@register_model
def resnet32(**kw) -> CifarResNet:
    """CIFAR ResNet-32 (n = 5): 464,154 parameters at 10 classes (paper: 0.46M)."""
    return CifarResNet(32, **kw)


@register_model
def resnet44(**kw) -> CifarResNet:
    """CIFAR ResNet-44 (n = 7): 658,586 parameters at 10 classes (paper: 0.66M)."""
    return CifarResNet(44, **kw)


@register_model
def resnet56(**kw) -> CifarResNet:
    """CIFAR ResNet-56 (n = 9): 853,018 parameters at 10 classes (paper: 0.85M)."""
    return CifarResNet(56, **kw)


@register_model
def resnet110(**kw) -> CifarResNet:
    """CIFAR ResNet-110 (n = 18): 1,727,962 parameters at 10 classes (paper: 1.7M)."""
    return CifarResNet(110, **kw)


@register_model
def resnet1202(**kw) -> CifarResNet:
    """CIFAR ResNet-1202 (n = 200): 19,421,274 parameters at 10 classes (paper: 19.4M)."""
    return CifarResNet(1202, **kw)


@register_model
def plain20(**kw) -> CifarResNet:
    """Plain-20: ResNet-20 without shortcuts, the same parameters."""
    return CifarResNet(20, shortcut=False, **kw)


@register_model
def plain32(**kw) -> CifarResNet:
    """Plain-32: ResNet-32 without shortcuts, the same parameters."""
    return CifarResNet(32, shortcut=False, **kw)


@register_model
def plain44(**kw) -> CifarResNet:
    """Plain-44: ResNet-44 without shortcuts, the same parameters."""
    return CifarResNet(44, shortcut=False, **kw)


@register_model
def plain56(**kw) -> CifarResNet:
    """Plain-56: ResNet-56 without shortcuts, the same parameters."""
    return CifarResNet(56, shortcut=False, **kw)


@register_model
def plain110(**kw) -> CifarResNet:
    """Plain-110: ResNet-110 without shortcuts, the same parameters."""
    return CifarResNet(110, shortcut=False, **kw)
