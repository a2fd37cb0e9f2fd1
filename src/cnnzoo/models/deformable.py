"""Deformable ResNet-50: DCNv1 in conv5 and DCNv2 in conv3..conv5.

- Dai et al. 2017, "Deformable Convolutional Networks", arXiv:1703.06211
  (https://arxiv.org/abs/1703.06211): deformable convolution in the 3x3 conv layers of the
  last stage, conv5 (`layer4`: res5a/b/c, 3 layers; §3 "Deformable Convolution for Feature
  Extraction", Table 1).
- Zhu et al. 2019, "Deformable ConvNets v2: More Deformable, Better Results",
  arXiv:1811.11168 (https://arxiv.org/abs/1811.11168): modulated deformable convolution in
  "all the 3x3 conv layers in stages conv3, conv4, and conv5" (`layer2..layer4`, §3.1).

Both are `resnet.ResNet` with `cnnzoo.layers.DeformConv2d` as the 3x3 conv factory of the
chosen stages, nothing copied. `DeformConv2d` keeps `nn.Conv2d`'s `weight` key and adds a
zero-initialised `conv_offset`, so at init these nets compute exactly the plain ResNet-50, and
a torchvision ResNet-50 state dict loads with `strict=False` (only `*.conv_offset.*` missing).

Deviations from the papers:
- Zhu et al. count "12 layers of deformable convolution" in ResNet-50 conv3..conv5; the rule
  they state covers 4 + 6 + 3 = 13 3x3 convs, and 13 is what is built here.
- The backbone is the ImageNet classifier (stride 32). Dai et al. (and Zhu et al.) use
  conv5 at stride 16 with dilation 2 for detection and segmentation, and mostly ResNet-101.
- The modulation mask is 2 * sigmoid(logits) rather than sigmoid(logits), so a fresh layer
  equals `nn.Conv2d` (see `cnnzoo/layers/deform_conv.py`).
- Bottleneck stride on the 3x3 conv ("ResNet v1.5"), as in `resnet.py`; here that conv is the
  deformable one, so the first block of each deformable stage samples with stride 2.
- The papers train the offset convs with a reduced learning rate (Zhu et al.: 0.1x, §3.1);
  that belongs to the trainer's parameter groups (`conv_offset` names them), not the model.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from cnnzoo.layers import DeformConv2d
from cnnzoo.models.registry import register_model
from cnnzoo.models.resnet import RESNET_LAYERS, ConvLayer, ResNet

# The 3x3 conv of each stage (conv2_x .. conv5_x).
DCN_V1_CONVS: tuple[ConvLayer, ...] = (nn.Conv2d, nn.Conv2d, nn.Conv2d, DeformConv2d)
DCN_V2_CONVS: tuple[ConvLayer, ...] = (nn.Conv2d,) + (partial(DeformConv2d, modulated=True),) * 3


class DeformableResNet(ResNet):
    """`ResNet` whose 3x3 convs are deformable in some stages (see `ResNet` for the arguments)."""

    family = "deformable"
    paper = "Dai et al. 2017, Deformable Convolutional Networks, arXiv:1703.06211"

    def _init_weights(self, zero_init_residual: bool) -> None:
        super()._init_weights(zero_init_residual)
        for m in self.modules():
            if isinstance(m, DeformConv2d):
                # The same He init as every other conv; ResNet's loop reached only the
                # offset conv (an nn.Conv2d), which must start at zero (Dai et al. §2.3) so
                # that the layer starts as a regular convolution.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.conv_offset.weight)
                nn.init.zeros_(m.conv_offset.bias)


class ModulatedDeformableResNet(DeformableResNet):
    """`DeformableResNet` with DCNv2's modulated layers; only its paper differs."""

    paper = ("Zhu et al. 2019, Deformable ConvNets v2: More Deformable, Better Results, "
             "arXiv:1811.11168")


# One line each: the options are ResNet's keyword-only arguments (see `registry`).
@register_model
def resnet50_dcn(**kw) -> DeformableResNet:
    """ResNet-50 with DCNv1 in the 3 3x3 convs of conv5 (Dai et al. 2017): 25,805,918 params."""
    return DeformableResNet(*RESNET_LAYERS[50], conv_layers=DCN_V1_CONVS, **kw)


@register_model
def resnet50_dcnv2(**kw) -> ModulatedDeformableResNet:
    """ResNet-50 with modulated DCNv2 in the 13 3x3 convs of conv3..conv5 (Zhu et al. 2019):
    26,428,295 params."""
    return ModulatedDeformableResNet(*RESNET_LAYERS[50], conv_layers=DCN_V2_CONVS, **kw)
