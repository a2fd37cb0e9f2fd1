"""The experiment framework: registry, presets and overrides, output files, CLI errors."""

from __future__ import annotations

import json

import pytest
import torch

from cnnzoo.cli import main
from cnnzoo.experiments import EXPERIMENTS, Finding, common, experiment, run_experiment
from cnnzoo.experiments.base import Context
from cnnzoo.experiments.common import Splits, accuracy, fit, load_splits, margin
from cnnzoo.train import device as device_mod

PRESETS = {"tiny": {"epochs": 1, "width": 4}, "quick": {"epochs": 2, "width": 8},
           "standard": {"epochs": 3, "width": 8}, "full": {"epochs": 3, "width": 16}}


@pytest.fixture
def toy():
    """A registered experiment that trains a tiny net on synthetic data and judges by data."""

    @experiment("toy", title="Toy", paper="Nobody 2026", claim="training beats chance",
                presets=PRESETS)
    def toy_fn(ctx):
        import matplotlib.pyplot as plt

        splits: Splits = load_splits(ctx, train_size=120, val_size=40, test_size=60)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(splits.in_chans, ctx.params["width"], 3, padding=1),
            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(ctx.params["width"], splits.num_classes))
        model, rows = fit(ctx, model, splits, epochs=ctx.params["epochs"], batch_size=40, lr=0.05)
        acc = accuracy(model, splits.test)
        fig, ax = plt.subplots()
        ax.plot([r["val_acc"] for r in rows])
        ctx.save_plot(fig, "curve.png")
        verdict = "supported" if acc > 1 / splits.num_classes else "not supported"
        return Finding(verdict, f"test accuracy {acc:.3f}", {"test_acc": acc, "epochs": len(rows)})

    yield "toy"
    del EXPERIMENTS["toy"]


def test_run_writes_results_finding_and_plots(toy, tmp_path):
    result = run_experiment(toy, "tiny", data="synthetic:1x8x8:4:200", out=tmp_path, quiet=True,
                            epochs=2)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["params"] == {"epochs": 2, "width": 4}
    assert saved["measured"]["epochs"] == 2
    assert saved["verdict"] == result.finding.verdict
    assert saved["plots"] == ["curve.png"]
    assert saved["environment"]["torch"] == torch.__version__
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "finding.md").read_text()
    assert result.finding.verdict in text and "![curve.png](curve.png)" in text


def test_same_seed_same_numbers(toy, tmp_path):
    a = run_experiment(toy, "tiny", data="synthetic:1x8x8:4:200", out=tmp_path / "a", quiet=True)
    b = run_experiment(toy, "tiny", data="synthetic:1x8x8:4:200", out=tmp_path / "b", quiet=True)
    assert a.finding.measured == b.finding.measured


