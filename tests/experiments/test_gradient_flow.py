"""The gradient-flow experiment: the tiny preset end to end, and its measuring functions."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.experiments import run_experiment
from cnnzoo.experiments._gradients import (
    activation_stds,
    attenuation,
    depth_trend,
    gradient_profile,
    log_linear_fit,
    valid_tap_fraction,
)
from cnnzoo.experiments.base import combine_verdicts
from cnnzoo.experiments.gradient_flow import (
    HE_TOLERANCE,
    HEALTHY,
    SETTINGS,
    THEORY,
    Gradients,
    build_net,
    claim_power,
    vanish_verdict,
)

DATA = "synthetic:1x28x28:10:400"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradient_flow")
    return run_experiment("gradient-flow", "tiny", data=DATA, out=out, quiet=True), out


def test_tiny_run_writes_its_files(tiny):
    result, out = tiny
    saved = json.loads((out / "results.json").read_text())
    assert saved["verdict"] == result.finding.verdict
    assert saved["plots"] == ["backprop_gradient.png", "weight_gradient.png",
                              "attenuation_vs_depth.png", "activation_std.png"]
    for plot in saved["plots"]:
        data = (out / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000


def test_one_gradient_per_conv_in_every_net(tiny):
    result, _ = tiny
    m = result.finding.measured
    for setting in SETTINGS:
        for family in ("plain", "residual"):
            for depth in m["depths"]:
                (profile,) = m["gradients"][setting][family][str(depth)]  # one seed
                # 6n + 2 weighted layers = the stem conv, 6n block convs and the FC.
                assert len(profile["weight_grad"]) == len(profile["output_grad"]) == depth - 1
                assert all(math.isfinite(v) and v > 0
                           for v in profile["weight_grad"] + profile["output_grad"])


def test_verdicts_follow_from_the_measured_numbers(tiny):
    result, _ = tiny
    m = result.finding.measured
    claims = list(result.finding.claims.items())
    summary = m["gradient_summary"]
    for (name, verdict), setting in zip(claims[:len(SETTINGS)], SETTINGS, strict=True):
        assert SETTINGS[setting][0] in name
        att = {int(d): a for d, a in summary[setting]["plain"]["output_grad_attenuation"].items()}
        assert depth_trend(att) == pytest.approx(summary[setting]["plain"]["output_grad_trend"])
        assert verdict == vanish_verdict(depth_trend(att))
    residual = [summary[s]["residual"]["output_grad_trend"] for s in SETTINGS]
    assert (claims[len(SETTINGS)][1] == "supported") == all(t >= HEALTHY for t in residual)
    act = m["activation_summary"]
    he_off = max(abs(act[i]["per_layer_factor"] - 1) for i in ("he-fan-in", "he-fan-out"))
    assert (claims[len(SETTINGS) + 1][1] == "supported") == (he_off <= HE_TOLERANCE[0])
    assert result.finding.verdict == combine_verdicts([v for _, v in claims])
    # The per-layer factor is the ratio's (L-1)-th root, and both He modes see the same
    # draws up to a scale on the first layer, so their ratios agree.
    depth = result.results["params"]["act_depth"]
    for a in act.values():
        assert a["per_layer_factor"] == pytest.approx(a["ratio_last_first"] ** (1 / (depth - 1)))
    assert act["he-fan-in"]["ratio_last_first"] == pytest.approx(
        act["he-fan-out"]["ratio_last_first"], rel=1e-9)


def test_gradient_profile_matches_a_plain_backward_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = build_net(8, True, True, "he", 4, 1, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(6, 1, 12, 12), torch.arange(6)
    profile = gradient_profile(model, x, y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())

    ref = build_net(8, True, True, "he", 4, 1, 10)
    ref.load_state_dict(before)
    ref = ref.double().train()
    F.cross_entropy(ref(x.double()), y).backward()
    convs = [m for m in ref.modules() if isinstance(m, nn.Conv2d)]
    assert profile["weight_grad"] == pytest.approx([c.weight.grad.norm().item() for c in convs])


def test_no_bn_default_init_nets():
    torch.manual_seed(0)
    net = build_net(8, False, False, "pytorch-default", 4, 1, 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    conv = net.layer1[0].conv1  # kaiming uniform with a = sqrt(5): bound 1 / sqrt(fan_in)
    assert conv.weight.abs().max() <= 1 / math.sqrt(4 * 9)
    assert conv.weight.abs().max() > 0.8 / math.sqrt(4 * 9)


def test_valid_tap_fraction_counts_the_taps_inside():
    for h, w in ((28, 28), (5, 9), (1, 1)):
        counted = F.conv2d(torch.ones(1, 1, h, w), torch.ones(1, 1, 3, 3), padding=1)
        assert valid_tap_fraction(h, w) == pytest.approx(counted.mean().item() / 9)
    assert valid_tap_fraction(7, 7, kernel=1) == 1.0


def test_activation_scale_follows_the_theory_in_a_wide_stack():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 20, 20)
    pad = math.sqrt(valid_tap_fraction(20, 20))
    for init in ("he-fan-in", "xavier", "pytorch-default"):
        stds = activation_stds(x, 6, 48, init)
        factor = (stds[-1] / stds[0]) ** (1 / 5)
        assert factor == pytest.approx(THEORY[init] * pad, rel=0.08), init


def test_small_pure_functions():
    assert attenuation([4.0, 1.0, 2.0]) == 2.0
    assert attenuation([1.0, 0.0]) == math.inf
    assert depth_trend({110: 0.5, 20: 5.0, 56: 1.0}) == pytest.approx(0.1)
    assert [vanish_verdict(t) for t in (0.001, 0.05, 0.1, 30)] == [
        "supported", "inconclusive", "not supported", "not supported"]
    factor, r2 = log_linear_fit([3 * 0.7**i for i in range(10)])
    assert factor == pytest.approx(0.7) and r2 == pytest.approx(1.0)
    assert log_linear_fit([1.0, 2.0, 1.0, 2.0])[1] < 0.5
    assert combine_verdicts(["supported", "supported"]) == "supported"
    assert combine_verdicts(["supported", "not supported", "inconclusive"]) == "mixed"
    # issue 16's one rule (was "inconclusive" under this module's own rule)
    assert combine_verdicts(["supported", "inconclusive"]) == "mixed"


def _gradients(plain_trends, residual_trend=1.0):
    # Two seeds; the shallow net's last/first ratio is 1, so each seed's T is the deep one's.
    def prof(att):
        return {"output_grad": [att, 1.0]}
    profiles = {s: {"plain": {8: [prof(1.0)] * 2, 14: [prof(t) for t in plain_trends]},
                    "residual": {8: [prof(1.0)] * 2, 14: [prof(residual_trend)] * 2}}
                for s in SETTINGS}
    summary = {s: {"residual": {"output_grad_trend": residual_trend}} for s in SETTINGS}
    return Gradients([8, 14], profiles, {}, summary)


def test_inconclusive_gradient_claims_get_a_band_power_note_and_decided_ones_none():
    g = _gradients([0.02, 0.05])
    label = SETTINGS["bn-init"][0]
    claim = f"plain nets, {label}: the gradient vanishes with depth"
    claims = {claim: "inconclusive", "residual nets: no vanishing with depth, in every "
              "setting": "supported"}
    power = claim_power(claims, g, 30.0)
    assert list(power) == [claim]
    p = power[claim]
    # log10 T per seed: -1.70, -1.30, mean -1.5; nearer edge log10(0.01) = -2.
    se = abs(math.log10(0.05) - math.log10(0.02)) / 2
    assert p["needed"] is None and p["t"] == pytest.approx(
        ((math.log10(0.02) + math.log10(0.05)) / 2 + 2) / se)
    assert claim_power({claim: "supported"}, g, 30.0) == {}


# ---- rule "2se" (the standard-2se preset): synthetic per-seed statistics, no training -------

# The committed standard run's per-seed log10 T for plain nets, no BN with He init.
NOBN_HE_LOGS = [-1.449, -2.488, -1.446]


def test_every_preset_names_its_rule_and_standard_2se_carries_the_new_one():
    from cnnzoo.experiments.base import STANDARD_2SE
    from cnnzoo.experiments.gradient_flow import PRESETS

    assert {name: p["rule"] for name, p in PRESETS.items()} == {
        "tiny": "point", "quick": "point", "standard": "point", STANDARD_2SE: "2se",
        "full": "2se"}
    assert all(p["nobn_seeds"] == p["seeds"] for n, p in PRESETS.items() if p["rule"] == "point")
    assert PRESETS[STANDARD_2SE]["nobn_seeds"] > PRESETS[STANDARD_2SE]["seeds"] >= 2


def test_2se_a_trend_within_2_se_of_its_edge_is_inconclusive_with_seeds_needed():
    from cnnzoo.experiments.gradient_flow import vanish_case

    case = vanish_case(NOBN_HE_LOGS, seconds_per_seed=16.0)
    assert case["verdict"] == "inconclusive"
    assert case["t"] == pytest.approx(-0.594, abs=0.01)
    power = case["power"]
    # 3 seeds x (2 / 0.594)^2 = 34.0: the seeds that would reach |t| = 2 at this effect.
    assert power["needed"] == 35 and power["seconds"] == 35 * 16.0
    # The old rule judges the same seeds' point estimate: inside the band, inconclusive too.
    assert vanish_verdict(10 ** (sum(NOBN_HE_LOGS) / 3)) == "inconclusive"


def test_2se_a_clear_counterexample_is_not_supported_and_clear_support_is_supported():
    from cnnzoo.experiments.gradient_flow import healthy_case, vanish_case

    no_vanishing = [6.502, 6.78, 6.131]  # plain BN nets at init: T ~ 3e6, far above 0.01
    vanishing = [-4.305, -5.184, -3.977]  # plain BN nets after training: T ~ 3e-5
    assert vanish_case(no_vanishing, 1.0)["verdict"] == "not supported"
    assert vanish_case(vanishing, 1.0)["verdict"] == "supported"
    assert "power" not in vanish_case(vanishing, 1.0)
    assert healthy_case(no_vanishing, 1.0)["verdict"] == "supported"
    assert healthy_case(vanishing, 1.0)["verdict"] == "not supported"
    # The old rule gives the same verdicts on the same seeds.
    assert vanish_verdict(10 ** (sum(no_vanishing) / 3)) == "not supported"
    assert vanish_verdict(10 ** (sum(vanishing) / 3)) == "supported"


def test_2se_a_point_estimate_past_the_edge_but_within_its_noise_is_not_supported_yet():
    from cnnzoo.experiments.gradient_flow import vanish_case

    logs = [-2.0, -2.4, -1.9]  # mean -2.1: T < 0.01, but only 0.66 SE below -2
    assert vanish_verdict(10 ** (sum(logs) / 3)) == "supported"  # the old rule
    assert vanish_case(logs, 1.0)["verdict"] == "inconclusive"


def test_2se_one_seed_decides_nothing_and_gives_no_made_up_estimate():
    from cnnzoo.experiments.gradient_flow import vanish_case

    case = vanish_case([-5.0], 1.0)
    assert case["verdict"] == "inconclusive" and case["power"]["needed"] is None


def test_2se_a_claim_over_several_cases_fails_on_one_counterexample():
    from cnnzoo.experiments.gradient_flow import healthy_case, se_case, verdicts_and_power

    good, unsure, bad = [1.0, 1.1, 0.9], [-0.9, -1.3, -0.6], [-3.0, -3.2, -2.9]
    claims, power = verdicts_and_power({
        "all good": {"a": healthy_case(good, 1.0), "b": healthy_case(good, 1.0)},
        "one unsure": {"a": healthy_case(good, 1.0), "b": healthy_case(unsure, 2.0)},
        "one bad": {"a": healthy_case(unsure, 1.0), "b": healthy_case(bad, 1.0)},
        "He": {"fan-in": se_case([0.98, 0.97, 0.99], HE_TOLERANCE[0], above=False, centre=1.0,
                                 seconds_per_unit=0.1, unit="draws")},
    })
    assert claims == {"all good": "supported", "one unsure": "inconclusive",
                      "one bad": "not supported", "He": "supported"}
    assert set(power) == {"one unsure"} and set(power["one unsure"]["cases"]) == {"b"}
    assert power["one unsure"]["cases"]["b"]["seconds"] == 2.0 * power[
        "one unsure"]["cases"]["b"]["needed"]
