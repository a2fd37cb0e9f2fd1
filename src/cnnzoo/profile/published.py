"""Published ImageNet-1K results of the zoo's architectures, each with its source.

These are other people's numbers, shown in the comparison report as "published" and never
as measured. Top-1 is single-crop accuracy on the ImageNet-1K validation set, in percent.

Sources (collected in tests/fixtures/reference/published.md):

- torchvision 0.29.1, the `IMAGENET1K_V1` weights of each builder (the docs table columns
  Acc@1, Params and GFLOPS, from `torchvision/models/<file>.py`). torchvision's "GFLOPS" are
  GMACs, at the weights' evaluation crop: 224 except EfficientNet B1..B7 (240, 288, 300,
  380, 456, 528, 600). Its GoogLeNet is the BatchNorm variant with 3x3 "5x5" branches
  (cnnzoo `googlenet(torchvision_compat=True)`); ResNet-50 V1 weights are used, the ones that
  "reproduce closely the results of the paper" (V2 reaches 80.858 with a newer recipe).
- SE-ResNet: Hu et al., "Squeeze-and-Excitation Networks" (arXiv:1709.01507), Table 2,
  top-1 = 100 - the SENet column's single-crop top-1 error (SE-ResNet-50: 100 - 23.29).
"""

from __future__ import annotations

from dataclasses import dataclass

TORCHVISION = "torchvision 0.29.1 IMAGENET1K_V1 weights (docs table Acc@1)"
SENET_TABLE_2 = "Hu et al. 2018, Squeeze-and-Excitation Networks, Table 2 (100 - top-1 error)"


@dataclass(frozen=True)
class Published:
    """One published result.

    Attributes:
        top1_percent: ImageNet-1K validation top-1 accuracy, percent.
        source: where the number is printed.
        params: parameter count of the published model, if the source gives it exactly.
        gmacs: multiply-accumulates per image at `eval_size`, in units of 1e9, if given.
        eval_size: side of the square evaluation crop, pixels.
        note: what differs between the published model and cnnzoo's default build.
    """

    top1_percent: float
    source: str
    params: int | None = None
    gmacs: float | None = None
    eval_size: int = 224
    note: str = ""


def _tv(top1: float, params: int, gmacs: float, eval_size: int = 224, note: str = "") -> Published:
    return Published(top1, TORCHVISION, params, gmacs, eval_size, note)


_SE_NOTE = ("the paper's own model (Caffe, its training recipe); the paper's GFLOPs column is "
            "its own count, not FlopCounterMode's")

PUBLISHED_TOP1: dict[str, Published] = {
    "alexnet": _tv(56.522, 61_100_840, 0.714),
    "vgg11": _tv(69.020, 132_863_336, 7.609),
    "vgg11_bn": _tv(70.370, 132_868_840, 7.609),
    "vgg13": _tv(69.928, 133_047_848, 11.308),
    "vgg13_bn": _tv(71.586, 133_053_736, 11.308),
    "vgg16": _tv(71.592, 138_357_544, 15.470),
    "vgg16_bn": _tv(73.360, 138_365_992, 15.470),
    "vgg19": _tv(72.376, 143_667_240, 19.632),
    "vgg19_bn": _tv(74.218, 143_678_248, 19.632),
    "googlenet": _tv(
        69.778, 6_624_904, 1.498,
        note="torchvision's BatchNorm GoogLeNet (cnnzoo googlenet(torchvision_compat=True)); "
             "params without the auxiliary heads",
    ),
    "resnet18": _tv(69.758, 11_689_512, 1.814),
    "resnet34": _tv(73.314, 21_797_672, 3.664),
    "resnet50": _tv(76.130, 25_557_032, 4.089),
    "resnet101": _tv(77.374, 44_549_160, 7.801),
    "resnet152": _tv(78.312, 60_192_808, 11.514),
    "densenet121": _tv(74.434, 7_978_856, 2.834),
    "densenet161": _tv(77.138, 28_681_000, 7.728),
    "densenet169": _tv(75.600, 14_149_480, 3.360),
    "densenet201": _tv(76.896, 20_013_928, 4.291),
    "efficientnet_b0": _tv(77.692, 5_288_548, 0.386),
    "efficientnet_b1": _tv(78.642, 7_794_184, 0.687, eval_size=240),
    "efficientnet_b2": _tv(80.608, 9_109_994, 1.088, eval_size=288),
    "efficientnet_b3": _tv(82.008, 12_233_232, 1.827, eval_size=300),
    "efficientnet_b4": _tv(83.384, 19_341_616, 4.394, eval_size=380),
    "efficientnet_b5": _tv(83.444, 30_389_784, 10.266, eval_size=456),
    "efficientnet_b6": _tv(84.008, 43_040_704, 19.068, eval_size=528),
    "efficientnet_b7": _tv(84.122, 66_347_960, 37.746, eval_size=600),
    "se_resnet50": Published(100 - 23.29, SENET_TABLE_2, gmacs=3.87, note=_SE_NOTE),
    "se_resnet101": Published(100 - 22.38, SENET_TABLE_2, gmacs=7.60, note=_SE_NOTE),
    "se_resnet152": Published(100 - 21.57, SENET_TABLE_2, gmacs=11.32, note=_SE_NOTE),
}


def published_top1(name: str) -> Published | None:
    """The published result for a registry name, or None when there is none."""
    return PUBLISHED_TOP1.get(name)
