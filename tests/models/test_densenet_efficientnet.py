"""DenseNet and EfficientNet: sizes, the dense connection, compound scaling, stochastic depth,
small images, input checks and the torchvision key mapping (logit equality is in
test_reference.py)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import DropPath, make_divisible
from cnnzoo.models import registry
from cnnzoo.models.convert import EFFICIENTNET_RULES, convert_keys
from cnnzoo.models.densenet import DenseBlock, DenseLayer, Transition
from cnnzoo.models.efficientnet import (
    B0_STAGES,
    CompoundScaling,
    MBConv,
    compound_scaling,
)
from reference import manifest

# torchvision 0.29.1 published num_params (tests/fixtures/reference/published.md, section 1).
TORCHVISION_PARAMS = {
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
}
RESOLUTIONS = {f"efficientnet_b{i}": r
               for i, r in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}
FAMILY = sorted([*TORCHVISION_PARAMS, "densenet_bc100", "efficientnet_scaled"])


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **options)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_params_match_torchvision(name):
    assert num_params(meta_model(name)) == TORCHVISION_PARAMS[name]


def test_densenet_bc100_size_and_layers():
    model = meta_model("densenet_bc100", num_classes=10)
    # Huang et al. report 0.8M for DenseNet-BC (L=100, k=12); exact count of this layout.
    assert num_params(model) == 769_162
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 100  # L counts every conv and the FC
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)
    assert convs[0].out_channels == 2 * 12
    assert model.input_size == (3, 32, 32)


def test_builders_are_keyword_only_with_explicit_options():
    for name in FAMILY:
        params = inspect.signature(registry.get_builder(name)).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), name
    with pytest.raises(TypeError, match="'growth_rate'"):
        cnnzoo.create_model("densenet121", growth_rate=12)


# --- DenseNet -------------------------------------------------------------------------------

def test_dense_layers_grow_channels_by_k():
    torch.manual_seed(0)
    k, c0, n = 5, 8, 4
    block = DenseBlock(n, c0, k).eval()
    seen = []
    for layer in block.values():
        layer.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].shape[1],
                                                                       out.shape[1])))
    x = torch.randn(2, c0, 6, 6)
    with torch.no_grad():
        y = block(x)
    assert seen == [(c0 + i * k, k) for i in range(n)]
    assert y.shape == (2, c0 + n * k, 6, 6)
    assert torch.equal(y[:, :c0], x), "the block's input is passed on unchanged"
    # Each layer's new maps sit after everything it saw.
    with torch.no_grad():
        first = block["denselayer1"](x)
    torch.testing.assert_close(y[:, c0:c0 + k], first)


def test_dense_layer_bottleneck_is_4k():
    layer = DenseLayer(64, 32)
    assert layer.conv1.out_channels == 4 * 32 and layer.conv1.kernel_size == (1, 1)
    assert layer.conv2.out_channels == 32 and layer.conv2.kernel_size == (3, 3)


def test_densenet121_channel_bookkeeping():
    model = meta_model("densenet121")
    transitions = [m for m in model.modules() if isinstance(m, Transition)]
    # 64 + 6*32 = 256 -> 128; 128 + 12*32 = 512 -> 256; 256 + 24*32 = 1024 -> 512
    assert [(t.conv.in_channels, t.conv.out_channels) for t in transitions] == [
        (256, 128), (512, 256), (1024, 512)]
    assert model.num_features == 512 + 16 * 32 == 1024


@pytest.mark.parametrize(("name", "options", "side"), [
    ("densenet121", {}, 29),
    ("densenet121", {"small_input": True}, 8),
    ("densenet_bc100", {}, 4),
])
def test_densenet_min_input_size_is_honest(name, options, side):
    model = cnnzoo.create_model(name, num_classes=3, **options).eval()
    assert model.min_input_size == side
    with torch.no_grad():
        out = model(torch.randn(1, 3, side, side))
    assert out.shape == (1, 3)
    # One pixel less: the check refuses it, and without the check the network really fails.
    x = torch.randn(1, 3, side - 1, side - 1)
    with pytest.raises(ValueError, match=name):
        model(x)
    with pytest.raises(RuntimeError), torch.no_grad():
        model.forward_head(model.forward_features(x))


# --- EfficientNet ---------------------------------------------------------------------------

def test_b0_table_is_table_1():
    rows = [(s.expand_ratio, s.kernel, s.stride, s.out_ch, s.repeats) for s in B0_STAGES]
    assert rows == [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def test_compound_scaling_phi_1():
    s = compound_scaling(1.0)
    assert s.depth_mult == pytest.approx(1.2)
    assert s.width_mult == pytest.approx(1.1)
    assert s.resolution == round(224 * 1.15) == 258
    stages = s.scale_stages(B0_STAGES)
    assert [r.repeats for r in stages] == [math.ceil(r.repeats * 1.2) for r in B0_STAGES]
    assert [r.out_ch for r in stages] == [make_divisible(r.out_ch * 1.1, 8) for r in B0_STAGES]
    model = meta_model("efficientnet_scaled", phi=1.0)
    assert model.input_size == (3, 258, 258)
    # Every conv width is a multiple of 8, except SE's reduction (block input // 4).
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    blocks = sum(r.repeats for r in stages)
    assert blocks == 2 + 3 + 3 + 4 + 4 + 5 + 2  # ceil(1.2 n) for n = 1, 2, 2, 3, 3, 4, 1
    # stem, head, 5 convs per block (expand, dw, SE fc1/fc2, project) but 4 in stage 1
    assert len(widths) == 2 + 5 * blocks - stages[0].repeats
    assert all(w % 8 == 0 for n, w in widths.items() if not n.endswith("se.fc1")), widths
    assert sum(isinstance(m, MBConv) for m in model.modules()) == blocks


def test_compound_scaling_other_phi_and_bases():
    s = compound_scaling(2.0, base_resolution=32)
    assert (s.depth_mult, s.width_mult) == pytest.approx((1.2**2, 1.1**2))
    assert s.resolution == round(32 * 1.15**2)
    down = compound_scaling(-1.0)
    assert down.width_mult < 1 and down.depth_mult < 1 and down.resolution == round(224 / 1.15)
    assert compound_scaling(0.0) == CompoundScaling()
    with pytest.raises(ValueError, match="CompoundScaling"):
        CompoundScaling(width_mult=0.0)


def test_explicit_multipliers_are_respected():
    width = meta_model("efficientnet_scaled", width_mult=0.5)
    assert width.scaling == CompoundScaling(0.5, 1.0, 224)
    assert width.stem[0].out_channels == make_divisible(32 * 0.5, 8) == 16
    assert width.num_features == 640
    assert sum(isinstance(m, MBConv) for m in width.modules()) == 16

    depth = meta_model("efficientnet_scaled", depth_mult=2.0)
    assert depth.scaling == CompoundScaling(1.0, 2.0, 224)
    assert sum(isinstance(m, MBConv) for m in depth.modules()) == 32
    assert depth.num_features == 1280

    res = meta_model("efficientnet_scaled", resolution=300)
    assert res.input_size == (3, 300, 300)
    assert num_params(res) == TORCHVISION_PARAMS["efficientnet_b0"]  # resolution adds no weight

    mixed = meta_model("efficientnet_scaled", phi=1.0, depth_mult=1.0)
    assert (mixed.scaling.width_mult, mixed.scaling.depth_mult) == (pytest.approx(1.1), 1.0)
    assert mixed.scaling.resolution == 258

    small = meta_model("efficientnet_scaled", phi=1.0, small_input=True)
    assert small.input_size == (3, round(32 * 1.15), round(32 * 1.15))


@pytest.mark.parametrize("name", sorted(RESOLUTIONS))
def test_released_variants_resolution_and_norm(name):
    model = meta_model(name)
    assert model.input_size == (3, RESOLUTIONS[name], RESOLUTIONS[name])
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    late = name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
    assert {(m.eps, m.momentum) for m in norms} == ({(1e-3, 0.01)} if late else {(1e-5, 0.1)})
    dropout = {0: 0.2, 1: 0.2, 2: 0.3, 3: 0.3, 4: 0.4, 5: 0.4, 6: 0.5, 7: 0.5}[int(name[-1])]
    assert model.head_drop.p == dropout


def test_mbconv_structure_of_b0():
    model = meta_model("efficientnet_b0")
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    in_chs = 32
    for block in blocks:
        out_chs = block.project[0].out_channels
        stride = block.dw[0].stride[0]
        assert block.se.fc1.out_channels == max(1, in_chs // 4)
        assert block.use_residual == (stride == 1 and in_chs == out_chs)
        assert isinstance(block.project[-1], nn.BatchNorm2d), "projection is linear"
        assert block.dw[0].groups == block.dw[0].in_channels
        in_chs = out_chs
    first = blocks[0]
    assert isinstance(first.expand, nn.Identity), "expand ratio 1 has no expand conv"
    assert all(isinstance(m, nn.SiLU) for m in (model.stem[2], model.head[2], first.se.act))


def test_stochastic_depth_rates_and_behaviour():
    model = cnnzoo.create_model("efficientnet_scaled", width_mult=0.25, depth_mult=0.5,
                                num_classes=4, drop_rate=0.0, drop_path_rate=0.5,
                                small_input=True)
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    rates = [b.drop_path.p if isinstance(b.drop_path, DropPath) else None for b in blocks]
    total = len(blocks)
    expected = [0.5 * i / total if b.use_residual else None for i, b in enumerate(blocks)]
    assert rates == pytest.approx(expected)
    assert any(r for r in rates if r), "some residual block must drop"

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    model.train()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b), "train mode with drop_path_rate > 0 must be random"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))

    # Without stochastic depth (and dropout), train mode is deterministic: the randomness
    # above came from DropPath alone.
    plain = cnnzoo.create_model("efficientnet_scaled", width_mult=0.25, depth_mult=0.5,
                                num_classes=4, drop_rate=0.0, drop_path_rate=0.0,
                                small_input=True).train()
    assert torch.equal(plain(x), plain(x))


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
                                  "efficientnet_b3"])
def test_efficientnet_rules_map_every_torchvision_key(name):
    reference = {key: torch.empty(0) for key, _, _ in manifest(name)["state_dict"]}
    mapped = convert_keys(reference, EFFICIENTNET_RULES)
    assert len(mapped) == len(reference)
    assert list(mapped) == list(meta_model(name).state_dict())


def test_efficientnet_accepts_one_pixel():
    model = cnnzoo.create_model("efficientnet_scaled", width_mult=0.25, depth_mult=0.25,
                                num_classes=3).eval()
    assert model.min_input_size == 1
    with torch.no_grad():
        assert model(torch.randn(2, 3, 1, 1)).shape == (2, 3)
    with pytest.raises(ValueError, match="efficientnet_scaled"):
        model(torch.randn(2, 3, 0, 0))


# --- small images and bad inputs ------------------------------------------------------------

@pytest.mark.parametrize(("name", "options", "final_side"), [
    ("densenet121", {"small_input": True}, {28: 3, 32: 4}),
    ("densenet_bc100", {}, {28: 7, 32: 8}),
    ("efficientnet_b0", {"small_input": True}, {28: 2, 32: 2}),
    ("efficientnet_scaled", {"width_mult": 0.25, "depth_mult": 0.5, "small_input": True},
     {28: 2, 32: 2}),
])
def test_small_images_train(name, options, final_side):
    torch.manual_seed(0)
    for chans, side in ((1, 28), (3, 32)):
        model = cnnzoo.create_model(name, num_classes=10, in_chans=chans, **options).train()
        assert model.input_size == (chans, 32, 32)
        x = torch.randn(2, chans, side, side)
        feats = model.forward_features(x)
        assert feats.shape[-2:] == (final_side[side], final_side[side])
        loss = nn.functional.cross_entropy(model.forward_head(feats), torch.tensor([1, 7]))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_imagenet_stem_rejects_fashion_mnist_and_says_why():
    model = meta_model("densenet121", in_chans=1)
    with pytest.raises(ValueError, match=r"densenet121: .*H, W >= 29.*\(1, 1, 28, 28\)"):
        model(torch.empty(1, 1, 28, 28, device="meta"))


@pytest.mark.parametrize("name", ["densenet169", "densenet_bc100", "efficientnet_b3"])
def test_bad_inputs_raise_value_error_naming_the_model(name):
    model = meta_model(name, num_classes=10)
    for x in (torch.empty(2, 1, 64, 64, device="meta"),  # wrong channel count
              torch.empty(3, 64, 64, device="meta")):  # no batch dimension
        with pytest.raises(ValueError, match=name):
            model(x)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="drop_path_rate"):
        cnnzoo.create_model("efficientnet_b0", drop_path_rate=1.0)
    with pytest.raises(ValueError, match="drop_rate"):
        cnnzoo.create_model("densenet_bc100", drop_rate=-0.1)
    with pytest.raises(ValueError, match="CompoundScaling"):
        cnnzoo.create_model("efficientnet_scaled", width_mult=-1.0)


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "efficientnet_b0",
                                  "efficientnet_b1", "efficientnet_b2", "efficientnet_b3"])
def test_macs_at_224_match_reference(name):
    model = meta_model(name).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() // 2 == manifest(name)["macs_per_image"]
