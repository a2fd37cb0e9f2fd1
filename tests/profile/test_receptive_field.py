"""cnnzoo.profile.receptive_field: hand-computed fields, and gradients that prove them tight.

The gradient proofs: with every weight and bias positive (|w| + 0.01), batch-norm at its
fresh running statistics (mean 0, variance 1, so it scales by a positive factor) and a
positive input, every pre-activation is positive, so no ReLU cuts a path and no sum of
positive products cancels: the gradient of one output unit is non-zero at exactly the input
pixels some path of non-zero weights connects to it. Max-pooling still passes gradient to
the maximum of each window only, so the support is taken over a batch of 4 random images
(each image's own gradient: batch elements do not interact in eval mode); a border needs one
pixel that some image routes the maximum through (one image was enough for every seed
tried). In float64 nothing underflows. The unit is chosen so that its computed field lies
inside the image (asserted), where padding cannot clip it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.layers import DeformConv2d, SqueezeExcite, deform_conv2d
from cnnzoo.profile.receptive_field import (
    FieldRow,
    layer_columns,
    receptive_field,
    summary_columns,
)

# ---- helpers -----------------------------------------------------------------------------


def positive_(model: nn.Module) -> nn.Module:
    """Every parameter |p| + 0.01, float64, eval mode (see the module docstring)."""
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(0.01)
    return model.double().eval()


def support(forward, shape: tuple[int, int, int], unit: tuple[int, int], *, batch: int = 4,
            seed: int = 0) -> torch.Tensor:
    """(H, W) bool: input pixels where d out[:, :, unit] / d x != 0 for some image."""
    torch.manual_seed(seed)
    x = (torch.rand(batch, *shape, dtype=torch.float64) + 0.1).requires_grad_()
    out = forward(x)
    out[:, :, unit[0], unit[1]].sum().backward()
    return x.grad.abs().sum((0, 1)) > 0


def box(row: FieldRow, unit: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) input pixels, inclusive, of `unit`'s computed field."""
    out = []
    for axis in (0, 1):
        centre = row.start[axis] + unit[axis] * row.jump[axis]
        half = (row.rf[axis] - 1) / 2
        lo, hi = centre - half, centre + half
        assert lo == int(lo) and hi == int(hi), (lo, hi)
        out += [int(lo), int(hi)]
    return tuple(out)


def assert_tight(mask: torch.Tensor, field: tuple[int, int, int, int]) -> None:
    """Gradient only inside the field, and some on each of its four borders."""
    top, bottom, left, right = field
    h, w = mask.shape
    assert top >= 0 and bottom <= h - 1 and left >= 0 and right <= w - 1, (
        f"field {field} is not inside the {h}x{w} image: pick another unit or a larger image")
    outside = mask.clone()
    outside[top:bottom + 1, left:right + 1] = False
    assert not outside.any(), f"gradient outside the field {field}: {outside.nonzero()[:5]}"
    assert mask[top, left:right + 1].any() and mask[bottom, left:right + 1].any()
    assert mask[top:bottom + 1, left].any() and mask[top:bottom + 1, right].any()


def centre_unit(row: FieldRow) -> tuple[int, int]:
    return (row.output_shape[2] // 2, row.output_shape[3] // 2)


def check_model(model: nn.Module, shape: tuple[int, int, int], *, batch: int = 4) -> FieldRow:
    """The output's field (rows[-1]: the model) is tight around the centre unit."""
    row = receptive_field(model, shape).by_path()[""]
    unit = centre_unit(row)
    assert_tight(support(positive_(model), shape, unit, batch=batch), box(row, unit))
    return row


# ---- small models: the gradient proof ----------------------------------------------------


def test_plain_convs_stride_dilation_and_rectangular_kernels():
    # Per axis, rf += d (k - 1) jump; jump *= stride:
    #   H: 1 + 2*1 [3x5 conv] + 4*1 [5/2] + 2*2*2 [3, dilation 2] + 0 [1x1] + 2*2 [3x1 conv] = 19
    #   W: 1 + 4*1 + 4*1 + 2*2*2 + 0 + 0 = 17
    model = nn.Sequential(
        nn.Conv2d(2, 3, (3, 5), padding=(1, 2)),
        nn.Conv2d(3, 3, 5, stride=2, padding=2),
        nn.Conv2d(3, 3, 3, dilation=2, padding=2),
        nn.Conv2d(3, 3, 1),
        nn.Conv2d(3, 2, (3, 1), padding=0),
    )
    row = check_model(model, (2, 32, 36))
    assert row.rf == (19, 17) and row.jump == (2, 2) and row.exact


def test_dilation_leaves_holes_but_the_border_is_reached():
    # 1 + 2*3 [3x3, dilation 3] + 2*1 [3x3] = 9: only rows/columns 0..8 with holes in between.
    model = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=3), nn.Conv2d(1, 1, 3))
    row = receptive_field(model, (1, 13, 13)).by_path()[""]
    assert row.rf == (9, 9)
    mask = support(positive_(model), (1, 13, 13), (2, 2))
    assert_tight(mask, box(row, (2, 2)))
    assert not mask.all()  # taps 3 apart and a 3-wide kernel: every column reached here ...
    model = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=4), nn.Conv2d(1, 1, 2))
    row = receptive_field(model, (1, 13, 13)).by_path()[""]
    assert row.rf == (10, 10)  # 1 + 2*4 + 1*1
    mask = support(positive_(model), (1, 13, 13), (1, 1))
    assert_tight(mask, box(row, (1, 1)))
    assert not mask[1:11, 1:11].all()  # ... but taps 4 apart under a 2-wide kernel: holes


