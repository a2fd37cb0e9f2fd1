"""Experiment `deformable`: the tiny preset end to end, and the measuring functions."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cnnzoo.experiments import run_experiment
from cnnzoo.experiments._deformations import deform_images, elastic_displacement
from cnnzoo.experiments._offsets import (
    effective_dilation,
    masked_mean,
    sampling_points,
    scale_elasticity,
    unit_masks,
)
from cnnzoo.experiments.base import combine_verdicts as combine
from cnnzoo.experiments.common import margin
from cnnzoo.experiments.deformable import (
    ELASTICITY,
    MARGIN,
    accuracy_verdict,
    build_pair,
    elasticity_verdict,
)
from cnnzoo.layers import DeformConv2d
from cnnzoo.models.resnet_cifar import CifarResNet, make_deformable


def test_tiny_preset_writes_consistent_results(tmp_path):
    result = run_experiment("deformable", "tiny", data="synthetic:1x28x28:10:400", out=tmp_path,
                            quiet=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in ("accuracy.png", "dilation.png", "sampling.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000, name
        assert name in saved["plots"]
    m = saved["measured"]
    # deformable = plain + the offset convs (2 * 9 outputs of a 3x3 conv, with bias, per layer)
    net = CifarResNet(8, base_width=4, in_chans=1)
    offset_params = sum(net.get_submodule(p).in_channels * 9 * 18 + 18
                        for p in m["deformable_convs"])
    assert m["params"]["deformable"] - m["params"]["plain"] == offset_params
    assert m["deformable_convs"] == ["layer3.0.conv1", "layer3.0.conv2"]
    for protocol in ("clean", "deformed"):
        for net in ("plain", "deformable"):
            for test in ("clean", "deformed"):
                (a,) = m["accuracy"][protocol][net][test]
                assert 0.0 <= a <= 1.0
        # the verdicts follow from the stored accuracies under the documented thresholds
        t = margin(m["accuracy"][protocol]["deformable"]["deformed"],
                   m["accuracy"][protocol]["plain"]["deformed"])
        assert m["margins"][protocol] == pytest.approx(t, abs=0.01)
        claim = f"deformable beats plain on deformed test images (trained {protocol})"
        assert saved["claims"][claim] == accuracy_verdict(
            m["accuracy"][protocol]["deformable"]["deformed"],
            m["accuracy"][protocol]["plain"]["deformed"])[0]
        assert len(m["val_acc_curves"][f"{protocol}/plain"]) == 1  # epochs
    el = m["offsets"]["deformed"]["scale"]
    assert len(el["dilation_by_scale"]) == len(el["scales"]) == 3
    assert saved["claims"]["offsets adapt to the object's scale (trained deformed)"] == \
        elasticity_verdict(el["elasticity"], el["elasticity_se"])
    assert saved["verdict"] == combine(list(saved["claims"].values()))
    assert result.finding.verdict in (tmp_path / "finding.md").read_text()


def test_deformable_twin_starts_as_the_plain_net():
    plain, twin, paths = build_pair(20, 4, 3, 1, 10, seed=0)
    assert paths == ["layer3.1.conv2", "layer3.2.conv1", "layer3.2.conv2"]
    assert all(isinstance(twin.get_submodule(p), DeformConv2d) for p in paths)
    assert not any(isinstance(m, DeformConv2d) for m in plain.modules())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(twin.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="deform_layers: expected 1..18"):
        make_deformable(CifarResNet(20, base_width=4), 19)


def test_effective_dilation_of_regular_and_scaled_grids():
    zero = torch.zeros(2, 18, 5, 5)
    assert torch.equal(effective_dilation(zero), torch.ones(2, 5, 5))
    # offsets that move tap k to s * (k - centre): a grid dilated by s, like dilation=s
    taps = torch.stack(torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij"),
                       -1).view(9, 2) - 1
    for s in (0.5, 2.0, 3.0):
        off = ((s - 1) * taps).reshape(18, 1, 1).expand(18, 4, 4)[None]
        torch.testing.assert_close(effective_dilation(off), torch.full((1, 4, 4), s))


def test_sampling_points_of_stacked_layers():
    zero = [torch.zeros(18, 7, 7), torch.zeros(18, 7, 7)]
    pts = sampling_points(zero, (3, 3))
    assert pts.shape == (81, 2)
    # two regular 3x3 layers: a 5x5 window around the unit, the centre sampled 9 times
    assert torch.equal(torch.unique(pts[:, 0]), torch.arange(1.0, 6.0))
    assert int(((pts == 3).all(1)).sum()) == 9
    # a constant shift d in each layer moves every point by 2 d
    shift = torch.zeros(18, 7, 7)
    shift[0::2] = 0.5  # dy
    shift[1::2] = -0.25  # dx
    moved = sampling_points([shift, shift], (3, 3))
    torch.testing.assert_close(moved, pts + torch.tensor([1.0, -0.5]))
    # a stride-2 first layer doubles the first layer's spacing
    strided = sampling_points([torch.zeros(18, 4, 4), torch.zeros(18, 4, 4)], (1, 1), [2, 1])
    assert torch.equal(torch.unique(strided[:, 1]), torch.arange(-1.0, 6.0))


def test_deformation_identity_and_elastic_field():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    same = deform_images(images, degrees=torch.zeros(3), scale=torch.ones(3))
    assert torch.equal(same, images)
    rot = deform_images(images, degrees=torch.full((3,), 90.0), scale=torch.ones(3))
    assert torch.equal(rot, torch.rot90(images, 1, (2, 3)))  # counter-clockwise
    d1 = elastic_displacement(200, (28, 28), 1.0, 4.0, torch.Generator().manual_seed(1))
    d34 = elastic_displacement(200, (28, 28), 34.0, 4.0, torch.Generator().manual_seed(1))
    assert d1.shape == (200, 28, 28, 2)
    torch.testing.assert_close(d34, 34 * d1)
    assert abs(float(d1.mean())) < 0.01  # zero-mean field
    # smoothing: neighbouring displacements are strongly correlated
    a, b = d1[:, :, :-1].flatten(), d1[:, :, 1:].flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.9
    zero = elastic_displacement(2, (28, 28), 0.0, 4.0, g)
    assert torch.equal(deform_images(images[:2], degrees=torch.zeros(2), scale=torch.ones(2),
                                     displacement=zero), images[:2])


def test_unit_masks_and_masked_mean():
    img = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    img[:, :, 6:22, 6:22] = 200
    # stride 4: unit i is centred on pixel 4 i, its cell is pixels 4 i - 2 .. 4 i + 1
    obj, bg = unit_masks(img, (7, 7))
    assert obj[0, 2:6, 2:6].all() and int(obj.sum()) == 16
    assert int(bg.sum()) == 49 - 16 and not (obj & bg).any()
    img[:, :, 6:22, 6:8] = 0  # now the cells of column 2 are half foreground: neither
    obj, bg = unit_masks(img, (7, 7))
    assert not obj[0, :, 2].any() and not bg[0, 2:6, 2].any() and obj[0, 2:6, 3:6].all()
    values = torch.arange(49.0).view(1, 7, 7)
    assert float(masked_mean(values, obj)[0]) == pytest.approx(float(values[0, 2:6, 3:6].mean()))
    assert math.isnan(float(masked_mean(values, torch.zeros_like(obj))[0]))


def test_regular_offsets_have_zero_elasticity():
    _, twin, paths = build_pair(8, 4, 2, 1, 10, seed=0)
    from cnnzoo.data import ImageDataset

    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 6:22, 6:22] = 255
    ds = ImageDataset(images, torch.zeros(4, dtype=torch.int64), ["a"], (0.3,), (0.4,), "toy")
    el = scale_elasticity(twin, paths, ds, images, [0.5, 0.75, 1.0])
    assert el["elasticity"] == 0 and el["images"] == 4
    assert el["dilation_by_scale"] == [1.0, 1.0, 1.0]


def test_verdict_thresholds():
    assert accuracy_verdict([0.80], [0.78])[0] == "supported"  # 2 points, floor 0.5 -> t = 4
    assert accuracy_verdict([0.80], [0.797])[0] == "inconclusive"
    assert accuracy_verdict([0.78], [0.80])[0] == "not supported"
    assert accuracy_verdict([0.80], [0.79])[1] == pytest.approx(MARGIN)
    assert elasticity_verdict(0.3, 0.05) == "supported"
    assert elasticity_verdict(0.3, 0.2) == "inconclusive"
    assert elasticity_verdict(0.01, 0.01) == "not supported"
    assert elasticity_verdict(ELASTICITY - 0.01, 0.001) == "not supported"
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "inconclusive"]) == "mixed"


def test_inconclusive_claims_get_power_estimates_and_decided_ones_none():
    from cnnzoo.experiments.deformable import Measured, judge
    acc = {"clean": {"deformable": {"deformed": [0.80, 0.82, 0.84]},  # +4 points: decided
                     "plain": {"deformed": [0.76, 0.78, 0.80]}},
           "deformed": {"deformable": {"deformed": [0.80, 0.82, 0.84]},  # +1 point, noisy
                        "plain": {"deformed": [0.79, 0.81, 0.83]}}}
    offsets = {"deformed": {"scale": {"elasticity": 0.5, "elasticity_se": 0.25, "images": 50}}}
    timing = {"clean per seed": 20.0, "deformed per seed": 30.0, "elasticity per image": 0.1}
    v = judge(Measured(acc, {}, {}, {}, offsets, None, None, timing))
    decided = "deformable beats plain on deformed test images (trained clean)"
    noisy = "deformable beats plain on deformed test images (trained deformed)"
    scale = "offsets adapt to the object's scale (trained deformed)"
    assert v.claims[decided] == "supported" and decided not in v.power
    assert v.claims[noisy] == "inconclusive"
    est = v.power[noisy]
    assert est["n"] == 3 and est["needed"] > 3 and est["seconds"] == pytest.approx(
        30.0 * est["needed"])
    # Elasticity 0.5 +- 0.25: the rule needs mean / SE >= 3, so (3 / 2)^2 x 50 = 112.5 images.
    assert v.claims[scale] == "inconclusive"
    assert v.power[scale]["unit"] == "images" and v.power[scale]["needed"] == 113
    # One seed: the margin's 0.5-point floor sets the SE; more seeds cannot decide it.
    one = {pr: {net: {"deformed": a["deformed"][:1]} for net, a in d.items()}
           for pr, d in acc.items()}
    one["deformed"]["plain"]["deformed"] = [0.795]
    w = judge(Measured(one, {}, {}, {}, offsets, None, None, timing))
    assert w.claims[noisy] == "inconclusive" and w.power[noisy]["needed"] is None
    assert "cannot raise" in w.power[noisy]["text"]
