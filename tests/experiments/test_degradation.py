"""The degradation experiment: the tiny preset end to end, and its verdict rules."""

from __future__ import annotations

import json

import pytest

from cnnzoo.experiments import run_experiment
from cnnzoo.experiments.common import margin
from cnnzoo.experiments.degradation import check_depths, claim_power, claim_verdicts

DATA = "synthetic:1x28x28:10:400"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("degradation")
    return run_experiment("degradation", "tiny", data=DATA, out=out, quiet=True), out


def test_tiny_run_writes_its_files(tiny):
    result, out = tiny
    saved = json.loads((out / "results.json").read_text())
    assert saved["verdict"] == result.finding.verdict
    assert saved["plots"] == ["error_curves.png", "final_errors.png"]
    for plot in saved["plots"]:
        data = (out / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
    text = (out / "finding.md").read_text()
    assert "![error_curves.png](error_curves.png)" in text and "8.75%" in text


def test_curves_and_finals_are_consistent(tiny):
    result, _ = tiny
    m = result.finding.measured
    params = result.results["params"]
    assert m["nets"] == ["plain-8", "plain-14", "resnet-8", "resnet-14"]
    for name in m["nets"]:
        run = m["runs"][name]
        assert len(run["train_err"]) == params["seeds"]
        assert all(len(curve) == params["epochs"] for curve in run["train_err"] + run["val_err"])
        values = [v for c in run["train_err"] + run["val_err"] for v in c]
        values += run["final_train_err"] + run["test_err"]
        assert all(0.0 <= v <= 1.0 for v in values)
        # The validation error of the last epoch is the final one reported.
        assert run["final_val_err"] == [c[-1] for c in run["val_err"]]
    # Plain and residual twins have the same parameters; the deeper nets have more.
    assert m["params"]["plain-8"] == m["params"]["resnet-8"] < m["params"]["plain-14"]
    assert m["params"]["plain-14"] == m["params"]["resnet-14"]


def test_verdict_follows_from_the_measured_errors(tiny):
    result, _ = tiny
    m = result.finding.measured
    runs = m["runs"]
    plain = margin(runs["plain-14"]["final_train_err"], runs["plain-8"]["final_train_err"])
    resnet = margin(runs["resnet-14"]["final_train_err"], runs["resnet-8"]["final_train_err"])
    assert plain == pytest.approx(m["plain_margin"])
    assert resnet == pytest.approx(m["resnet_margin"])
    first, second, overall = claim_verdicts(plain, resnet)
    assert list(result.finding.claims.values()) == [first, second]
    assert result.finding.verdict == overall


def test_claim_rules():
    assert claim_verdicts(3.0, -5.0) == ("supported", "supported", "supported")
    assert claim_verdicts(3.0, -2.1) == ("supported", "supported", "supported")
    assert claim_verdicts(-3.0, 2.5) == ("not supported", "not supported", "not supported")
    assert claim_verdicts(3.0, 2.5) == ("supported", "not supported", "mixed")
    # issue 16's one rule, combine_verdicts (the overall was "inconclusive" under the old rule)
    assert claim_verdicts(1.9, -3.0) == ("inconclusive", "supported", "mixed")


@pytest.mark.parametrize("resnet_margin", [0.0, 1.0, 2.0, -2.0])
def test_deeper_resnet_within_the_noise_is_inconclusive(resnet_margin):
    # Issue 15: the deeper ResNet's error within 2 standard errors of the shallower one's
    # does not show "at least as good". The old rule called every margin <= 2 supported.
    def old_rule(m):
        return "supported" if m <= 2.0 else "not supported"

    assert old_rule(resnet_margin) == "supported"
    assert claim_verdicts(3.0, resnet_margin)[1] == "inconclusive"


@pytest.mark.parametrize("depths", [[56, 20], [20, 21], [20], [20, 56, 110], "20,56", [20, 20]])
def test_bad_depths_are_rejected_in_one_line(depths):
    with pytest.raises(ValueError, match=r"parameter depths: expected \[shallow, deep\]"):
        check_depths(depths)
    assert check_depths([20, 56]) == (20, 56)


def _measured(plain_diff, plain_margin, resnet_diff, resnet_margin):
    return {"plain_deeper_minus_shallow_train_err": plain_diff, "plain_margin": plain_margin,
            "resnet_deeper_minus_shallow_train_err": resnet_diff, "resnet_margin": resnet_margin}


def test_an_inconclusive_claim_gets_a_power_estimate_and_a_decided_one_none():
    # 3 seeds: plain +4 points at t = 3 (decided); ResNet -1.5 points at t = -1 (inconclusive:
    # the real SE, 1.5 points, is above the floor, so 3 x (2/1)^2 = 12 seeds would decide it).
    m = _measured(0.04, 3.0, -0.015, -1.0)
    claims = dict(zip(["plain", "resnet"], claim_verdicts(3.0, -1.0)[:2], strict=True))
    power = claim_power(claims, m, 3, seconds_per_seed=100.0)
    assert list(power) == ["resnet"]
    assert power["resnet"]["needed"] == 12 and power["resnet"]["seconds"] == 1200.0
    assert not power["resnet"]["floor_capped"]


def test_a_difference_under_one_point_is_capped_by_the_floor():
    # 0.6 points at one seed: t = 0.006 / 0.005 = 1.2, and the 0.5-point floor keeps
    # |t| <= 1.2 at any number of seeds, so no seed count is offered.
    m = _measured(0.006, 1.2, -0.05, -10.0)
    claims = dict(zip(["plain", "resnet"], claim_verdicts(1.2, -10.0)[:2], strict=True))
    power = claim_power(claims, m, 1, seconds_per_seed=50.0)
    assert list(power) == ["plain"]
    assert power["plain"]["needed"] is None and power["plain"]["floor_capped"]
    assert "cannot decide" in power["plain"]["text"]


def test_tiny_run_reports_power_for_its_inconclusive_claims_only(tiny):
    result, _ = tiny
    m = result.finding.measured
    inconclusive = {c for c, v in result.finding.claims.items() if v == "inconclusive"}
    assert set(m["power"]) == inconclusive and m["seconds_per_seed"] > 0
    for claim in inconclusive:
        assert any(m["power"][claim]["text"] in line for line in result.finding.details)