def test_stride_larger_than_kernel():
    # A 1x1 stride-2 conv skips every other pixel; the 3x3 after it spans 1 + 2*2 = 5.
    model = nn.Sequential(nn.Conv2d(1, 2, 1, stride=2), nn.Conv2d(2, 1, 3, padding=1))
    row = check_model(model, (1, 16, 16))
    assert row.rf == (5, 5) and row.jump == (2, 2)


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN + shortcut (identity, or 1x1 stride-2 projection), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else nn.Conv2d(c_in, c_out, 1, stride=stride))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


def test_residual_blocks_take_the_larger_branch():
    # stem 3x3: 3; block (stride 2): 3 + 2*1 + 2*2 = 9 (the shortcut sees 3); block: 9 + 4 + 4.
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), Residual(4, 6, 2), Residual(6, 6, 1))
    report = receptive_field(model, (2, 40, 40))
    rows = report.by_path()
    assert rows["1.shortcut"].rf == (3, 3) and rows["1.conv2"].rf == (9, 9)
    assert rows["1"].rf == (9, 9) and rows["2"].rf == (17, 17)
    check_model(model, (2, 40, 40))


class InceptionLike(nn.Module):
    """1x1 | 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1, concatenated (GoogLeNet's module)."""

    def __init__(self, c: int):
        super().__init__()
        self.b1 = nn.Conv2d(c, 2, 1)
        self.b2 = nn.Conv2d(c, 2, 3, padding=1)
        self.b3 = nn.Sequential(nn.Conv2d(c, 2, 1), nn.Conv2d(2, 2, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(c, 2, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def test_inception_concat_takes_the_largest_branch():
    # stem 3x3/2 (3, jump 2); module: max(1, 3, 5, 3) -> 3 + 4*2 = 11; again: 11 + 4*2 = 19.
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), InceptionLike(3),
                          InceptionLike(8))
    rows = receptive_field(model, (2, 48, 48)).by_path()
    assert [rows[f"1.b{i}"].rf[0] for i in (1, 2, 3, 4)] == [3, 7, 11, 7]
    assert rows["1"].rf == (11, 11) and rows["2"].rf == (19, 19)
    check_model(model, (2, 48, 48))


def test_off_centre_branches_give_their_union():
    # A 3x3 with padding 1 and one with padding 0 then 2 more zero-padding: same size, windows
    # shifted by 1; the sum sees their union, 4 wide, centred half a pixel off.
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3, padding=1)
            self.b = nn.Conv2d(1, 1, 3, padding=0)

        def forward(self, x):
            return self.a(x) + F.pad(self.b(x), (2, 0, 2, 0))

    row = check_model(Shifted(), (1, 12, 12))
    assert row.rf == (4, 4) and row.start == (-0.5, -0.5)


def test_misaligned_jumps_give_an_upper_bound():
    # 7 -> 4 by a 1x1/2 (jump 2: unit u sees pixel 2u) and by a 2x2/1 on the top-left 5x5
    # (jump 1: pixels u, u + 1): the union is {0, 1}, {1, 2}, {2, 3, 4}, {3, 4, 6}, so it grows
    # from 2 to 4 wide along the map: rf = 4 (the largest), flagged as an upper bound.
    class TwoJumps(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 1, stride=2)
            self.b = nn.Conv2d(1, 1, 2)

        def forward(self, x):
            return self.a(x) + self.b(x[:, :, :5, :5])

    row = receptive_field(TwoJumps(), (1, 7, 7)).by_path()[""]
    assert row.rf == (4, 4) and not row.exact
    model = positive_(TwoJumps())
    widths = []
    for u in range(4):
        cols = support(model, (1, 7, 7), (u, u)).any(0).nonzero().flatten()
        widths.append(int(cols[-1] - cols[0] + 1))
    assert widths == [2, 2, 3, 4]