def test_bad_names_and_parameters(toy, tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'nope'; expected one of .*toy"):
        run_experiment("nope", out=tmp_path)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        run_experiment(toy, "huge", out=tmp_path)
    with pytest.raises(ValueError, match="unknown parameter 'epoch'; expected one of epochs"):
        run_experiment(toy, "tiny", out=tmp_path, epoch=3)
    with pytest.raises(ValueError, match="parameter epochs: expected a value like 1"):
        run_experiment(toy, "tiny", out=tmp_path, epochs="three")
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(FileNotFoundError, match="no such path"):
        run_experiment(toy, "tiny", data=str(tmp_path / "missing"), out=tmp_path / "new")
    assert not (tmp_path / "new").exists()  # a failed run leaves no empty folder behind


def test_presets_must_agree_and_verdicts_are_checked():
    with pytest.raises(ValueError, match="presets must define the same parameters"):
        experiment("bad", title="", paper="", claim="",
                   presets={"tiny": {"a": 1}, "quick": {"a": 1}, "standard": {"a": 1},
                            "full": {"b": 1}})
    with pytest.raises(ValueError, match="presets \\['full', 'standard'\\] are missing"):
        experiment("bad", title="", paper="", claim="", presets={"tiny": {}, "quick": {}})
    with pytest.raises(ValueError, match="verdict must be one of"):
        Finding("probably", "", {})


def test_cli_runs_and_reports_errors_in_one_line(toy, tmp_path, capsys):
    assert main(["experiment", toy, "--preset", "tiny", "--data", "synthetic:1x8x8:4:200",
                 "--out", str(tmp_path), "--set", "epochs=1", "--quiet"]) == 0
    assert "toy (tiny):" in capsys.readouterr().out
    assert main(["experiment", toy, "--preset", "tiny", "--set", "width=x", "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "parameter width" in err
    assert main(["experiment", "--list"]) == 0
    assert "toy" in capsys.readouterr().out


def test_precision_reaches_train_and_is_recorded(toy, tmp_path, monkeypatch, capsys):
    asked = []
    real_train = common.train

    def spy(*args, **kwargs):
        asked.append(kwargs["precision"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(common, "train", spy)
    # bf16 accepted on any CPU for this test (autocast runs there, emulated where not native).
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: True)
    data = ["--preset", "tiny", "--data", "synthetic:1x8x8:4:200", "--quiet"]
    assert main(["experiment", toy, *data, "--out", str(tmp_path / "bf16"),
                 "--precision", "bf16"]) == 0
    assert main(["experiment", toy, *data, "--out", str(tmp_path / "default")]) == 0
    assert asked == ["bf16", "fp32"]  # fp32 when not asked, whatever the CPU has
    for run, precision in (("bf16", "bf16"), ("default", "fp32")):
        saved = json.loads((tmp_path / run / "results.json").read_text())
        assert saved["environment"]["precision"] == precision
    assert "--precision bf16`" in (tmp_path / "bf16" / "finding.md").read_text()
    assert "--precision" not in (tmp_path / "default" / "finding.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse: only fp32 and bf16
        main(["experiment", toy, *data, "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_bf16_experiment_on_a_cpu_without_it_fails_before_any_work(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(common, "train", lambda *a, **k: pytest.fail("trained anyway"))
    with pytest.raises(ValueError, match="precision: this CPU has no native bf16"):
        run_experiment(toy, "tiny", data="synthetic:1x8x8:4:200", out=tmp_path, quiet=True,
                       precision="bf16")
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16"):
        run_experiment(toy, "tiny", out=tmp_path, precision="half")
    assert not (tmp_path / "results.json").exists()


def test_fit_takes_its_precision_from_the_context_only(tmp_path):
    ctx = Context("x", "tiny", {}, 0, "synthetic:1x8x8:4:200", None, tmp_path, quiet=True)
    with pytest.raises(ValueError, match="fit: precision comes from the experiment's context"):
        fit(ctx, torch.nn.Linear(1, 1), None, epochs=1, precision="fp32")


def test_margin_needs_a_real_difference():
    assert margin([0.90, 0.91, 0.92], [0.80, 0.81, 0.79]) > 5
    assert abs(margin([0.90, 0.95, 0.85], [0.89, 0.94, 0.86])) < 1
    assert margin([0.901], [0.900]) < 1  # one seed: 0.1 point is within the 0.5-point floor


def test_every_claim_of_the_issues_is_an_experiment_with_three_presets():
    from cnnzoo.experiments import get_experiment, list_experiments

    wanted = {"degradation", "gradient-flow", "lesion", "paths", "inception", "dense-vs-residual",
              "squeeze-excitation", "compound-scaling", "deformable", "efficiency",
              "effective-receptive-field"}
    assert wanted <= set(list_experiments())
    for name in wanted:
        exp = get_experiment(name)
        assert {"tiny", "quick", "standard", "full"} <= set(exp.presets)
        assert exp.paper and exp.claim and exp.title


def test_the_old_name_receptive_field_still_finds_the_renamed_experiment():
    from cnnzoo.experiments import get_experiment, list_experiments

    assert get_experiment("receptive-field").name == "effective-receptive-field"
    assert "receptive-field" not in list_experiments()


def test_data_without_a_test_split_holds_one_out_of_training(tmp_path):
    """An ImageFolder of training images only (like the CIFAR-10 JPEG tarball): the test images
    are held out of it, disjoint from train and val."""
    from PIL import Image

    from cnnzoo.experiments.base import Context

    for c, cls in enumerate(["cat", "dog"]):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(15):
            pixels = torch.full((6, 6, 3), 10 * i + 100 * c, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "imgs" / cls / f"{i}.png")
    ctx = Context("x", "tiny", {}, 0, str(tmp_path / "imgs"), None, tmp_path, quiet=True)
    splits = load_splits(ctx, train_size=10, val_size=6, test_size=8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 6, 8)
    assert splits.test.class_counts().tolist() == [4, 4]
    seen = [{(tuple(img.flatten().tolist()), int(y))
             for img, y in zip(s.images, s.labels, strict=True)}
            for s in (splits.train, splits.val, splits.test)]
    assert not (seen[0] & seen[2]) and not (seen[1] & seen[2]) and not (seen[0] & seen[1])


def test_cleared_needs_two_standard_errors_past_the_threshold_either_way():
    from cnnzoo.experiments.base import cleared
    assert cleared(0.9, 0.8, 0.04)[0] == "supported"          # 2.5 SE above
    assert cleared(0.85, 0.8, 0.04)[0] == "inconclusive"      # 1.25 SE above
    assert cleared(0.7, 0.8, 0.04)[0] == "not supported"      # 2.5 SE below
    assert cleared(0.7, 0.8, 0.04, above=False)[0] == "supported"
    assert cleared(0.9, 0.8, 0.0)[0] == "inconclusive"        # no spread: nothing decided
    assert cleared(0.9, 0.8, 0.04)[1] == pytest.approx(2.5)


def test_every_case_is_refuted_by_one_counterexample_and_never_mixed():
    from cnnzoo.experiments.base import every_case
    assert every_case(["supported"] * 3) == "supported"
    assert every_case(["supported", "inconclusive"]) == "inconclusive"
    assert every_case(["supported", "not supported", "inconclusive"]) == "not supported"
    assert every_case([]) == "inconclusive"


def test_standard_preset_is_standard_2se_only_where_the_experiment_has_it(capsys):
    from cnnzoo.experiments import get_experiment
    from cnnzoo.experiments.base import STANDARD_2SE, Experiment, standard_preset

    def fake(*presets):
        return Experiment("x", "t", "p", "c", {k: {} for k in presets}, lambda ctx: None)
    assert standard_preset(fake("tiny", "quick", "standard", "full")) == "standard"
    assert standard_preset(fake("tiny", "quick", "standard", STANDARD_2SE, "full")) == STANDARD_2SE
    assert main(["experiment", "degradation", "--standard-preset"]) == 0
    assert capsys.readouterr().out.strip() == standard_preset(get_experiment("degradation"))


def test_an_unknown_rule_is_refused_in_one_line_for_every_experiment_with_one():
    from cnnzoo.experiments import get_experiment, list_experiments
    from cnnzoo.experiments.base import resolve_params
    with_rule = [n for n in list_experiments() if "rule" in get_experiment(n).presets["quick"]]
    assert len(with_rule) >= 4
    for name in with_rule:
        with pytest.raises(ValueError, match=r"parameter rule: expected one of point, 2se"):
            resolve_params(get_experiment(name), "tiny", {"rule": "3se"})
