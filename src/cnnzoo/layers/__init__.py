"""Building blocks shared by every family."""

from cnnzoo.layers.conv_norm_act import ConvNormAct
from cnnzoo.layers.deform_conv import DeformConv2d, deform_conv2d
from cnnzoo.layers.drop_path import DropPath, drop_path
from cnnzoo.layers.helpers import make_divisible
from cnnzoo.layers.squeeze_excite import SqueezeExcite

__all__ = [
    "ConvNormAct",
    "DeformConv2d",
    "DropPath",
    "SqueezeExcite",
    "deform_conv2d",
    "drop_path",
    "make_divisible",
]