def test_squeeze_excite_gate_sets_global_context_and_reaches_every_pixel():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), SqueezeExcite(4, 2),
                          nn.Conv2d(4, 2, 3, padding=1))
    report = receptive_field(model, (2, 16, 16))
    rows = report.by_path()
    assert rows["1"].rf == (3, 3) and rows["1"].global_context and not rows["1"].is_global
    assert rows[""].rf == (5, 5) and rows[""].global_context
    assert rows["1.fc1"].is_global and rows["1.fc1"].rf == (16, 16)  # the squeezed vector
    # The local window is 5x5, but through the gate every pixel moves the unit: the flag is true.
    assert support(positive_(model), (2, 16, 16), (8, 8)).all()


def test_resnet20_is_tight_at_84():
    # A real zoo model: 19 3x3 convs, two stride-2 stages, option-A shortcuts (slicing).
    # 1 + 2 (stem) + 6*2*1 + (2*1 + 5*2*2) + (2*2 + 5*2*4) = 81 at jump 4.
    model = cnnzoo.create_model("resnet20")
    report = receptive_field(model, (3, 84, 84))
    row = report.features
    assert row.rf == (81, 81) and row.jump == (4, 4) and row.start == (0.0, 0.0)
    unit = centre_unit(row)
    # 84 -> 21 x 21 units; unit (10, 10) sees rows and columns 0..80 (float64: ~4 s)
    assert_tight(support(positive_(model).forward_features, (3, 84, 84), unit, batch=1),
                 box(row, unit))


def test_compact_resnet8_is_tight_at_56():
    # stem 3x3 (3), 2x2/2 max-pool (4, jump 2), layer1 2*(2*2) -> 12, layer2 3x3/2 +4 -> 16
    # (jump 4) and 3x3 +8 -> 24, layer3 3x3/2 +8 -> 32 (jump 8) and 3x3 +16 -> 48.
    model = cnnzoo.create_model("compact_resnet8", in_chans=1)
    row = receptive_field(model, (1, 56, 56)).features
    assert row.rf == (48, 48) and row.jump == (8, 8) and row.start == (0.5, 0.5)
    unit = centre_unit(row)
    mask = support(positive_(model).forward_features, (1, 56, 56), unit)
    assert_tight(mask, box(row, unit))


def test_adaptive_pooling_and_resizing_bound_every_unit():
    # Adaptive average pooling 10 -> 4 has windows of 3 and 4 pixels; bilinear resizing reads
    # two neighbours. Both are flagged as upper bounds and hold for every unit.
    for layer, n in ((nn.AdaptiveAvgPool2d(4), 4), (nn.Upsample(scale_factor=1.5,
                                                                mode="bilinear"), 15)):
        model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), layer)
        row = receptive_field(model, (1, 10, 10)).by_path()[""]
        assert not row.exact and row.output_shape[-1] == n
        for u in range(n):
            cols = support(positive_(model), (1, 10, 10), (u, u)).any(0).nonzero().flatten()
            assert cols[-1] - cols[0] + 1 <= row.rf[1], (layer, u)


def test_nearest_resizing_by_an_integer_factor_is_exact():
    # "nearest-exact" at 1/2 reads pixel 2u + 1: a 3x3 conv then this is a 3x3 at stride 2
    # centred on odd pixels (start 1), exactly.
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1),
                          nn.Upsample(scale_factor=0.5, mode="nearest-exact"))
    row = check_model(model, (1, 12, 12))
    assert row.exact and row.rf == (3, 3) and row.jump == (2, 2) and row.start == (1.0, 1.0)


# ---- deformable convolution --------------------------------------------------------------


def test_deformable_conv_reports_its_nominal_grid_and_is_flagged():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), DeformConv2d(2, 2, 3, padding=1),
                          nn.Conv2d(2, 2, 1))
    rows = receptive_field(model, (2, 15, 15)).by_path()
    assert not rows["0"].input_dependent
    assert rows["1"].rf == (5, 5) and rows["1"].input_dependent
    assert rows[""].rf == (5, 5) and rows[""].input_dependent  # everything downstream
    assert not rows["1.conv_offset"].input_dependent  # the offsets' own conv is regular
    positive_(model)
    with torch.no_grad():
        model[1].conv_offset.weight.zero_()
        model[1].conv_offset.bias.zero_()
    unit = (7, 7)
    assert_tight(support(model, (2, 15, 15), unit), box(rows[""], unit))  # zero offsets
    with torch.no_grad():
        model[1].conv_offset.bias.fill_(1.5)  # every tap 1.5 px down and right
    top, bottom, left, right = box(rows[""], unit)
    mask = support(model, (2, 15, 15), unit)
    outside = mask.clone()
    outside[top:bottom + 1, left:right + 1] = False
    assert outside.any()  # the field moved: why the nominal grid is flagged


