"""The published ImageNet-1k weights of the zoo's models, as data: where, which hash, how good.

Every entry is a fact copied from its source, never a guess:

- torchvision 0.29.1 (`torchvision/models/<family>.py`, the `<Model>_Weights` enums): the URL,
  whose file name ends in the first hex digits of the file's SHA-256 (what `torch.hub` checks,
  and what `cnnzoo.models.hub` checks), `_file_size` in MB, `acc@1` / `acc@5` on the ImageNet-1K
  validation set at the entry's own preprocessing, and that preprocessing (the `transforms`
  preset `ImageClassification`: resize the shorter side to `resize`, center-crop `crop`,
  normalise with `mean` / `std`; torchvision's defaults are resize 256, bilinear, the ImageNet
  mean and std). `default` is torchvision's `DEFAULT` member.
- timm (`timm/models/resnet.py` default_cfgs, commit aa4b585 of huggingface/pytorch-image-models):
  the SE-ResNet-50 files, at the `url` each cfg names (timm's GitHub releases), with the cfg's
  license and preprocessing (input 224, `crop_pct`: resize floor(224 / crop_pct), as timm's
  transforms_factory, bicubic); top-1 / top-5 are the 224-pixel rows of timm's
  `results/results-imagenet.csv` (timm's own test size, 288, scores higher). timm publishes
  no hash it checks: the file names end in 8 hex digits (its `clean_checkpoint.py` names files
  by their SHA-256 prefix) but timm downloads with `check_hash=False`, so that is not taken
  as a published hash here; these entries rely on the strict key-and-shape check.
- Builder options: GoogLeNet's weights are torchvision's BatchNorm variant, trained on input
  normalised as (x - 0.5) / 0.5, which torchvision re-normalises inside the model
  (`transform_input=True`, set whenever it loads them): the entry builds the same.

Not included: torchvision's `vgg16` `IMAGENET1K_FEATURES` (no classifier, another
normalisation); timm's `seresnet50.a3_in1k` (trained at 160 pixels) and the other SE-ResNets
(timm has no ImageNet weights for SE-ResNet 18/34/101/152, only `.untrained` cfgs).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/"
TORCHVISION_METRICS = "torchvision 0.29.1 weights enum, ImageNet-1K acc@1 / acc@5"
TIMM_METRICS = "timm results/results-imagenet.csv (commit aa4b585), the 224-pixel row"
TIMM_LICENSE = "apache-2.0 (timm's cfg)"
TORCHVISION_LICENSE = ("BSD-3-Clause (torchvision); trained on ImageNet-1k, whose terms of "
                       "access may apply to the weights")
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.pth$")  # torch.hub's rule: name-<sha256 prefix>.pth


@dataclass(frozen=True)
class Preprocessing:
    """How the published accuracy was measured: resize the shorter side, center-crop, normalise.

    Attributes:
        resize: side the shorter image side is resized to, pixels.
        crop: side of the square center crop the model sees, pixels.
        interpolation: "bilinear" or "bicubic" (antialiased, as torchvision's preset).
        mean, std: per-channel normalisation of the [0, 1] RGB image.
    """

    resize: int
    crop: int
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class WeightsEntry:
    """One published weights file of one zoo model.

    Attributes:
        model: the registry name it loads into.
        tag: the source's name for it (`IMAGENET1K_V1`).
        source: "torchvision" or "timm": whose key names the file uses (`cnnzoo.models.keymap`).
        source_name: the model's name at the source (the key-mapping entry).
        url: where the source publishes it.
        sha256_prefix: the first hex digits of its SHA-256 as published, or None where the
            source publishes none (the load then relies on the strict structure check alone).
        file_size_mb: the published size in MB (10^6 bytes), or None.
        top1, top5: published ImageNet-1K validation accuracy, percent, at `preprocessing`.
        metrics_source: where `top1` / `top5` are printed.
        license: the terms the source states.
        preprocessing: the evaluation transform the accuracy belongs to.
        options: builder options the weights need (beyond `num_classes=1000, in_chans=3`).
        default: the entry `pretrained=True` picks for this model.
        num_classes: outputs of its classifier (the ImageNet-1k classes).
    """

    model: str
    tag: str
    source: str
    source_name: str
    url: str
    sha256_prefix: str | None
    file_size_mb: float | None
    top1: float
    top5: float
    metrics_source: str
    license: str
    preprocessing: Preprocessing
    options: dict = field(default_factory=dict)
    default: bool = True
    num_classes: int = 1000

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def key(self) -> str:
        return f"{self.model}:{self.tag}"


def _tv(model: str, tag: str, file: str, size_mb: float, top1: float, top5: float,
        resize: int, crop: int, interpolation: str, *, options: dict | None = None,
        default: bool = True) -> WeightsEntry:
    match = HASH_IN_NAME.search(file)
    return WeightsEntry(
        model, tag, "torchvision", model, TORCHVISION_URL + file,
        match.group(1) if match else None, size_mb, top1, top5, TORCHVISION_METRICS,
        TORCHVISION_LICENSE, Preprocessing(resize, crop, interpolation), dict(options or {}),
        default,
    )


def _timm(model: str, source_name: str, tag: str, url: str, top1: float, top5: float,
          crop_pct: float, *, default: bool = True) -> WeightsEntry:
    crop = 224
    return WeightsEntry(
        model, tag, "timm", source_name, url, None, None, top1, top5, TIMM_METRICS,
        TIMM_LICENSE, Preprocessing(math.floor(crop / crop_pct), crop, "bicubic"), {}, default,
    )


_TIMM_RELEASES = "https://github.com/huggingface/pytorch-image-models/releases/download/"
_TIMM_OLD_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/"

# model, tag, file, MB, acc@1, acc@5, resize, crop, interpolation (torchvision 0.29.1)
WEIGHTS: tuple[WeightsEntry, ...] = (
    _tv("alexnet", "IMAGENET1K_V1", "alexnet-owt-7be5be79.pth", 233.087,
        56.522, 79.066, 256, 224, "bilinear"),
    _tv("vgg11", "IMAGENET1K_V1", "vgg11-8a719046.pth", 506.84,
        69.02, 88.628, 256, 224, "bilinear"),
    _tv("vgg11_bn", "IMAGENET1K_V1", "vgg11_bn-6002323d.pth", 506.881,
        70.37, 89.81, 256, 224, "bilinear"),
    _tv("vgg13", "IMAGENET1K_V1", "vgg13-19584684.pth", 507.545,
        69.928, 89.246, 256, 224, "bilinear"),
    _tv("vgg13_bn", "IMAGENET1K_V1", "vgg13_bn-abd245e5.pth", 507.59,
        71.586, 90.374, 256, 224, "bilinear"),
    _tv("vgg16", "IMAGENET1K_V1", "vgg16-397923af.pth", 527.796,
        71.592, 90.382, 256, 224, "bilinear"),
    _tv("vgg16_bn", "IMAGENET1K_V1", "vgg16_bn-6c64b313.pth", 527.866,
        73.36, 91.516, 256, 224, "bilinear"),
    _tv("vgg19", "IMAGENET1K_V1", "vgg19-dcbb9e9d.pth", 548.051,
        72.376, 90.876, 256, 224, "bilinear"),
    _tv("vgg19_bn", "IMAGENET1K_V1", "vgg19_bn-c79401a0.pth", 548.143,
        74.218, 91.842, 256, 224, "bilinear"),
    _tv("googlenet", "IMAGENET1K_V1", "googlenet-1378be20.pth", 49.731,
        69.778, 89.53, 256, 224, "bilinear",
        options={"torchvision_compat": True, "transform_input": True}),
    _tv("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 44.661,
        69.758, 89.078, 256, 224, "bilinear"),
    _tv("resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth", 83.275,
        73.314, 91.42, 256, 224, "bilinear"),
    _tv("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 97.781,
        76.13, 92.862, 256, 224, "bilinear", default=False),
    _tv("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 97.79,
        80.858, 95.434, 232, 224, "bilinear"),
    _tv("resnet101", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 170.511,
        77.374, 93.546, 256, 224, "bilinear", default=False),
    _tv("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 170.53,
        81.886, 95.78, 232, 224, "bilinear"),
    _tv("resnet152", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 230.434,
        78.312, 94.046, 256, 224, "bilinear", default=False),
    _tv("resnet152", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 230.474,
        82.284, 96.002, 232, 224, "bilinear"),
    _tv("densenet121", "IMAGENET1K_V1", "densenet121-a639ec97.pth", 30.845,
        74.434, 91.972, 256, 224, "bilinear"),
    _tv("densenet161", "IMAGENET1K_V1", "densenet161-8d451a50.pth", 110.369,
        77.138, 93.56, 256, 224, "bilinear"),
    _tv("densenet169", "IMAGENET1K_V1", "densenet169-b2777c0a.pth", 54.708,
        75.6, 92.806, 256, 224, "bilinear"),
    _tv("densenet201", "IMAGENET1K_V1", "densenet201-c1103571.pth", 77.373,
        76.896, 93.37, 256, 224, "bilinear"),
    _tv("efficientnet_b0", "IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth", 20.451,
        77.692, 93.532, 256, 224, "bicubic"),
    _tv("efficientnet_b1", "IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth", 30.134,
        78.642, 94.186, 256, 240, "bicubic", default=False),
    _tv("efficientnet_b1", "IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth", 30.136,
        79.838, 94.934, 255, 240, "bilinear"),
    _tv("efficientnet_b2", "IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth", 35.174,
        80.608, 95.31, 288, 288, "bicubic"),
    _tv("efficientnet_b3", "IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth", 47.184,
        82.008, 96.054, 320, 300, "bicubic"),
    _tv("efficientnet_b4", "IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth", 74.489,
        83.384, 96.594, 384, 380, "bicubic"),
    _tv("efficientnet_b5", "IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth", 116.864,
        83.444, 96.628, 456, 456, "bicubic"),
    _tv("efficientnet_b6", "IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth", 165.362,
        84.008, 96.916, 528, 528, "bicubic"),
    _tv("efficientnet_b7", "IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth", 254.675,
        84.122, 96.908, 600, 600, "bicubic"),
    # model, timm name, tag, url, top-1, top-5 at 224, crop_pct (timm's cfg)
    _timm("se_resnet50", "seresnet50", "ra2_in1k",
          _TIMM_OLD_RELEASES + "v0.1-weights/seresnet50_ra_224-8efdb4bb.pth",
          80.260, 95.068, 0.875),
    _timm("se_resnet50", "seresnet50", "a1_in1k",
          _TIMM_RELEASES + "v0.1-rsb-weights/seresnet50_a1_0-ffa00869.pth",
          80.012, 94.704, 0.95, default=False),
    _timm("se_resnet50", "seresnet50", "a2_in1k",
          _TIMM_RELEASES + "v0.1-rsb-weights/seresnet50_a2_0-850de0d9.pth",
          80.102, 94.720, 0.95, default=False),
)


def list_weights(pattern: str = "*") -> list[WeightsEntry]:
    """The entries whose model name (or `model:tag`) matches the shell-style `pattern`."""
    return [w for w in WEIGHTS
            if fnmatch.fnmatchcase(w.model, pattern) or fnmatch.fnmatchcase(w.key, pattern)]


def get_weights(model: str, tag: str | bool = True) -> WeightsEntry:
    """The entry for `model`: its default with `tag=True`, else the one named `tag`.

    Raises:
        ValueError: the model has no published weights, or none under that tag (the message
            lists the tags it has).
    """
    entries = [w for w in WEIGHTS if w.model == model]
    if not entries:
        have = sorted({w.model for w in WEIGHTS})
        raise ValueError(f"{model}: no published weights; models with weights: {', '.join(have)}")
    for w in entries:
        if (tag is True and w.default) or w.tag == tag:
            return w
    raise ValueError(f"{model}: no weights tagged {tag!r}; tags: "
                     f"{', '.join(w.tag for w in entries)}")
