"""Backbones: `create_model(name, features_only=True, out_indices=...)` and `feature_info`.

Spatial rule checked below: for an input side H that is a multiple of the deepest stage's
reduction r_max, every stage's map has side H / r exactly, except AlexNet's strided stages
(r > 1), where the unpadded 11x11/4 conv and 3x3/2 max-pools lose one unit: H / r - 1. For
other sides, the families whose every stride-2 layer is padded (ResNet and its variants, the
CIFAR ResNets, EfficientNet) give ceil(H / r).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.models import FeatureExtractor, FeatureInfo
from cnnzoo.profile.receptive_field import feature_receptive_fields

ALL = cnnzoo.list_models()
HUGE = {"resnet1202", "efficientnet_b6", "efficientnet_b7"}  # checked on the meta device
HEADS = ("fc.", "classifier.", "aux1.", "aux2.", "head.")  # classifier and head-conv keys


def sides(extractor: FeatureExtractor) -> tuple[int, int]:
    """Two input sides, multiples of the deepest reduction, at least the minimum side."""
    r = extractor.feature_info[-1].reduction
    base = r * max(2, math.ceil(extractor.min_input_size / r))
    return base, base + r


def expected_side(extractor: FeatureExtractor, side: int, reduction: int) -> int:
    unpadded = extractor.family == "alexnet" and reduction > 1
    return side // reduction - (1 if unpadded else 0)


def randomise_norm_statistics(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial running statistics, so eval mode is not an identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("name", [n for n in ALL if n not in HUGE])
def test_shapes_match_feature_info(name):
    extractor = cnnzoo.create_model(name, features_only=True).eval()
    info = extractor.feature_info
    assert [i.reduction for i in info] == sorted(i.reduction for i in info)
    for side in sides(extractor):
        with torch.no_grad():
            maps = extractor(torch.randn(1, extractor.input_size[0], side, side))
        assert len(maps) == len(info)
        for m, stage in zip(maps, info, strict=True):
            s = expected_side(extractor, side, stage.reduction)
            assert tuple(m.shape) == (1, stage.num_chs, s, s), (side, stage)


# Strides of the small-image stems, as each family's docstring states them.
SMALL_REDUCTIONS = {
    "alexnet": (1, 1, 2),
    "googlenet": (1, 1, 2, 4),
    "resnet18": (1, 1, 2, 4, 8),
    "densenet121": (1, 2, 4, 8),
    "efficientnet_b0": (1, 2, 4, 8, 16),
}


@pytest.mark.parametrize("name", sorted(SMALL_REDUCTIONS))
def test_small_input_stages(name):
    extractor = cnnzoo.create_model(name, in_chans=1, small_input=True, features_only=True)
    assert tuple(i.reduction for i in extractor.feature_info) == SMALL_REDUCTIONS[name]
    for side in (32, 48):
        with torch.no_grad():
            maps = extractor.eval()(torch.randn(2, 1, side, side))
        for m, stage in zip(maps, extractor.feature_info, strict=True):
            s = expected_side(extractor, side, stage.reduction)
            assert tuple(m.shape) == (2, stage.num_chs, s, s)


@pytest.mark.parametrize("name", ["resnet18", "se_resnet18", "resnet20", "efficientnet_b0"])
def test_padded_families_round_up(name):
    extractor = cnnzoo.create_model(name, features_only=True).eval()
    with torch.no_grad():
        maps = extractor(torch.randn(1, 3, 70, 70))
    assert [m.shape[-1] for m in maps] == [math.ceil(70 / i.reduction)
                                           for i in extractor.feature_info]


@pytest.mark.parametrize("name", [n for n in ALL if n not in HUGE])
def test_features_equal_full_model_activations(name, monkeypatch):
    torch.manual_seed(0)
    full = cnnzoo.create_model(name, num_classes=10).eval()
    randomise_norm_statistics(full)

    linears = []  # every classifier in the zoo is nn.Linear: none may even be constructed
    original = nn.Linear.__init__
    monkeypatch.setattr(nn.Linear, "__init__",
                        lambda self, *a, **k: (linears.append(a), original(self, *a, **k))[1])
    extractor = cnnzoo.create_model(name, features_only=True).eval()
    monkeypatch.undo()
    assert not linears, f"features_only built classifier layers {linears}"
    assert not any(isinstance(m, nn.Linear) for m in extractor.modules())

    missing, unexpected = extractor.load_state_dict(full.state_dict(), strict=False)
    assert not missing, f"keys the full model lacks: {missing[:5]}"
    dropped_heads = [k for k in full.state_dict() if k.startswith(HEADS)]
    assert dropped_heads and set(dropped_heads) <= set(unexpected)
    assert not any(k.startswith(HEADS) for k in extractor.state_dict())
    assert extractor.feature_info == full.feature_info

    captured = []
    for stage in extractor.feature_info:
        full.get_submodule(stage.module).register_forward_hook(
            lambda module, args, out: captured.append(out.clone()))
    x = torch.randn(2, full.input_size[0], *(sides(extractor)[0],) * 2)
    with torch.no_grad():
        full(x)
        maps = extractor(x)
    assert len(captured) == len(maps) == len(extractor.feature_info)
    for stage, expected, got in zip(extractor.feature_info, captured, maps, strict=True):
        assert torch.equal(got, expected), f"{stage.module} differs"


@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_models_on_meta(name):
    with torch.device("meta"):
        extractor = cnnzoo.create_model(name, features_only=True)
        full = cnnzoo.create_model(name)
    assert not any(isinstance(m, nn.Linear) for m in extractor.modules())
    assert extractor.feature_info == full.feature_info
    side = sides(extractor)[0]
    maps = extractor(torch.empty(1, 3, side, side, device="meta"))
    assert [tuple(m.shape) for m in maps] == [
        (1, i.num_chs, side // i.reduction, side // i.reduction) for i in extractor.feature_info]


def test_feature_info_at_224_by_hand():
    """Stages, channels, strides and receptive fields worked out from the papers' layer tables.

    RF grows by (k - 1) * jump per layer (jump = stride so far); padding does not change it.
    """
    def info(name):
        with torch.device("meta"):
            model = cnnzoo.create_model(name)
        fields = feature_receptive_fields(model)
        return [(i.module, i.num_chs, i.reduction, f.rf[0])
                for i, f in zip(model.feature_info, fields, strict=True)]

    # AlexNet: conv1 11/4 -> 11; pool 3/2 -> 19 (jump 8); conv2 5x5 -> 19 + 4*8 = 51;
    # pool -> 67 (jump 16); conv3..5 3x3 -> 67 + 3*2*16 = 163.
    assert info("alexnet") == [("features.1", 64, 4, 11), ("features.4", 192, 8, 51),
                               ("features.11", 256, 16, 163)]
    # VGG-16: conv1_2 5; pool 6, conv2_2 14; pool 16, conv3_3 40; pool 44, conv4_3 92;
    # pool 100, conv5_3 100 + 3*2*16 = 196.
    assert info("vgg16") == [("features.3", 64, 1, 5), ("features.8", 128, 2, 14),
                             ("features.15", 256, 4, 40), ("features.22", 512, 8, 92),
                             ("features.29", 512, 16, 196)]
    # ResNet-50 (v1.5, stride on the 3x3): stem 7x7/2 -> 7; max-pool 3/2 -> 11 (jump 4);
    # layer1: three 3x3 at jump 4 -> 35; layer2: 3x3/2 at jump 4 -> 43, then three at jump 8
    # -> 91; layer3: 91 + 16 + 5*32 = 267; layer4: 267 + 32 + 2*64 = 427.
    assert info("resnet50") == [("relu", 64, 2, 7), ("layer1", 256, 4, 35),
                                ("layer2", 512, 8, 91), ("layer3", 1024, 16, 267),
                                ("layer4", 2048, 32, 427)]
    # GoogLeNet (paper form, 5x5 branch): conv1 7/2 -> 7; pool 3/2 -> 11 (jump 4); conv3 3x3
    # -> 19; pool -> 27 (jump 8); 3a, 3b: 5x5 branch +32 each -> 91; pool -> 107 (jump 16);
    # 4a..4e: +64 each -> 427; pool 2/2 -> 443 (jump 32); 5a, 5b: +128 each -> 699.
    assert info("googlenet") == [("lrn2", 192, 4, 19), ("inception3b", 480, 8, 91),
                                 ("inception4e", 832, 16, 427), ("inception5b", 1024, 32, 699)]
    # DenseNet-121: stem 7/2 + pool 3/2 -> 11 (jump 4); block1 6 layers x 2*4 -> 59;
    # transition pool 2/2 -> 63 (jump 8); block2 12 x 16 -> 255; -> 263; block3 24 x 32 ->
    # 1031; -> 1047; block4 16 x 64 -> 2071.
    assert info("densenet121") == [
        ("features.denseblock1", 256, 4, 59), ("features.denseblock2", 512, 8, 255),
        ("features.denseblock3", 1024, 16, 1031), ("features.denseblock4", 1024, 32, 2071)]
    # EfficientNet-B0, Table 1 (k, stride, repeats): stem 3/2 -> 3; MBConv1 k3 -> 7;
    # k3 s2 x2 -> 11, 19 (jump 4); k5 s2 x2 -> 35, 67 (jump 8); k3 s2 x3 -> 83, 115, 147
    # (jump 16); k5 x3 -> 339; k5 s2 x4 -> 403 (jump 32) + 3*128 = 787; k3 -> 851.
    assert info("efficientnet_b0") == [("stages.0", 16, 2, 7), ("stages.1", 24, 4, 19),
                                       ("stages.2", 40, 8, 67), ("stages.4", 112, 16, 339),
                                       ("stages.6", 320, 32, 851)]
    # GoogLeNet in torchvision's form has a 3x3 "5x5" branch: +2*jump per module instead.
    with torch.device("meta"):
        tv = cnnzoo.create_model("googlenet", torchvision_compat=True)
    assert [f.rf[0] for f in feature_receptive_fields(tv)] == [19, 59, 235, 379]


@pytest.mark.parametrize("name", ALL)
def test_feature_info_agrees_with_receptive_field(name):
    """The declared `feature_info` against the one engine: each stage's reduction is the jump
    `cnnzoo.receptive_field` tracks beside the tensors of a meta forward, its channels the
    module's output channels."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    fields = feature_receptive_fields(model)
    for stage, row in zip(model.feature_info, fields, strict=True):
        assert row.path == stage.module
        assert stage.reduction == row.jump[0], stage
        assert row.output_shape[1] == stage.num_chs