def test_deformable_resnets_flag_their_deformable_stages():
    for name, first in (("resnet50_dcn", "layer4"), ("resnet50_dcnv2", "layer2")):
        report = receptive_field(name, (3, 224, 224))
        rows = report.by_path()
        stages = ["layer1", "layer2", "layer3", "layer4"]
        before = stages[: stages.index(first)]
        assert not any(rows[s].input_dependent for s in before), name
        assert rows[f"{first}.0.conv2"].input_dependent and rows[first].input_dependent
        assert report.features.input_dependent
        assert report.features.rf == (427, 427)  # the nominal grid is ResNet-50's


def test_functional_deform_conv2d_is_flagged():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.offset = nn.Conv2d(1, 18, 3, padding=1)
            self.weight = nn.Parameter(torch.ones(1, 1, 3, 3))

        def forward(self, x):
            return deform_conv2d(x, self.offset(x), self.weight, padding=1)

    row = receptive_field(Functional(), (1, 8, 8)).by_path()[""]
    assert row.input_dependent


# ---- hand-computed fields of the zoo (rf += (k - 1) * jump; jump *= stride) -----------------


def conv_rows(report) -> list[FieldRow]:
    return [r for r in report.rows if r.type == "Conv2d"]


def test_alexnet_by_hand():
    report = receptive_field("alexnet", (3, 224, 224))
    rows = report.by_path()
    # conv1 11/4, pool1 3/2 (jump 4), conv2 5 (jump 8), pool2 3/2 (jump 8), conv3-5 3 (jump 16)
    conv5 = 1 + 10 * 1 + 2 * 4 + 4 * 8 + 2 * 8 + 2 * 16 + 2 * 16 + 2 * 16
    pool5 = conv5 + 2 * 16
    assert (conv5, pool5) == (163, 195)  # the figures
    assert rows["features.10"].rf == (conv5, conv5) and rows["features.12"].rf == (pool5, pool5)
    assert rows["features.12"].jump == (32, 32)
    assert rows["features.0"].start == (3.0, 3.0)  # (11 - 1) / 2 - padding 2


def test_vgg16_by_hand():
    report = receptive_field("vgg16", (3, 224, 224))
    convs = conv_rows(report)
    pools = [r for r in report.rows if r.type == "MaxPool2d"]
    # two 3x3 at jump 1, pool 2/2, two at 2, pool, three at 4, pool, three at 8, pool, three at 16
    conv5_3 = (1 + 2 * (1 + 1) + 1 * 1 + 2 * (2 + 2) + 1 * 2 + 2 * (4 + 4 + 4) + 1 * 4
               + 2 * (8 + 8 + 8) + 1 * 8 + 2 * (16 + 16 + 16))
    pool5 = conv5_3 + 1 * 16
    assert (conv5_3, pool5) == (196, 212)
    assert len(convs) == 13 and convs[-1].rf == (conv5_3, conv5_3)
    assert pools[-1].rf == (pool5, pool5) and report.features.rf == (212, 212)


def test_resnet50_by_hand_per_stage():
    rows = receptive_field("resnet50", (3, 224, 224)).by_path()
    stem = 1 + 6 * 1 + 2 * 2  # conv1 7/2, max-pool 3/2 (jump 4)
    layer1 = stem + 3 * (2 * 4)  # three bottlenecks, one 3x3 each, at jump 4
    layer2 = layer1 + 2 * 4 + 3 * (2 * 8)  # the 3x3/2 (v1.5) at jump 4, three more at 8
    layer3 = layer2 + 2 * 8 + 5 * (2 * 16)
    layer4 = layer3 + 2 * 16 + 2 * (2 * 32)
    assert (stem, layer1, layer2, layer3, layer4) == (11, 35, 91, 267, 427)
    for path, rf, jump in (("maxpool", stem, 4), ("layer1", layer1, 4), ("layer2", layer2, 8),
                           ("layer3", layer3, 16), ("layer4", layer4, 32)):
        assert rows[path].rf == (rf, rf) and rows[path].jump == (jump, jump), path
    assert rows["layer4.0.downsample"].rf == (layer3 + 0, layer3)  # the 1x1/2 shortcut
    assert rows["avgpool"].is_global and rows["avgpool"].rf == (224, 224)


