"""squeeze-excitation: the tiny preset end to end, the SE twin, the gates and eta^2."""

from __future__ import annotations

import json

import pytest
import torch

from cnnzoo.data import make_synthetic
from cnnzoo.experiments import run_experiment
from cnnzoo.experiments._se_gates import (
    class_means,
    class_specificity,
    collect_gates,
    se_blocks,
    shuffled_specificity,
)
from cnnzoo.experiments.squeeze_excitation import (
    MARGIN,
    MAX_EXTRA_MACS,
    MAX_EXTRA_PARAMS,
    SPECIFICITY_RISE,
    cifar_resnet,
    claim_power,
)


def test_tiny_preset_writes_consistent_results(tmp_path):
    result = run_experiment("squeeze-excitation", "tiny", data="synthetic:1x16x16:4:160",
                            out=tmp_path, quiet=True, train_size=80, val_size=40,
                            test_size=80, batch_size=40)
    saved = json.loads((tmp_path / "results.json").read_text())
    m = saved["measured"]
    for name in ("cost_accuracy.png", "excitation_per_class.png", "specificity_vs_depth.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / name).stat().st_size < 200_000
    assert "finding.md" in {p.name for p in tmp_path.iterdir()}

    # The SE twin adds parameters and a few MACs, and the fractions follow from the counts.
    assert m["params"]["se_resnet"] > m["params"]["resnet"]
    assert m["macs"]["se_resnet"] >= m["macs"]["resnet"]
    assert m["extra_params_fraction"] == pytest.approx(
        m["params"]["se_resnet"] / m["params"]["resnet"] - 1)
    assert len(m["curves"]["resnet"][0]["val_acc"]) == saved["params"]["epochs"]

    # depth 8: one block per stage, three SE blocks; eta^2 is a fraction.
    assert m["blocks"] == ["layer1.0", "layer2.0", "layer3.0"]
    assert all(0.0 <= v <= 1.0 for v in m["specificity"].values())
    gates = torch.tensor(m["fig6_class_mean_gates"]["layer3.0"])
    assert gates.shape == (4, 16) and gates.min() >= 0.0 and gates.max() <= 1.0

    # Each claim's verdict follows from the measured numbers under the stated thresholds.
    claims = saved["claims"]
    cheap = (m["extra_params_fraction"] <= MAX_EXTRA_PARAMS
             and m["extra_macs_fraction"] <= MAX_EXTRA_MACS)
    assert claims["small cost"] == ("supported" if cheap else "not supported")
    t = m["accuracy_margin"]
    assert claims["better accuracy"] == ("supported" if t >= MARGIN else
                                         "not supported" if t <= -MARGIN else "inconclusive")
    stage = m["stage_specificity"]
    assert m["specificity_rise"] == pytest.approx(stage["3"] - stage["1"])
    rise = m["specificity_rise"]
    assert claims["class-specific deeper"] == (
        "supported" if rise >= SPECIFICITY_RISE else "not supported" if rise <= 0
        else "inconclusive")
    # Issue 15: every inconclusive claim, and only those, carries a power estimate.
    assert set(m["power"]) == {c for c, v in claims.items() if v == "inconclusive"}
    expected = set(claims.values()).pop() if len(set(claims.values())) == 1 else "mixed"
    assert saved["verdict"] == result.finding.verdict == expected


def test_se_twin_with_open_gates_is_the_resnet():
    torch.manual_seed(0)
    plain = cifar_resnet(8, 4, in_chans=1, num_classes=3)
    torch.manual_seed(0)
    se = cifar_resnet(8, 4, in_chans=1, num_classes=3, se_reduction=2)
    assert len(se_blocks(se)) == 3 and not se_blocks(plain)
    x = torch.randn(2, 1, 12, 12)
    plain.eval()
    se.eval()
    assert not torch.allclose(plain(x), se(x), atol=1e-4)  # gates ~0.5 halve each branch
    with torch.no_grad():
        for block in se_blocks(se).values():
            block.se.fc2.weight.zero_()
            block.se.fc2.bias.fill_(50.0)  # sigmoid(50) = 1: the gate passes everything
    assert torch.allclose(plain(x), se(x), atol=1e-5)


def test_collect_gates_returns_each_blocks_excitation():
    torch.manual_seed(1)
    model = cifar_resnet(8, 4, in_chans=1, num_classes=4, se_reduction=2).eval()
    data = make_synthetic(num_samples=30, num_classes=4, image_size=(1, 10, 10), seed=3)
    gates = collect_gates(model, data, batch_size=7)
    assert list(gates) == ["layer1.0", "layer2.0", "layer3.0"]
    assert [g.shape for g in gates.values()] == [(30, 4), (30, 8), (30, 16)]
    # The first block's gate by hand: stem, then the residual branch up to bn2, then SE.
    from cnnzoo.data import normalize

    x = normalize(data.images.float(), data.mean, data.std)
    block = model.layer1[0]
    with torch.no_grad():
        h = model.relu(model.bn1(model.conv1(x)))
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
        expected = block.se.excitation(branch).flatten(1)
    assert torch.allclose(gates["layer1.0"], expected, atol=1e-6)
    with pytest.raises(ValueError, match="no SE gates"):
        collect_gates(cifar_resnet(8, 4, in_chans=1, num_classes=4), data)


def test_class_specificity_bounds_and_chance():
    labels = torch.arange(4).repeat_interleave(50)
    # A gate that is a function of the class alone: the class explains all of its variance.
    by_class = torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.8, 0.2]])[labels]
    assert class_specificity(by_class, labels) == pytest.approx(1.0)
    # The same within-class values for every class: identical class means, eta^2 = 0.
    within = torch.rand(50, 3, generator=torch.Generator().manual_seed(0)).repeat(4, 1)
    assert class_specificity(within, labels) == pytest.approx(0.0, abs=1e-12)
    assert class_specificity(torch.full((200, 3), 0.5), labels) == 0.0
    # Random class-independent gates: about (classes - 1) / images, the shuffled chance level.
    noise = torch.rand(200, 8, generator=torch.Generator().manual_seed(1))
    assert class_specificity(noise, labels) < 0.1
    chance = shuffled_specificity(by_class, labels, seed=0, repeats=20)
    assert chance == pytest.approx(3 / 199, abs=0.02)
    means = class_means(by_class, labels, 5)
    assert torch.allclose(means[:4].float(), torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5],
                                                           [0.8, 0.2]]))
    assert means[4].isnan().all()  # a class with no images


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="depth: expected 6n \\+ 2"):
        run_experiment("squeeze-excitation", "tiny", data="synthetic:1x8x8:4:100", out=tmp_path,
                       quiet=True, depth=10)
    with pytest.raises(ValueError, match="se_reduction"):
        cifar_resnet(8, 4, in_chans=1, num_classes=2, se_reduction=0)


