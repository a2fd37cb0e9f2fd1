"""The efficiency experiment (Canziani et al. 2016): tiny preset end to end, its pure parts."""

from __future__ import annotations

import json
import math
import os

import pytest

from cnnzoo.experiments import run_experiment
from cnnzoo.experiments.base import combine_verdicts as combined_verdict
from cnnzoo.experiments.efficiency import (
    OTHER_LOAD_MAX,
    OUTLIER_FACTOR,
    PRESETS,
    R2_LEAVE_ONE_OUT,
    R2_REJECTED,
    R2_SUPPORTED,
    r2_verdict,
    throughput_deviation,
)
from cnnzoo.models.narrow import build_small_model
from cnnzoo.profile.compare import linear_fit
from cnnzoo.profile.profiler import run_profile
from cnnzoo.profile.published import published_top1
from cnnzoo.profile.report import leave_one_out_r2
from cnnzoo.profile.timing import OtherLoad
from cnnzoo.train.runlog import read_accuracy_points

DATA = "synthetic:1x28x28:10:400"
PLOTS = ["accuracy_vs_macs.png", "latency_vs_macs.png", "throughput.png", "accuracy_density.png"]


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A real `cnnzoo train` run directory, for the `runs` parameter."""
    from cnnzoo.train import train

    root = tmp_path_factory.mktemp("runs")
    result = train("compact_resnet8", "synthetic:1x28x28:10:200", epochs=1, batch_size=50,
                   val_size=50, model_options={"widen_factor": 1}, out=str(root / "k1"),
                   quiet=True, seed=0)
    return root, result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, user_run):
    out = tmp_path_factory.mktemp("efficiency")
    result = run_experiment("efficiency", "tiny", data=DATA, out=out, quiet=True,
                            runs=str(user_run[0]))
    return result, json.loads((out / "results.json").read_text())


def test_tiny_writes_results_finding_and_small_plots(tiny):
    result, saved = tiny
    assert saved["plots"] == PLOTS
    for name in PLOTS:
        data = (result.out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
    text = (result.out / "finding.md").read_text()
    assert f"**Verdict: {saved['verdict']}.**" in text
    assert saved["params"]["models"] == PRESETS["tiny"]["models"]


def test_tiny_counts_and_rates_are_consistent(tiny):
    _, saved = tiny
    m = saved["measured"]
    models = {row["model"]: row for row in m["models"]}
    assert list(models) == PRESETS["tiny"]["models"]
    for name, row in models.items():
        rep = run_profile(name, (1, 3, 32, 32), timing=False)
        assert row["params"] == rep.params
        assert row["gmacs"] == pytest.approx(rep.macs_per_image / 1e9)
    loads = [row["other_load"] for row in models.values()]
    assert all(row["attempts"] >= 1 for row in models.values())
    assert m["other_load_while_timing"] == (None if None in loads else max(loads))
    assert models["resnet34"]["params"] > models["resnet18"]["params"]
    assert models["resnet34"]["gmacs"] > models["resnet18"]["gmacs"]
    for b in map(str, m["batch_sizes"]):
        rates = []
        for row in models.values():
            ms = row["ms_per_image"][b]
            assert ms > 0
            assert row["gmac_per_s"][b] == pytest.approx(row["gmacs"] / (ms / 1000))
            ratio = row["rate_vs_median"][b]
            assert row["outlier"][b] == (not 1 / OUTLIER_FACTOR <= ratio <= OUTLIER_FACTOR)
            rates.append(ratio)
        assert sorted(rates)[1] == pytest.approx(1.0)  # three models: the middle is the median
        fit = m["fits"][b]
        again = linear_fit([r["gmacs"] for r in models.values()],
                           [r["ms_per_image"][b] for r in models.values()])
        assert fit["r2"] == pytest.approx(again.r2) and 0 <= fit["r2"] <= 1
        assert fit["slope_ms_per_gmac"] == pytest.approx(again.slope)
        assert fit["n"] == 3 and fit["leave_one_out_min_r2"] is None  # needs 4 models


def test_tiny_verdict_follows_the_documented_thresholds(tiny):
    result, saved = tiny
    fits = saved["measured"]["fits"]
    load = saved["measured"]["other_load_while_timing"]
    assert load is None or 0 <= load <= 1
    expected = {f"operations predict time, batch {b}": r2_verdict(
        f["r2"], math.nan if f["leave_one_out_min_r2"] is None else f["leave_one_out_min_r2"],
        load) for b, f in fits.items()}
    assert saved["claims"] == expected
    assert saved["verdict"] == combined_verdict(list(expected.values()))
    # Three models leave no leave-one-out check: the claim cannot be "supported".
    assert "supported" not in expected.values()
    assert f"r² >= {R2_SUPPORTED}" in result.finding.summary


def test_tiny_published_points_are_counted_at_the_published_crop(tiny):
    _, saved = tiny
    published = {q["model"]: q for q in saved["measured"]["published"]}
    assert set(published) == {"resnet18", "resnet34", "efficientnet_b0"}
    for name, q in published.items():
        pub = published_top1(name)
        assert q["top1_percent"] == pub.top1_percent and q["eval_size"] == 224
        assert q["params"] == pub.params  # the published model's own count
        # Timing ran at 32x32; the published panel must use the 224 count (torchvision's).
        assert q["gmacs"] == pytest.approx(pub.gmacs, rel=0.02)
        assert q["top1_per_mparams"] == pytest.approx(pub.top1_percent / (q["params"] / 1e6))


def test_tiny_user_points_trained_here_and_read_from_runs(tiny, user_run):
    _, saved = tiny
    points = saved["measured"]["accuracy_points"]
    here = [p for p in points if p["origin"] == "this experiment"]
    runs = [p for p in points if p["origin"] != "this experiment"]
    assert [p["model"] for p in here] == PRESETS["tiny"]["train_models"]
    for p in here:
        assert 0 <= p["accuracy"] <= 1 and p["data"] == DATA and p["image_size"] == [1, 28, 28]
        model = build_small_model(p["model"], num_classes=10, in_chans=1)
        assert p["params"] == sum(t.numel() for t in model.parameters())
    (run,) = runs
    assert run["model"] == "compact_resnet8(widen_factor=1)"
    assert run["accuracy"] == pytest.approx(user_run[1].best_val_acc)
    assert run["source"] == "best val top-1, your run" and run["epochs"] == 1
    # The run and the variant trained here are the same network at the same size.
    k1 = next(p for p in here if p["model"] == "compact_resnet8_k1")
    assert (run["params"], run["macs"]) == (k1["params"], k1["macs"])


def test_results_json_is_read_back_as_runs(tiny):
    result, saved = tiny
    points, notes = read_accuracy_points(str(result.out / "results.json"))
    assert notes == []
    assert [(p.model, p.accuracy, p.macs) for p in points] == [
        (p["model"], p["accuracy"], p["macs"]) for p in saved["measured"]["accuracy_points"]]


def test_runs_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="runs: no run directory, checkpoint or results.json "
                                         "matches"):
        read_accuracy_points(str(tmp_path / "nothing*"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no accuracy found .*no best.pt or last.pt"):
        read_accuracy_points(str(tmp_path / "r"))
    (tmp_path / "results.json").write_text(json.dumps({"measured": {}}))
    with pytest.raises(ValueError, match="has no measured.accuracy_points"):
        read_accuracy_points(str(tmp_path / "results.json"))


def test_unusable_small_models_fail_before_timing(tmp_path):
    with pytest.raises(ValueError, match="train_models: .*resnet2000.*compact_resnet8_k1"):
        run_experiment("efficiency", "tiny", data=DATA, out=tmp_path, quiet=True,
                       train_models=["resnet2000"])
    with pytest.raises(ValueError, match="train_models: alexnet needs images of at least 63 "
                                         "pixels a side; .*28x28"):
        run_experiment("efficiency", "tiny", data=DATA, out=tmp_path, quiet=True,
                       train_models=["alexnet"])
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(("r2", "loo", "load", "verdict"), [
    (0.95, 0.9, None, "supported"),
    (R2_SUPPORTED, R2_LEAVE_ONE_OUT, OTHER_LOAD_MAX, "supported"),
    (0.95, 0.9, OTHER_LOAD_MAX + 0.01, "inconclusive"),  # a busy machine's timings
    (0.2, 0.2, 0.5, "inconclusive"),
    (0.95, 0.2, 0.0, "inconclusive"),  # one model makes the line
    (0.95, math.nan, 0.0, "inconclusive"),  # too few models to tell
    (0.7, 0.7, 0.0, "inconclusive"),
    (R2_REJECTED - 1e-9, 0.9, 0.0, "not supported"),
    (math.nan, 0.9, 0.0, "inconclusive"),
])
def test_r2_verdict(r2, loo, load, verdict):
    assert r2_verdict(r2, loo, load) == verdict


def test_other_load_sees_a_busy_process():
    import subprocess
    import sys
    from pathlib import Path

    busy = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 1.0: pass"
    with OtherLoad() as load:
        subprocess.run([sys.executable, "-c", busy], check=True)
    if not Path("/proc/stat").exists():  # not Linux: unknown, never a guess
        assert load.fraction is None
    else:  # one busy core of the machine's, while this process only waited
        assert load.fraction > 0.5 / (os.cpu_count() or 1)


def test_combined_verdict():
    assert combined_verdict(["supported", "supported"]) == "supported"
    assert combined_verdict(["not supported"]) == "not supported"
    assert combined_verdict(["supported", "inconclusive"]) == "mixed"
    assert combined_verdict([]) == "inconclusive"


def test_leave_one_out_finds_the_point_that_makes_the_line():
    x = [1.0, 1.1, 1.2, 1.3, 10.0]
    y = [5.0, 3.0, 6.0, 4.0, 50.0]  # noise near the origin, one far point on a line
    assert linear_fit(x, y).r2 > 0.95
    loo = leave_one_out_r2(x, y)
    assert loo[4] < 0.2 and min(loo[:4]) > 0.95
    assert all(math.isnan(v) for v in leave_one_out_r2(x[:3], y[:3]))


def test_throughput_deviation_flags_models_beyond_the_factor():
    gmacs = [1.0, 2.0, 4.0, 1.0, 0.5]
    ms = [20.0, 40.0, 80.0, 60.0, 2.0]  # 50 GMAC/s, except 16.7 and 250
    rates, median, outliers = throughput_deviation(gmacs, ms)
    assert rates == pytest.approx([50, 50, 50, 1000 / 60, 250])
    assert median == pytest.approx(50)
    assert outliers == [False, False, False, True, True]


def test_a_model_timed_while_the_machine_was_busy_is_timed_again(tmp_path, monkeypatch):
    from cnnzoo.experiments import efficiency
    from cnnzoo.experiments.base import Context
    from cnnzoo.profile import timing

    shares = iter([0.5, 0.0])  # busy on the first attempt, idle on the second

    class FakeLoad:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fraction = next(shares)

    monkeypatch.setattr(timing, "OtherLoad", FakeLoad)
    waits = []
    monkeypatch.setattr(timing, "wait_for_idle",
                        lambda limit_s, max_load: waits.append(limit_s) or 0.0)
    params = {**PRESETS["tiny"], "models": ["resnet18"]}
    ctx = Context("efficiency", "tiny", params, 0, DATA, None, tmp_path, quiet=True)
    comparison, loads = efficiency._time_zoo(ctx)
    assert loads == {"resnet18": {"other_load": 0.0, "attempts": 2}}
    assert waits == [efficiency.IDLE_WAIT_S]  # it waited for the neighbour once, in between
    assert [r.model for r in comparison.reports] == ["resnet18"]
    assert [t.batch_size for t in comparison.reports[0].timings] == params["batch_sizes"]


def test_wait_for_idle_returns_once_the_machine_is_quiet(monkeypatch):
    from cnnzoo.profile import timing

    shares = iter([0.9, 0.5, 0.05])

    class FakeLoad:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fraction = next(shares)

    monkeypatch.setattr(timing, "OtherLoad", FakeLoad)
    waited = timing.wait_for_idle(10.0, max_load=OTHER_LOAD_MAX, sample_s=0.01)
    assert 0.03 <= waited < 1.0
    assert next(shares, "done") == "done"  # three samples: busy, busy, quiet


def test_inconclusive_fits_get_a_power_entry_and_decided_ones_none():
    from cnnzoo.experiments._zoo_timing import Fit
    from cnnzoo.experiments.efficiency import fit_power, fits_power

    def fit(r2, loo):
        return Fit(10.0, 1.0, r2, 11, loo, "vgg16", 20.0, r2_verdict(r2, loo, 0.0))

    weak, strong = fit(0.65, 0.6), fit(0.95, 0.9)
    assert weak.verdict == "inconclusive" and strong.verdict == "supported"
    est = fit_power(weak, 0.0, 120.0)
    assert est["needed"] is None and est["seconds"] is None
    assert "no standard error" in est["text"] and "0.650" in est["text"]
    # Inconclusive because of other processes' load: a rerun on an idle machine decides it.
    busy = fit_power(strong, 0.3, 120.0)
    assert busy["seconds"] == 120.0 and "idle machine" in busy["text"]
    assert "fewer than 4 models" in fit_power(fit(0.9, math.nan), None, 1.0)["text"]
    assert set(fits_power({1: weak, 16: strong}, 0.0, 1.0)) == {
        "operations predict time, batch 1"}


# ---- rule "2se" (the standard-2se preset): synthetic fits, no timing -----------------------

def _line(scatter: float) -> tuple[list[float], list[float]]:
    """17 'models' on the line y = 8x + 20 with a fixed zigzag of relative size `scatter`."""
    x = [0.4 + 1.2 * i for i in range(17)]
    wiggle = [1, -1, 0.5, -0.5, 1.5, -1.5, 0.2, -0.2, 1, -1, 0.7, -0.7, 1.2, -1.2, 0.3, -0.3, 0]
    return x, [(8 * a + 20) * (1 + scatter * w) for a, w in zip(x, wiggle, strict=True)]


def test_every_preset_names_its_rule():
    from cnnzoo.experiments.base import STANDARD_2SE
    from cnnzoo.experiments.efficiency import PRESETS

    assert {name: p["rule"] for name, p in PRESETS.items()} == {
        "tiny": "point", "quick": "point", "standard": "point", STANDARD_2SE: "2se",
        "full": "2se"}
    # standard-2se changes the rule only: same models and timing budget as standard.
    assert {k: v for k, v in PRESETS[STANDARD_2SE].items() if k != "rule"} == {
        k: v for k, v in PRESETS["standard"].items() if k != "rule"}


def test_bootstrap_se_is_seeded_and_grows_with_the_scatter():
    from cnnzoo.experiments.efficiency import bootstrap_r2

    x, y = _line(0.2)
    first, again = bootstrap_r2(x, y, seed=3), bootstrap_r2(x, y, seed=3)
    assert first["se"] == again["se"] and first["resamples"] == 2000
    assert bootstrap_r2(x, y, seed=4)["se"] != first["se"]
    assert bootstrap_r2(*_line(0.05))["se"] < bootstrap_r2(*_line(0.2))["se"] < bootstrap_r2(
        *_line(0.6))["se"]
    # Three models: every kept draw is the same three again, no spread to measure.
    assert math.isnan(bootstrap_r2(x[:3], y[:3])["se"])


@pytest.mark.parametrize(("r2", "se", "load", "verdict", "old"), [
    (0.95, 0.03, 0.0, "supported", "supported"),  # 5 SE above 0.8
    (0.85, 0.05, 0.0, "inconclusive", "supported"),  # above 0.8, within its noise
    (0.6, 0.05, 0.0, "not supported", "inconclusive"),  # the old band [0.5, 0.8) is gone
    (0.3, 0.05, 0.0, "not supported", "not supported"),
    (0.95, 0.03, OTHER_LOAD_MAX + 0.01, "inconclusive", "inconclusive"),  # busy machine
    (0.95, math.nan, 0.0, "inconclusive", "supported"),  # no SE decides nothing
])
def test_r2_verdict_2se_against_the_old_rule(r2, se, load, verdict, old):
    from cnnzoo.experiments.efficiency import r2_verdict_2se

    assert r2_verdict_2se(r2, se, load)[0] == verdict
    assert r2_verdict(r2, 0.9, load) == old  # the same fit, leave-one-out r² 0.9


def test_2se_inconclusive_fits_get_models_needed_at_the_measured_cost():
    from cnnzoo.experiments._zoo_timing import Fit, TimingAnalysis
    from cnnzoo.experiments.efficiency import fits_power_2se, r2_verdict_2se

    def analysis(r2, se, n=17, load=0.0):
        verdict, t = r2_verdict_2se(r2, se, load)
        fit = Fit(8.0, 20.0, r2, n, 0.9, "vgg19", 80.0, verdict)
        return TimingAnalysis([], {1: fit}, {}, load, 170.0,
                              {1: {"se": se, "t": t}})

    power = fits_power_2se(analysis(0.86, 0.04))["operations predict time, batch 1"]
    # t = 1.5 with 17 models: 17 x (2 / 1.5)^2 = 30.2, so 31 would reach t = 2, at 10 s of
    # timing per model.
    assert power["t"] == pytest.approx(1.5)
    assert power["unit"] == "models" and power["needed"] == 31
    assert power["seconds"] == pytest.approx(31 * 170.0 / 17)
    assert fits_power_2se(analysis(0.95, 0.03)) == {}  # decided: no estimate
    busy = fits_power_2se(analysis(0.95, 0.03, load=0.3))["operations predict time, batch 1"]
    assert "idle machine" in busy["text"]
    few = fits_power_2se(analysis(0.9, math.nan, n=3))["operations predict time, batch 1"]
    assert few["needed"] is None and "no spread" in few["text"]