def test_googlenet_by_hand_per_stage():
    rows = receptive_field("googlenet", (3, 224, 224)).by_path()
    # conv1 7/2, max-pool 3/2, conv2 1x1, conv3 3x3 (jump 4), max-pool 3/2 -> jump 8
    pool2 = 1 + 6 * 1 + 2 * 2 + 0 + 2 * 4 + 2 * 4
    i3a = pool2 + 4 * 8  # the largest branch: 1x1 reduce then 5x5 (paper form)
    i3b = i3a + 4 * 8
    i4e = i3b + 2 * 8 + 5 * (4 * 16)  # max-pool 3/2, then 4a..4e at jump 16
    i5b = i4e + 1 * 16 + 2 * (4 * 32)  # max-pool 2/2 (ceil mode), then 5a, 5b at jump 32
    assert (pool2, i3a, i3b, i4e, i5b) == (27, 59, 91, 427, 699)
    for path, rf in (("maxpool2", pool2), ("inception3a", i3a), ("inception3b", i3b),
                     ("inception4e", i4e), ("inception5b", i5b)):
        assert rows[path].rf == (rf, rf), path
    assert rows["inception3a.branch1"].rf == (pool2, pool2)


# ---- the registry ------------------------------------------------------------------------

REGISTRY = [n for n in cnnzoo.list_models() if n != "resnet1202"]  # 9 s to build, resnet110 same


@pytest.mark.parametrize("name", REGISTRY)
def test_every_model_per_axis_on_a_rectangular_input(name):
    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    _, h, w = model.input_size
    report = receptive_field(model, (3, h, w + 32))
    f = report.features
    # The field of a unit does not depend on the image size: both axes agree.
    assert not f.is_global and f.exact
    assert f.rf[0] == f.rf[1] and f.jump[0] == f.jump[1] and f.start[0] == f.start[1]
    assert f.rf[0] >= f.jump[0] >= 1
    assert f.input_dependent == any(isinstance(m, DeformConv2d) for m in model.modules())
    assert f.global_context == any(isinstance(m, SqueezeExcite) for m in model.modules())
    head = report.rows[-1]
    assert head.path == "" and head.is_global and head.rf == (h, w + 32)


# ---- interface -----------------------------------------------------------------------------


def test_the_model_passed_in_is_not_touched():
    model = cnnzoo.create_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = receptive_field(model, (1, 3, 32, 32))
    assert model.training and not model._forward_hooks and not model._forward_pre_hooks
    assert all(not m._forward_hooks for m in model.modules())
    assert "forward_features" not in model.__dict__
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert report.input_shape == (1, 3, 32, 32) and report.model == "resnet20"
    text = report.table(depth=1)
    assert "layer3 (Sequential)" in text and "final feature map" in text
    assert "layer3.0.conv1" not in text


def test_bad_input_is_one_clear_line():
    with pytest.raises(ValueError, match="unknown|resnet"):
        receptive_field("resnet5", (3, 32, 32))
    with pytest.raises(ValueError, match="input shape"):
        receptive_field("resnet20", (32, 32))
    with pytest.raises(ValueError, match="alexnet"):
        receptive_field("alexnet", (3, 32, 32))  # smaller than its minimum input
    with pytest.raises(ValueError, match="conv_transpose2d"):
        receptive_field(nn.Sequential(nn.ConvTranspose2d(1, 1, 3)), (1, 8, 8))
    with pytest.raises(TypeError, match="nn.Module or a model name"):
        receptive_field(42, (3, 8, 8))


def test_summary_columns_carry_the_flags():
    def cells(report, path):
        return summary_columns(**layer_columns(report)[path])

    report = receptive_field("se_resnet50", (3, 224, 224))
    assert cells(report, "maxpool") == ("11", "4")
    assert cells(report, "layer4") == ("427+", "32")
    assert cells(report, "avgpool") == ("global", "--")
    assert summary_columns(None, None) == ("--", "--")
    assert cells(receptive_field("resnet50_dcn", (3, 224, 224)), "layer4") == ("427~", "32")
    model = nn.Sequential(nn.Conv2d(1, 1, (3, 1)), nn.AdaptiveAvgPool2d((3, 4)))
    # 8 -> 3 rows: windows of 3, 4, 3 pixels at a mean stride of 8/3; 10 -> 4 columns
    assert cells(receptive_field(model, (1, 10, 10)), "1") == ("<=6x3", "2.66667x2.5")