def test_inconclusive_claims_get_a_power_estimate_and_decided_ones_none():
    # Accuracy +3 points over 3 seeds with t = 1.2: real SE 2.5 points (above the 0.5-point
    # floor), so ceil(3 x (2 / 1.2)^2) = 9 seeds would reach t = 2 at this effect.
    claims = {"small cost": "supported", "better accuracy": "inconclusive",
              "class-specific deeper": "inconclusive"}
    power = claim_power(claims, [0.93, 0.90, 0.87], [0.87, 0.87, 0.87], 1.2, 0.05,
                        [0.02, 0.05, 0.08], seconds_per_seed=60.0)
    assert set(power) == {"better accuracy", "class-specific deeper"}
    assert power["better accuracy"]["needed"] == 9 and power["better accuracy"]["seconds"] == 540
    # The rise is judged on its point estimate against (0, 0.10): no seed count decides it.
    band = power["class-specific deeper"]
    assert band["needed"] is None and band["t"] == pytest.approx((0.05 - 0.0) / (0.03 / 3**0.5))
    assert "no number of seeds" in band["text"]

    decided = dict(claims, **{"better accuracy": "supported", "class-specific deeper":
                              "not supported"})
    assert claim_power(decided, [0.93], [0.87], 12.0, -0.1, [-0.1], seconds_per_seed=60) == {}


def test_an_accuracy_gap_under_one_point_cannot_be_decided_by_more_seeds():
    claims = {"better accuracy": "inconclusive"}
    power = claim_power(claims, [0.904], [0.90], 0.8, 0.2, [0.2], seconds_per_seed=60.0)
    assert power["better accuracy"]["needed"] is None
    assert power["better accuracy"]["floor_capped"]


