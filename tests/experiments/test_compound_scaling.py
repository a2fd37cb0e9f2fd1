"""compound-scaling: the tiny preset end to end, the MAC matching and the saturation test."""

from __future__ import annotations

import json
import math

import pytest

from cnnzoo.experiments import run_experiment
from cnnzoo.experiments._scaling_plan import GRID_STEP, compound, match, plan
from cnnzoo.experiments.common import margin
from cnnzoo.experiments.compound_scaling import MARGIN, gain_drop, three_way
from cnnzoo.models.efficientnet import ALPHA, BETA, GAMMA, CompoundScaling


def test_tiny_preset_writes_consistent_results(tmp_path):
    result = run_experiment("compound-scaling", "tiny", data="synthetic:1x16x16:4:200",
                            out=tmp_path, quiet=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    m, params = saved["measured"], saved["params"]
    for name in ("accuracy_vs_macs.png", "single_dimensions.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / name).stat().st_size < 200_000

    nets = m["networks"]
    assert len(nets) == 1 + 4 * len(params["phis"])
    base = next(n for n in nets if n["method"] == "baseline")
    assert (base["width_mult"], base["depth_mult"], base["resolution"]) == (
        params["base_width"], params["base_depth"], params["base_resolution"])
    assert all(n["macs"] > base["macs"] for n in nets if n is not base)
    keys = {"width": "width_mult", "depth": "depth_mult", "resolution": "resolution"}
    for n in nets:
        for method, key in keys.items():  # a single-dimension variant keeps the other two
            if n["method"] not in ("baseline", "compound", method):
                assert n[key] == base[key]
        if n["method"] == "compound":
            phi = n["factor"]
            assert n["width_mult"] == pytest.approx(base["width_mult"] * BETA**phi)
            assert n["depth_mult"] == pytest.approx(base["depth_mult"] * ALPHA**phi)
            assert n["resolution"] == round(base["resolution"] * GAMMA**phi)
        assert len(n["test_acc"]) == params["seeds"] and 0 <= n["test_acc_mean"] <= 1

    # Verdicts follow from the numbers under the stated thresholds.
    for s in m["saturation"].values():
        if "t" in s:
            assert s["t"] == pytest.approx(s["drop"] / s["se"])
            assert s["verdict"] == three_way(s["t"])
    for b in m["per_budget"]:
        comp = next(n for n in nets if n["method"] == "compound" and n["step"] == b["step"])
        best = next(n for n in nets if n["method"] == b["best_single"] and n["step"] == b["step"])
        assert b["margin"] == pytest.approx(margin(comp["test_acc"], best["test_acc"]))
        assert b["verdict"] == three_way(b["margin"])
        for method, vs in b["vs"].items():
            other = next(n for n in nets if n["method"] == method and n["step"] == b["step"])
            assert vs["margin"] == pytest.approx(margin(comp["test_acc"], other["test_acc"]))
            assert vs["macs_ratio"] == pytest.approx(other["macs"] / comp["macs"])
            assert vs["points"] == pytest.approx(
                100 * (comp["test_acc_mean"] - other["test_acc_mean"]))
    for method in ("width", "depth", "resolution"):
        best = max(n["test_acc_mean"] for n in nets if n["method"] == method)
        assert (method in m["no_gain"]) == (best - base["test_acc_mean"] < 0.01)
    claims = saved["claims"]
    assert claims["compound is best for the MACs"] == m["per_budget"][-1]["verdict"]
    agree = len(set(claims.values())) == 1
    assert saved["verdict"] == result.finding.verdict == (
        next(iter(claims.values())) if agree else "mixed")


def fake_macs(s: CompoundScaling) -> int:
    """A smooth cost model: MACs grow with width^2, depth and side^2."""
    return int(1e6 * s.width_mult**2 * s.depth_mult * s.resolution**2)


def test_plan_matches_each_dimension_to_the_compound_macs():
    base = CompoundScaling(0.5, 0.5, 20)
    variants = plan(base, [1.0, 2.0], fake_macs)
    assert [v.method for v in variants] == ["baseline"] + ["compound", "width", "depth",
                                                          "resolution"] * 2
    for step in (1, 2):
        group = {v.method: v for v in variants if v.step == step}
        target = fake_macs(group["compound"].scaling)
        assert group["compound"].scaling == compound(base, [1.0, 2.0][step - 1])
        # The grid (and a whole pixel) bounds how close a single dimension can get.
        tolerance = {"width": math.log(GRID_STEP), "depth": math.log(GRID_STEP) / 2,
                     "resolution": 2 * math.log(1 + 1 / 20)}
        for method, tol in tolerance.items():
            got = fake_macs(group[method].scaling)
            assert abs(math.log(got / target)) <= tol, (method, got, target)


def test_match_takes_the_largest_candidate_when_the_target_is_out_of_reach():
    base = CompoundScaling(0.5, 0.5, 20)
    assert match(base, "width", 1e30, fake_macs) == pytest.approx(16.0)
    assert match(base, "depth", 1.0, fake_macs) == 1.0  # below the baseline: no scaling
    with pytest.raises(ValueError, match="method: expected width, depth or resolution"):
        match(base, "height", 1e6, fake_macs)


def test_gain_drop_and_its_standard_error():
    drop, se, gains = gain_drop([(1e6, [0.50]), (2e6, [0.60]), (4e6, [0.65])])
    assert gains == pytest.approx([0.10, 0.05])
    assert drop == pytest.approx(0.05)
    # One seed: each accuracy counts with the 0.5-point floor; coefficients -1, 2, -1.
    assert se == pytest.approx(0.005 * math.sqrt(6))
    assert three_way(drop / se) == "supported" and drop / se >= MARGIN
    # A curve that accelerates is the opposite; a straight line on log MACs is neither.
    drop, se, _ = gain_drop([(1, [0.50]), (2, [0.51]), (4, [0.60])])
    assert three_way(drop / se) == "not supported"
    drop, se, _ = gain_drop([(1, [0.5, 0.52]), (4, [0.6, 0.62]), (16, [0.7, 0.72])])
    assert drop == pytest.approx(0.0, abs=1e-12) and three_way(drop / se) == "inconclusive"
    with pytest.raises(ValueError, match="at least 3 points"):
        gain_drop([(1, [0.5]), (2, [0.6])])
    with pytest.raises(ValueError, match="MACs must increase"):
        gain_drop([(1, [0.5]), (1, [0.6]), (2, [0.7])])


def test_bad_phis_are_named(tmp_path):
    with pytest.raises(ValueError, match="phis: expected increasing positive"):
        run_experiment("compound-scaling", "tiny", data="synthetic:1x8x8:4:100", out=tmp_path,
                       quiet=True, phis=[2.0, 1.0])


def _results(accs: dict[tuple[str, int], list[float]]) -> list:
    """Trained networks with given test accuracies; MACs double per step; 10 s per epoch."""
    from cnnzoo.experiments._scaling_plan import Variant
    from cnnzoo.experiments.compound_scaling import Trained
    s = CompoundScaling(0.25, 0.3, 28)
    return [Trained(Variant(method, step, s, 1.0), 1000, 1_000_000 * 2**step, acc, acc,
                    [10.0] * len(acc)) for (method, step), acc in accs.items()]


def test_inconclusive_claims_get_power_estimates_and_decided_ones_none():
    from cnnzoo.experiments.compound_scaling import COMPOUND_BEST, SATURATES, judge
    p = {"phis": [1.0, 2.0], "seeds": 3, "epochs": 2}
    # Each dimension flattens clearly (0.50 -> 0.60 -> 0.61): saturation supported. Compound
    # ahead of the best single by 0.4 points with a 1-point spread: inconclusive.
    accs = {("baseline", 0): [0.49, 0.50, 0.51]}
    for m in ("width", "depth", "resolution"):
        accs[(m, 1)] = [0.59, 0.60, 0.61]
        accs[(m, 2)] = [0.60, 0.61, 0.62]
    accs[("compound", 1)] = [0.60, 0.61, 0.62]
    accs[("compound", 2)] = [0.604, 0.614, 0.624]
    v = judge(p, _results(accs))
    assert v.claims[SATURATES] == "supported" and SATURATES not in v.power
    assert v.claims[COMPOUND_BEST] == "inconclusive"
    est = v.power[COMPOUND_BEST]
    assert est["n"] == 3 and est["needed"] > 3 and not est["floor_binds"]
    # 9 networks x 2 epochs x 10 s per seed
    assert est["seconds"] == pytest.approx(est["needed"] * 180)
    # One seed: the 0.5-point floor sets the standard error, so more seeds cannot decide it.
    one = judge({**p, "seeds": 1}, _results({k: a[1:2] for k, a in accs.items()}))
    assert one.claims[COMPOUND_BEST] == "inconclusive"
    assert one.power[COMPOUND_BEST]["floor_binds"] and one.power[COMPOUND_BEST]["needed"] is None
    assert "cannot raise" in one.power[COMPOUND_BEST]["text"]