@pytest.mark.parametrize("name, index", [("resnet20", 3), ("plain20", 2),
                                         ("compact_resnet8", 3), ("vgg11", 3)])
def test_receptive_field_is_the_gradient_support(name, index):
    """The input gradient of a central unit is non-zero exactly over `receptive_field` rows
    and columns: the bound holds and is tight (float64, eval mode, random weights)."""
    torch.manual_seed(0)
    extractor = cnnzoo.create_model(name, in_chans=1, features_only=True,
                                    out_indices=(index,)).double().eval()
    rf = feature_receptive_fields(cnnzoo.create_model(name, in_chans=1))[index].rf[0]
    side = 2 * rf + 2 * extractor.feature_info[0].reduction
    x = torch.randn(1, 1, side, side, dtype=torch.float64, requires_grad=True)
    (fmap,) = extractor(x)
    c = fmap.shape[-1] // 2
    fmap[0, :, c, c].sum().backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero().flatten()
    cols = x.grad[0, 0].abs().sum(0).nonzero().flatten()
    for support in (rows, cols):
        assert support[0] > 0 and support[-1] < side - 1, "the field must lie inside the image"
    assert rows[-1] - rows[0] + 1 == rf
    assert cols[-1] - cols[0] + 1 == rf


def test_out_indices_select_and_trim():
    torch.manual_seed(0)
    every = cnnzoo.create_model("resnet18", features_only=True).eval()
    some = cnnzoo.create_model("resnet18", features_only=True, out_indices=(1, -2)).eval()
    assert some.out_indices == (1, 3)
    assert some.feature_info == [every.feature_info[1], every.feature_info[3]]
    # Nothing after the last selected stage is kept.
    assert not any(k.startswith("layer4.") for k in some.state_dict())
    some.load_state_dict({k: v for k, v in every.state_dict().items()
                          if not k.startswith("layer4.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        all_maps, maps = every(x), some(x)
    assert len(maps) == 2
    assert torch.equal(maps[0], all_maps[1]) and torch.equal(maps[1], all_maps[3])

    # A stage inside a Sequential (VGG's features) keeps only the layers up to it.
    vgg = cnnzoo.create_model("vgg11", features_only=True, out_indices=(0,))
    assert list(dict(vgg.named_children())) == ["features"]
    assert len(vgg.features) == 2  # conv1 and its ReLU
    assert vgg.feature_info[0].module == "features.1"


@pytest.mark.parametrize("bad", [(5,), (-6,), (1, 1), (3, 1), (), ("1",), (1.0,), (True,)])
def test_bad_out_indices_name_model_and_range(bad):
    with pytest.raises(ValueError) as err:
        cnnzoo.create_model("resnet18", features_only=True, out_indices=bad)
    msg = str(err.value)
    assert msg.startswith("resnet18: out_indices") and "0..4" in msg and "\n" not in msg


@pytest.mark.parametrize("name", ["googlenet", "densenet_bc100", "efficientnet_b0",
                                  "resnet50_dcnv2", "vgg11_bn"])
def test_every_kept_parameter_is_used(name):
    """Training mode: each parameter of the extractor gets a gradient (no dead weight for DDP)."""
    extractor = cnnzoo.create_model(name, features_only=True).train()
    side = sides(extractor)[0]
    maps = extractor(torch.randn(2, 3, side, side))
    sum(m.square().mean() for m in maps).backward()
    unused = [n for n, p in extractor.named_parameters() if p.grad is None]
    assert not unused, unused[:5]


def test_out_indices_need_features_only():
    with pytest.raises(ValueError, match="resnet18: out_indices .* features_only=True"):
        cnnzoo.create_model("resnet18", out_indices=(1,))


def test_extractor_checks_input():
    extractor = cnnzoo.create_model("alexnet", features_only=True)
    with pytest.raises(ValueError, match=r"^alexnet: expected \(N, 3, H, W\) with H, W >= 63"):
        extractor(torch.randn(1, 3, 62, 62))
    with pytest.raises(ValueError, match="got 1 channels"):
        extractor(torch.randn(1, 1, 64, 64))


def test_num_classes_zero_builds_no_classifier():
    model = cnnzoo.create_model("vgg11", num_classes=0).eval()
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 512 * 7 * 7)  # the FC input
    googlenet = cnnzoo.create_model("googlenet", num_classes=0).train()
    assert googlenet.aux1 is None and googlenet.aux2 is None
    assert googlenet(torch.randn(2, 3, 64, 64)).shape == (2, 1024)
    with pytest.raises(ValueError, match="resnet18: expected num_classes as an int >= 0"):
        cnnzoo.create_model("resnet18", num_classes=-1)


def test_feature_info_is_a_record():
    with torch.device("meta"):
        model = cnnzoo.create_model("resnet18")
    assert model.feature_info[2] == FeatureInfo(module="layer2", num_chs=128, reduction=8)
    assert feature_receptive_fields(model)[2].rf[0] == 99  # the field, from the one engine