def test_standard_2se_is_standard_judged_by_two_standard_errors():
    # Issue 15: the old presets keep the point rule (their committed results stay what they
    # give); the new preset carries the 2-SE rule at the standard scale.
    from cnnzoo.experiments.base import STANDARD_2SE
    from cnnzoo.experiments.squeeze_excitation import PRESETS
    assert [PRESETS[p]["rule"] for p in ("tiny", "quick", "standard")] == ["point"] * 3
    assert PRESETS[STANDARD_2SE]["rule"] == PRESETS["full"]["rule"] == "2se"
    assert {k: v for k, v in PRESETS[STANDARD_2SE].items() if k != "rule"} == {
        k: v for k, v in PRESETS["standard"].items() if k != "rule"}


def test_a_rise_inside_the_noise_is_inconclusive_under_2se_with_seeds_needed():
    from cnnzoo.experiments.squeeze_excitation import specificity_verdict
    # Per-seed rises 0.05..0.25: mean 0.15, SE 0.0456, t = 0.05 / 0.0456 = 1.10 against 0.10.
    per_seed = [0.05, 0.25, 0.10, 0.20]
    verdict, t, se = specificity_verdict(0.15, per_seed, rule="2se")
    assert verdict == "inconclusive"
    assert se == pytest.approx(0.0912871 / 2, rel=1e-5)
    assert t == pytest.approx(0.05 / se)
    claims = {"small cost": "supported", "better accuracy": "supported",
              "class-specific deeper": verdict}
    power = claim_power(claims, [0.9], [0.9], 5.0, 0.15, per_seed, 120.0, rule="2se",
                        rise_t=t)
    est = power["class-specific deeper"]
    # ceil(4 x (2 / 1.095)^2) = 14 seeds at 120 s each.
    assert est["needed"] == 14 and est["seconds"] == 14 * 120.0
    # The point rule judges the same mean (0.15 >= 0.10) supported, however noisy.
    assert specificity_verdict(0.15, per_seed, rule="point") == ("supported", None, None)


def test_a_clearly_small_rise_is_not_supported_under_2se_but_inconclusive_by_point():
    from cnnzoo.experiments.squeeze_excitation import specificity_verdict
    per_seed = [0.02, 0.03, 0.01, 0.04]  # mean 0.025, SE 0.0065: 11.6 SE short of 0.10
    assert specificity_verdict(0.025, per_seed, rule="2se")[0] == "not supported"
    assert specificity_verdict(0.025, per_seed, rule="point")[0] == "inconclusive"
    falling = [-0.05, -0.04, -0.06]
    assert specificity_verdict(-0.05, falling, rule="2se")[0] == "not supported"
    assert specificity_verdict(-0.05, falling, rule="point")[0] == "not supported"


def test_a_clear_rise_is_supported_under_both_rules_and_one_seed_decides_nothing():
    from cnnzoo.experiments.squeeze_excitation import specificity_verdict
    per_seed = [0.30, 0.28, 0.32, 0.29]
    assert specificity_verdict(0.2975, per_seed, rule="2se")[0] == "supported"
    assert specificity_verdict(0.2975, per_seed, rule="point")[0] == "supported"
    # One seed: no spread, so 2se cannot decide even a large rise (point can).
    assert specificity_verdict(0.3, [0.3], rule="2se") == ("inconclusive", None, None)
    power = claim_power({"class-specific deeper": "inconclusive"}, [0.9], [0.9], 5.0, 0.3,
                        [0.3], 60.0, rule="2se", rise_t=None)
    assert power["class-specific deeper"]["needed"] is None
    assert "no power estimate" in power["class-specific deeper"]["text"]
    for rises in ([0.5, 0.1, -0.2], [0.1, 0.1001], [0.0, 0.0], [0.2, 0.4, 0.3]):
        verdict = specificity_verdict(sum(rises) / len(rises), rises, rule="2se")[0]
        assert verdict in ("supported", "not supported", "inconclusive")


def test_the_2se_rule_reaches_the_finding(tmp_path):
    run_experiment("squeeze-excitation", "tiny", data="synthetic:1x16x16:4:160", out=tmp_path,
                   quiet=True, train_size=80, val_size=40, test_size=80, batch_size=40,
                   seeds=2, rule="2se")
    saved = json.loads((tmp_path / "results.json").read_text())
    m, claims = saved["measured"], saved["claims"]
    from cnnzoo.experiments.squeeze_excitation import specificity_verdict
    verdict, t, se = specificity_verdict(m["specificity_rise"], m["specificity_rise_per_seed"],
                                         rule="2se")
    assert m["rule"] == "2se" and claims["class-specific deeper"] == verdict
    assert m["specificity_rise_t"] == t and m["specificity_rise_se"] == se
    assert set(m["power"]) == {c for c, v in claims.items() if v == "inconclusive"}
