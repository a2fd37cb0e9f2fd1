"""Layer tests: equivalences with plain PyTorch, values made by torchvision, hand-checked cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo.layers import (
    ConvNormAct,
    DeformConv2d,
    DropPath,
    SqueezeExcite,
    deform_conv2d,
    drop_path,
    make_divisible,
)
from reference import REFERENCE

DEFORM_CASES_PATH = REFERENCE / "deform_conv2d.pt"
EXPECTED_DEFORM_CASES = {
    "v1_basic", "v1_stride2_dil2", "v1_offset_groups", "v1_groups_k5",
    "v2_mask", "v2_mask_stride2_offset_groups",
}


def _deform_cases() -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(DEFORM_CASES_PATH, weights_only=True)


def _deform_case_names() -> list[str]:
    # Collected from the file itself so a case added there is tested without editing this file.
    return sorted(_deform_cases()) if DEFORM_CASES_PATH.exists() else sorted(EXPECTED_DEFORM_CASES)


# ---------------------------------------------------------------- deform_conv2d vs torchvision


def test_deform_reference_has_the_expected_cases():
    assert set(_deform_cases()) >= EXPECTED_DEFORM_CASES


@pytest.mark.parametrize("name", _deform_case_names())
def test_deform_conv2d_matches_torchvision(name):
    case = _deform_cases()[name]
    leaves = {k: case[k].clone().requires_grad_()
              for k in ("input", "offset", "weight", "bias", "mask") if k in case}
    out = deform_conv2d(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"],
                        stride=int(case["stride"]), padding=int(case["padding"]),
                        dilation=int(case["dilation"]), mask=leaves.get("mask"))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, case["output"], atol=1e-8, rtol=0)
    (out * case["upstream"]).sum().backward()
    assert name.startswith("v1") or "mask" in leaves
    for key, leaf in leaves.items():
        torch.testing.assert_close(leaf.grad, case[f"grad_{key}"], atol=1e-8, rtol=0,
                                   msg=lambda m, key=key: f"grad_{key}: {m}")


# ---------------------------------------------------------------- deform_conv2d equivalences


@pytest.mark.parametrize(
    "c_in, c_out, k, stride, padding, dilation, groups, offset_groups",
    [
        (3, 4, 3, 1, 1, 1, 1, 1),
        (4, 6, 3, 2, 0, 1, 2, 1),
        (4, 4, 3, (1, 2), (2, 1), 2, 1, 2),
        (6, 4, (3, 5), 1, (1, 2), (2, 1), 2, 3),
        (4, 8, 1, 2, 0, 1, 4, 4),
    ],
)
def test_zero_offsets_equal_conv2d(c_in, c_out, k, stride, padding, dilation, groups,
                                   offset_groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, 9, 11, generator=g, dtype=torch.float64)
    conv = nn.Conv2d(c_in, c_out, k, stride, padding, dilation, groups).double()
    expected = conv(x)
    kh, kw = conv.kernel_size
    offset = torch.zeros(2, 2 * offset_groups * kh * kw, *expected.shape[2:], dtype=x.dtype)
    out = deform_conv2d(x, offset, conv.weight, conv.bias, stride, padding, dilation)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    ones = torch.ones(2, offset_groups * kh * kw, *expected.shape[2:], dtype=x.dtype)
    out = deform_conv2d(x, offset, conv.weight, conv.bias, stride, padding, dilation, ones)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("modulated", [False, True])
def test_fresh_module_equals_conv2d(modulated):
    torch.manual_seed(0)
    layer = DeformConv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=2, offset_groups=2,
                         modulated=modulated)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=2)
    conv.load_state_dict({"weight": layer.weight, "bias": layer.bias})
    x = torch.randn(2, 8, 13, 10)
    x_conv = x.clone().requires_grad_()
    x_deform = x.clone().requires_grad_()
    out = layer(x_deform)
    expected = conv(x_conv)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    torch.testing.assert_close(x_deform.grad, x_conv.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.weight.grad, conv.weight.grad, atol=1e-4, rtol=1e-5)
    # The zero-initialised offset conv still learns: its gradient is not zero.
    assert layer.conv_offset.weight.grad.abs().sum() > 0


def test_integer_offset_shifts_the_input():
    # Every tap moved by dx = +1 reads the pixel to its right: the plain conv taken one column
    # further right, i.e. over the input padded by 0 columns on the left and 2 on the right.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    offset = torch.zeros(1, 18, 5, 6, dtype=x.dtype)
    offset[:, 1::2] = 1.0
    out = deform_conv2d(x, offset, weight, padding=1)
    torch.testing.assert_close(out, F.conv2d(F.pad(x, (0, 2, 1, 1)), weight), atol=1e-12, rtol=0)
    # dy = -1: each tap reads the row above (2 zero rows on top, none below).
    offset = torch.zeros_like(offset)
    offset[:, 0::2] = -1.0
    out = deform_conv2d(x, offset, weight, padding=1)
    torch.testing.assert_close(out, F.conv2d(F.pad(x, (1, 1, 2, 0)), weight), atol=1e-12, rtol=0)


def test_half_pixel_offset_averages_neighbours():
    x = torch.tensor([[[[1.0, 3.0, 7.0], [5.0, 9.0, 11.0]]]], dtype=torch.float64)
    weight = torch.ones(1, 1, 1, 1, dtype=x.dtype)
    offset = torch.tensor([0.5, 0.5], dtype=x.dtype).view(1, 2, 1, 1).expand(1, 2, 2, 3)
    out = deform_conv2d(x, offset, weight)
    # Centre of each 2x2 square; the last row/column mixes in zeros from outside the image.
    expected = torch.tensor([[[[4.5, 7.5, 4.5], [3.5, 5.0, 2.75]]]], dtype=x.dtype)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_offset_gradient_at_integer_points_is_the_forward_difference():
    # torchvision's convention (floor, then the right/lower neighbour). A fresh layer's
    # offsets are exactly 0, so this is the gradient that starts the offset conv's training.
    # 13 x 7 is deliberately not a power of two (see the grid_sample note in deform_conv.py).
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, 7, 13, generator=g, dtype=torch.float32)
    weight = torch.ones(1, 1, 1, 1)
    offset = torch.zeros(1, 2, 7, 13, requires_grad=True)
    deform_conv2d(x, offset, weight).sum().backward()
    padded = F.pad(x, (0, 1, 0, 1))[0, 0]
    torch.testing.assert_close(offset.grad[0, 0], padded[1:, :-1] - padded[:-1, :-1])
    torch.testing.assert_close(offset.grad[0, 1], padded[:-1, 1:] - padded[:-1, :-1])


def test_deform_conv2d_gradcheck():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    # Fractional offsets keep the finite differences away from the kinks at integer points.
    offset = (torch.randint(-3, 3, (1, 2 * 2 * 4, 4, 4), generator=g)
              + 0.2 + 0.6 * torch.rand(1, 2 * 2 * 4, 4, 4, generator=g, dtype=torch.float64))
    offset.requires_grad_()
    weight = torch.randn(4, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, 2 * 4, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, stride=1, padding=(0, 1), dilation=(1, 2),
                             mask=mask)

    assert torch.autograd.gradcheck(fn, (x, offset, weight, bias, mask))


def test_flop_counter_counts_the_deform_conv_like_a_conv():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 10, 10, generator=g)
    weight = torch.randn(6, 4, 3, 3, generator=g)
    offset = torch.randn(2, 2 * 9, 5, 5, generator=g)
    with FlopCounterMode(display=False) as deform_count:
        deform_conv2d(x, offset, weight, stride=2, padding=1)
    with FlopCounterMode(display=False) as conv_count:
        F.conv2d(x, weight, stride=2, padding=1, groups=2)
    expected = 2 * (2 * 6 * 5 * 5) * (4 * 9)  # 2 FLOPs x outputs x MACs per output
    assert conv_count.get_total_flops() == expected
    assert deform_count.get_total_flops() == expected


def test_module_runs_on_the_meta_device():
    layer = DeformConv2d(8, 16, 3, stride=2, padding=1, modulated=True).to("meta")
    out = layer(torch.empty(2, 8, 15, 15, device="meta"))
    assert out.shape == (2, 16, 8, 8) and out.device.type == "meta"


@pytest.mark.parametrize("modulated, offset_groups, expected_channels",
                         [(False, 1, 18), (True, 1, 27), (False, 2, 36), (True, 4, 108)])
def test_module_layout_and_attributes(modulated, offset_groups, expected_channels):
    layer = DeformConv2d(8, 4, 3, 2, 1, 1, 2, bias=False, offset_groups=offset_groups,
                         modulated=modulated)
    assert layer.weight.shape == (4, 4, 3, 3) and layer.bias is None
    assert layer.conv_offset.out_channels == expected_channels
    assert (layer.conv_offset.kernel_size, layer.conv_offset.stride,
            layer.conv_offset.padding, layer.conv_offset.dilation) == ((3, 3), (2, 2), (1, 1),
                                                                       (1, 1))
    assert not layer.conv_offset.weight.any() and not layer.conv_offset.bias.any()
    assert (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, layer.offset_groups,
            layer.modulated) == (8, 4, (3, 3), (2, 2), (1, 1), (1, 1), 2, offset_groups,
                                 modulated)
    assert set(layer.state_dict()) == {"weight", "conv_offset.weight", "conv_offset.bias"}
    text = repr(layer)
    assert "groups=2" in text and "bias=False" in text and f"modulated={modulated}" in text


def test_module_offsets_are_readable_with_a_hook_and_move_the_samples():
    torch.manual_seed(5)
    layer = DeformConv2d(3, 4, 3, padding=1)
    seen = []
    layer.conv_offset.register_forward_hook(lambda mod, inp, out: seen.append(out))
    x = torch.randn(1, 3, 6, 6)
    plain = layer(x)
    with torch.no_grad():
        layer.conv_offset.bias[1::2] = 1.0  # dx = +1 for every tap
    moved = layer(x)
    assert len(seen) == 2 and seen[1].shape == (1, 18, 6, 6)
    expected = F.conv2d(F.pad(x, (0, 2, 1, 1)), layer.weight, layer.bias)
    torch.testing.assert_close(moved, expected)
    assert not torch.allclose(moved, plain)


def _deform_args(**change):
    args = dict(input=torch.zeros(2, 4, 6, 6), offset=torch.zeros(2, 18, 6, 6),
                weight=torch.zeros(8, 4, 3, 3), bias=None, stride=1, padding=1, dilation=1,
                mask=None)
    args.update(change)
    return args


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(input=torch.zeros(4, 6, 6)), "4-D input"),
        (dict(offset=torch.zeros(2, 17, 6, 6)), "multiple of 2 \\* kh \\* kw = 18"),
        (dict(offset=torch.zeros(2, 18, 5, 6)), "offset of shape \\(2, 18, 6, 6\\)"),
        (dict(offset=torch.zeros(1, 18, 6, 6)), "offset of shape \\(2, 18, 6, 6\\)"),
        (dict(offset=torch.zeros(2, 54, 6, 6)), "multiple of offset_groups = 3"),
        (dict(weight=torch.zeros(8, 3, 3, 3)), "multiple of weight.shape\\[1\\] = 3"),
        (dict(weight=torch.zeros(6, 1, 3, 3)), "multiple of groups = 4"),
        (dict(mask=torch.zeros(2, 18, 6, 6)), "mask of shape \\(2, 9, 6, 6\\)"),
        (dict(bias=torch.zeros(4)), "bias of shape \\(8,\\)"),
        (dict(stride=0), "stride as an int >= 1"),
        (dict(padding=(1, 1, 1)), "padding as an int >= 0"),
        (dict(padding=0, input=torch.zeros(2, 4, 2, 2), offset=torch.zeros(2, 18, 1, 1)),
         "too small"),
    ],
)
def test_deform_conv2d_rejects_bad_input(change, message):
    with pytest.raises(ValueError, match=message):
        deform_conv2d(**_deform_args(**change))


def test_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible by groups"):
        DeformConv2d(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="divisible by offset_groups"):
        DeformConv2d(6, 4, 3, offset_groups=4)
    with pytest.raises(ValueError, match="kernel_size"):
        DeformConv2d(6, 4, 0)


# ---------------------------------------------------------------- SqueezeExcite


def test_squeeze_excite_with_gate_forced_open_is_identity():
    torch.manual_seed(0)
    se = SqueezeExcite(32)
    with torch.no_grad():
        se.fc2.weight.zero_()
        se.fc2.bias.fill_(100.0)  # sigmoid(100) == 1 in float32
    x = torch.randn(2, 32, 5, 5)
    assert torch.equal(se(x), x)


def test_squeeze_excite_excitation_shape_range_and_formula():
    torch.manual_seed(0)
    se = SqueezeExcite(32, act_layer=nn.SiLU)
    x = torch.randn(3, 32, 7, 5) * 4
    gate = se.excitation(x)
    assert gate.shape == (3, 32, 1, 1)
    assert ((gate > 0) & (gate < 1)).all() and gate.std() > 0
    # The paper's FC -> act -> FC -> sigmoid on the pooled vector, with linear layers.
    s = x.mean((2, 3))
    fc1 = F.linear(s, se.fc1.weight.flatten(1), se.fc1.bias)
    expected = torch.sigmoid(F.linear(F.silu(fc1), se.fc2.weight.flatten(1), se.fc2.bias))
    torch.testing.assert_close(gate.flatten(1), expected)
    torch.testing.assert_close(se(x), x * expected[:, :, None, None])


@pytest.mark.parametrize("channels, kwargs, rd", [(64, {}, 4), (256, {}, 16), (8, {}, 1),
                                                  (64, {"reduction": 4}, 16),
                                                  (64, {"rd_channels": 24}, 24)])
def test_squeeze_excite_bottleneck_width(channels, kwargs, rd):
    se = SqueezeExcite(channels, **kwargs)
    assert (se.fc1.in_channels, se.fc1.out_channels) == (channels, rd)
    assert (se.fc2.in_channels, se.fc2.out_channels) == (rd, channels)


# ---------------------------------------------------------------- DropPath


def test_drop_path_is_identity_in_eval():
    layer = DropPath(0.5).eval()
    x = torch.randn(8, 3, 4, 4)
    assert layer(x) is x
    assert DropPath(0.0).train()(x) is x


def test_drop_path_drops_whole_samples_and_rescales_the_rest():
    torch.manual_seed(0)
    p = 0.25
    layer = DropPath(p).train()
    x = torch.rand(64, 3, 4, 4) + 0.5
    out = layer(x)
    kept = [torch.allclose(o, xi / (1 - p)) for o, xi in zip(out, x, strict=True)]
    dropped = [bool((o == 0).all()) for o in out]
    assert all(k != d for k, d in zip(kept, dropped, strict=True))
    assert 0 < sum(dropped) < 64


def test_drop_path_preserves_the_mean():
    torch.manual_seed(0)
    x = torch.ones(40_000, 1)
    out = drop_path(x, 0.3, training=True)
    # std of the mean: sqrt(p / (1 - p) / n) = 0.0043, so 0.02 is more than 4 sigma.
    assert abs(out.mean().item() - 1.0) < 0.02
    assert abs((out == 0).float().mean().item() - 0.3) < 0.02


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_drop_path_rejects_probability_out_of_range(p):
    with pytest.raises(ValueError, match="drop probability"):
        DropPath(p)
    with pytest.raises(ValueError, match="drop probability"):
        drop_path(torch.ones(2, 3), p, training=True)


# ---------------------------------------------------------------- make_divisible


@pytest.mark.parametrize(
    "args, expected",
    [
        ((32,), 32),          # int(36) // 8 * 8
        ((32 * 1.1,), 32),    # 35.2: int(39.2) // 8 * 8 = 32 >= 0.9 * 35.2 (EfficientNet-B2 stem)
        ((32 * 1.2,), 40),    # 38.4: int(42.4) // 8 * 8 = 40 (EfficientNet-B3 stem)
        ((35.9,), 40),        # int(39.9) // 8 * 8 = 32 < 0.9 * 35.9 = 32.31: the 90% rule adds 8
        ((10,), 16),          # int(14) // 8 * 8 = 8 < 9: the 90% rule again
        ((3,), 8),            # 0 rounds up to min_value = divisor
        ((3, 8, 4), 4),       # explicit min_value
        ((10, 4), 12),        # int(12) // 4 * 4
        ((2048 / 16,), 128),  # an SE bottleneck
    ],
)
def test_make_divisible(args, expected):
    assert make_divisible(*args) == expected


# ---------------------------------------------------------------- ConvNormAct


@pytest.mark.parametrize("k, dilation", [(3, 1), (5, 1), (3, 2)])
def test_conv_norm_act_default_padding_keeps_size(k, dilation):
    block = ConvNormAct(3, 8, k, dilation=dilation)
    assert block(torch.randn(1, 3, 9, 11)).shape == (1, 8, 9, 11)
    assert ConvNormAct(3, 8, k, stride=2, dilation=dilation)(torch.randn(1, 3, 9, 11)).shape == (
        1, 8, 5, 6)


def test_conv_norm_act_bias_only_without_norm():
    block = ConvNormAct(3, 8)
    assert block[0].bias is None
    assert isinstance(block[1], nn.BatchNorm2d) and isinstance(block[2], nn.ReLU)
    assert set(block.state_dict()) >= {"0.weight", "1.weight", "1.running_mean"}
    plain = ConvNormAct(3, 8, norm_layer=None, act_layer=None)
    assert len(plain) == 1 and plain[0].bias is not None
    assert ConvNormAct(3, 8, bias=True)[0].bias is not None
    assert block.out_channels == 8


def test_conv_norm_act_computes_conv_norm_act():
    torch.manual_seed(0)
    block = ConvNormAct(4, 6, 3, stride=2, groups=2, act_layer=nn.SiLU).eval()
    with torch.no_grad():
        block[1].running_mean.uniform_(-1, 1)
        block[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 8, 8)
    bn = block[1]
    expected = F.silu(F.batch_norm(F.conv2d(x, block[0].weight, stride=2, padding=1, groups=2),
                                   bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                   eps=bn.eps))
    torch.testing.assert_close(block(x), expected)
