"""Experiment `effective-receptive-field`: the tiny preset end to end, and the heatmap stats."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnzoo.experiments import run_experiment
from cnnzoo.experiments._erf_maps import (
    build,
    calibrate_bn,
    erf_heatmaps,
    fit_gaussian,
    fit_square,
    mass_radius,
    mosaic,
    power_fit,
    sqrt_fit,
)
from cnnzoo.experiments.effective_receptive_field import CHANGE, change_verdict


def gaussian(shape, centre, sy, sx):
    ys, xs = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-(ys - centre[0]) ** 2 / (2 * sy**2) - (xs - centre[1]) ** 2 / (2 * sx**2))


def test_tiny_preset_writes_consistent_results(tmp_path):
    result = run_experiment("effective-receptive-field", "tiny", data="synthetic:1x28x28:10:400",
                            out=tmp_path, quiet=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in ("erf_heatmaps.png", "erf_by_depth.png", "erf_radius.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000, name
    m = saved["measured"]
    # CIFAR ResNet 6n + 2: 28 n - 3 px (3x3 stem, 2n convs at jumps 1, 2, 4, two stride-2 convs)
    assert {d: t["rf_px"] for d, t in m["theoretical"].items()} == {"8": 25, "14": 53}
    erf = m["erf"]
    for state, fams in erf.items():
        for fam, cells in fams.items():
            for d, cell in cells.items():
                r95, r50 = cell["r95"][0], cell["r50"][0]
                assert 0 < r50 < r95 < 56 / 2 * math.sqrt(2), (state, fam, d)
                assert cell["ratio"][0] == pytest.approx(2 * r95 / m["theoretical"][d]["rf_px"],
                                                         rel=1e-3)
    # the deformable net at init is the residual net: zero offsets
    assert erf["init"]["deformable"]["8"]["r95"] == erf["init"]["residual"]["8"]["r95"]
    grows = [erf["init"][f]["14"]["r95"][0] > 1.2 * erf["init"][f]["8"]["r95"][0]
             for f in ("plain", "residual")]
    claim = saved["claims"]["depth enlarges the RF (theoretical and effective)"]
    assert claim == ("supported" if all(grows) else "not supported" if not any(grows)
                     else "mixed")
    for key, change in m["training_change"].items():
        if abs(change["relative"]) < CHANGE:
            assert change["verdict"] == "not supported", key
    assert saved["verdict"] in ("supported", "not supported", "mixed")
    assert result.finding.verdict in (tmp_path / "finding.md").read_text()


def test_mass_radius_and_gaussian_fit_recover_a_gaussian():
    heat = gaussian((101, 101), (50, 50), 6.0, 6.0)
    # a 2-D isotropic Gaussian holds 1 - exp(-r^2 / 2 s^2) within r: r95 = s sqrt(2 ln 20)
    assert mass_radius(heat, (50, 50)) == pytest.approx(6.0 * math.sqrt(2 * math.log(20)),
                                                        rel=0.03)
    aniso = gaussian((101, 101), (50, 50), 4.0, 9.0)
    fit = fit_gaussian(aniso, (50, 50))
    assert fit["sigma_y"] == pytest.approx(4.0, rel=0.05)
    assert fit["sigma_x"] == pytest.approx(9.0, rel=0.05)
    assert fit["r2"] > 0.99
    assert fit_square(aniso, (50, 50))["r2"] < fit["r2"]


def test_square_fit_recovers_a_uniform_square():
    heat = np.zeros((41, 41))
    heat[15:26, 15:26] = 1.0
    sq = fit_square(heat, (20, 20))
    assert sq["side"] == 11 and sq["r2"] == pytest.approx(1.0)
    assert fit_gaussian(heat, (20, 20))["r2"] < 0.99


def test_fits():
    x = [8.0, 14.0, 20.0, 32.0]
    pf = power_fit(x, [3 * v**0.5 for v in x])
    assert pf["exponent"] == pytest.approx(0.5) and pf["r2"] == pytest.approx(1.0)
    sf = sqrt_fit(x, [2 * v**0.5 - 1 for v in x])
    assert sf["a"] == pytest.approx(2.0) and sf["b"] == pytest.approx(-1.0)


def test_mosaic_tiles_images_at_a_random_phase():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 4, 4) * 10
    g = torch.Generator().manual_seed(0)
    canvas = mosaic(images.contiguous(), 3, 10, g)
    assert canvas.shape == (3, 1, 10, 10) and canvas.dtype == torch.uint8
    assert set(canvas.unique().tolist()) <= {0, 10, 20, 30, 40}
    # constant 4 x 4 tiles: the canvas is piecewise constant along rows with period 4
    changes = (canvas[:, 0, :, 1:] != canvas[:, 0, :, :-1]).any(1).any(0)  # (9,) columns
    cols = changes.nonzero().flatten().tolist()
    assert all((b - a) % 4 == 0 for a, b in zip(cols, cols[1:], strict=False))


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 1.0)

    def forward_features(self, x):
        return self.conv(x)


def test_erf_heatmap_of_one_conv_is_its_kernel():
    heat = erf_heatmaps(OneConv(), torch.randn(3, 1, 9, 9))
    expected = torch.zeros(9, 9)
    expected[3:6, 3:6] = 2.0  # two output channels, weight 1 each
    for h in heat:
        assert torch.equal(h, expected)


def test_calibrated_batch_norm_and_deformable_at_init():
    x = torch.randn(8, 1, 32, 32) * 3 + 1
    model = build("residual", 8, 4, 2, 1, 10, seed=0)
    calibrate_bn(model, x)
    assert not model.training
    assert float(model.bn1.running_mean.abs().max()) > 0  # estimated from x, not the defaults
    with torch.no_grad():
        stem = model.bn1(model.conv1(x))
    assert float(stem.mean((0, 2, 3)).abs().max()) < 1e-4  # normalised by x's own statistics
    twin = build("deformable", 8, 4, 2, 1, 10, seed=0)
    calibrate_bn(twin, x)
    torch.testing.assert_close(erf_heatmaps(twin, x), erf_heatmaps(model, x))


def test_change_verdict_thresholds():
    def runs(values, se=0.1):
        return [{"r95": v, "r95_se": se} for v in values]

    assert change_verdict(runs([10.0, 10.2]), runs([13.0, 13.1]))[0] == "supported"
    assert change_verdict(runs([10.0, 10.2]), runs([10.5, 10.6]))[0] == "not supported"
    assert change_verdict(runs([10.0, 14.0]), runs([13.0, 17.0]))[0] == "inconclusive"
    v, rel, _ = change_verdict(runs([10.0]), runs([15.0]))  # one seed: no training noise
    assert v == "inconclusive" and rel == pytest.approx(0.5)


def test_gaussian_test_discounts_pixel_noise():
    from cnnzoo.experiments._erf_maps import heatmap_stats
    from cnnzoo.experiments.effective_receptive_field import gaussian_like

    g = torch.Generator().manual_seed(0)
    noise = -torch.log(torch.rand(4, 61, 61, generator=g))  # multiplicative, mean 1, sd 1
    clean = torch.tensor(gaussian((61, 61), (30, 30), 5.0, 7.0), dtype=torch.float32)
    st = heatmap_stats(clean * noise, (30, 30), rf_side=61, bootstrap=10, seed=0)
    raw = fit_gaussian(st["heat"], (30, 30))["r2"]  # no correction: 4 images' noise caps it
    assert raw < 0.9 < st["gauss"]["r2"] and gaussian_like(st)
    assert st["gauss"]["sigma_y"] == pytest.approx(5.0, rel=0.1)
    assert st["gauss"]["sigma_x"] == pytest.approx(7.0, rel=0.1)
    # a uniform square under the same noise is not Gaussian-like: the square fits it better
    square = torch.zeros(61, 61)
    square[20:41, 20:41] = 1.0
    sq = heatmap_stats(square * noise, (30, 30), 61, 10, 0)
    assert sq["square"]["r2"] > 0.95 and sq["square"]["side"] == 21 and not gaussian_like(sq)


def test_edge_mass_flags_a_field_cut_by_the_canvas():
    from cnnzoo.experiments._erf_maps import EDGE, heatmap_stats

    inside = torch.tensor(gaussian((41, 41), (20, 20), 3.0, 3.0), dtype=torch.float32)
    assert heatmap_stats(inside[None], (20, 20), 41, 1, 0)["edge_mass"] < 1e-6
    flat = torch.ones(1, 41, 41)
    border = 41 * 41 - (41 - 2 * EDGE) ** 2
    assert heatmap_stats(flat, (20, 20), 41, 1, 0)["edge_mass"] == pytest.approx(border / 41**2)


def test_inconclusive_changes_get_power_estimates_and_decided_ones_none():
    from cnnzoo.experiments.effective_receptive_field import change_power
    cases = {"plain-8": ("supported", 0.3, 5.0), "residual-8": ("inconclusive", 0.2, 1.5),
             "deformable-8": ("not supported", 0.02, 0.4)}
    est = change_power(cases, 3, 60.0)
    assert set(est) == {"residual-8"}
    # z 1.5 against Z = 3: the SE must halve -> 4 x 3 seeds.
    assert est["residual-8"]["needed"] == 12 and est["residual-8"]["seconds"] == 720.0
    assert change_power({"plain-8": ("supported", 0.3, 5.0)}, 3, 60.0) == {}
