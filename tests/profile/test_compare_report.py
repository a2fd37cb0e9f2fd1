"""`cnnzoo compare`: the report files, the HTML page in a real browser, the CLI's bad input."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from cnnzoo.cli import main
from cnnzoo.cli.profile import ProgressBar
from cnnzoo.profile import compare as compare_module
from cnnzoo.profile.compare import compare, linear_fit, read_runs, write_comparison
from cnnzoo.profile.markdown import fit_line, headers
from cnnzoo.profile.report import leave_one_out_r2
from cnnzoo.profile.timing import TimingOptions

# Cheap at 64x64 (ResNet-18 and EfficientNet-B0 end at 2x2, so batch-norm can train at
# batch 1), all three with published top-1.
MODELS = ["resnet18", "alexnet", "efficientnet_b0"]
QUICK = TimingOptions(warmup=1, repeats=2, max_repeats=2, min_time_s=0.0)
PLOTS = {"accuracy_vs_macs.png", "accuracy_density.png", "latency_vs_batch.png",
         "memory_vs_batch.png", "macs_vs_latency.png", "accuracy_vs_latency.png"}


def make_run(root: Path, name: str, model: str, accs: list[float | None],
             data: str = "cifar10") -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": model, "data": data}))
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": i, "val_acc": a}) + "\n" for i, a in enumerate(accs)))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    make_run(runs, "r18-a", "resnet18", [0.41, 0.63, 0.58])
    make_run(runs, "r18-b", "resnet18", [0.52])
    progress = io.StringIO()
    comparison = compare(MODELS, image_size=(3, 64, 64), batch_sizes=(1, 2), runs_dir=runs,
                         options=QUICK, progress=ProgressBar(stream=progress))
    out = tmp_path_factory.mktemp("compare") / "report"
    write_comparison(comparison, out)
    return out, comparison, progress.getvalue()


def test_results_files(report_dir):
    out, comparison, _ = report_dir
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["model"], int(r["batch_size"])) for r in rows] == [
        (m, b) for m in MODELS for b in (1, 2)]
    for r in rows:
        assert float(r["latency_ms_median"]) > 0 and int(r["peak_inference_bytes"]) > 0
        assert int(r["peak_train_bytes"]) > int(r["peak_inference_bytes"])
        assert r["top1_published_percent"] and "torchvision" in r["top1_published_source"]
        assert r["threads"] and r["torch_version"] and r["date"] and r["device"] == "cpu"
    data = json.loads((out / "results.json").read_text())
    assert data["env"]["threads"] >= 1 and data["env"]["torch_version"]
    assert len(data["rows"]) == 6 and set(data["macs_vs_latency_fits"]) == {"1", "2"}
    assert data["measured_accuracy"]["resnet18"]["top1"] == 0.63  # best of both runs
    assert rows[0]["top1_measured_percent"] == "63.0" and rows[0]["top1_measured_data"] == "cifar10"


def test_plots_are_real_pictures(report_dir):
    out, _, _ = report_dir
    assert {p.name for p in (out / "plots").iterdir()} == PLOTS
    for name in PLOTS:
        with Image.open(out / "plots" / name) as img:
            assert img.width >= 600 and img.height >= 400
            colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
            assert len(colors) > 50, name  # a blank or one-colour canvas would fail this


def test_markdown_report(report_dir):
    out, comparison, _ = report_dir
    text = (out / "report.md").read_text()
    for model in MODELS:
        assert f"| {model} |" in text
    for link in re.findall(r"\]\((plots/[^)]+)\)", text):
        assert (out / link).is_file()
    assert len(re.findall(r"\]\(plots/", text)) == len(PLOTS)
    assert comparison.env["device_name"] in text and "r² =" in text
    assert "resnet18: 63.00% top-1 on cifar10" in text


def test_html_is_self_contained(report_dir):
    out, _, _ = report_dir
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(PLOTS)
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing fetched from elsewhere
    assert "http://" not in html and "https://" not in html
    assert html.count("<tr>") == 1 + 6  # header + one row per model x batch size


def test_progress_bar_reports_every_step(report_dir):
    _, _, progress = report_dir
    lines = progress.strip().splitlines()
    assert lines[-1].startswith("[" + "#" * 28 + "] 6/6 efficientnet_b0 batch 2")
    assert sum("batch" in line for line in lines) == 6


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def chromium(args: list[str], tmp_path: Path) -> str:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000",
    ]
    result = subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def loaded_images(dom: str) -> tuple[int, int]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, "no <body> in the DOM dump"
    total = re.search(r'data-images-total="(\d+)"', body.group(1))
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(1))
    assert total and loaded, "the page's load check did not run"
    return int(loaded.group(1)), int(total.group(1))


def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    out, _, _ = report_dir
    page = (out / "report.html").resolve().as_uri()
    dom = chromium(["--dump-dom", page], tmp_path)
    assert loaded_images(dom) == (len(PLOTS), len(PLOTS))
    assert len(re.findall(r"<tr>", dom)) == 7 and "efficientnet_b0" in dom
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1200,1600", page], tmp_path)
    with Image.open(shot) as img:
        assert img.size == (1200, 1600)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 100


def test_the_browser_check_catches_a_broken_plot(report_dir, tmp_path):
    out, _, _ = report_dir
    html = (out / "report.html").read_text()
    broken = tmp_path / "broken.html"
    # Corrupt the first image's PNG data: the page must report one image fewer loaded.
    prefix = 'src="data:image/png;base64,'
    broken.write_text(html.replace(prefix + "iVBOR", prefix + "AAAA", 1))
    dom = chromium(["--dump-dom", broken.resolve().as_uri()], tmp_path)
    assert loaded_images(dom) == (len(PLOTS) - 1, len(PLOTS))


# ---- writing and failing -------------------------------------------------------------------


def test_output_is_replaced_whole_or_not_at_all(report_dir, tmp_path, monkeypatch):
    _, comparison, _ = report_dir
    out = tmp_path / "out"
    write_comparison(comparison, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken_plots(*args, **kwargs):
        raise RuntimeError("disk full")

    # By module object, not dotted path: `cnnzoo.profile` is also the name of the function.
    # compare.py imports the writers at its top, so the name is replaced where it is called.
    monkeypatch.setattr(compare_module, "make_plots", broken_plots)
    with pytest.raises(RuntimeError, match="disk full"):
        write_comparison(comparison, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
    monkeypatch.undo()
    write_comparison(comparison, out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "report.html").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "resnet18", "resnett50"], "unknown model 'resnett50'"),
        (["compare", "resnet18", "--batch-sizes", "1,0"], "batch size must be an integer >= 1"),
        (["compare", "alexnet", "--input", "3x32x32"], "alexnet"),
        (["summary", "nosuchnet"], "unknown model 'nosuchnet'"),
        (["summary", "resnet18", "--input", "0x3x64x64"], "batch size must be >= 1"),
        (["summary", "vgg16", "--input", "3x16x16"], "vgg16"),
    ],
)
def test_cli_bad_input_one_line_nonzero_nothing_written(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([*argv, "--out", str(out)] if argv[0] == "compare" else argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and message in err and "\n" not in err
    assert err.startswith(f"cnnzoo {argv[0]}: error:")
    assert list(tmp_path.iterdir()) == []


def test_cli_unwritable_output_fails_before_measuring(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: pytest.fail("measured"))
    for out in (blocker / "sub", blocker):
        rc = main(["compare", "resnet18", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc != 0 and str(out) in err and "\n" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_cli_summary(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["summary", "resnet18", "--input", "3x64x64", "--by-stage", "--json",
                 str(path)]) == 0
    text = capsys.readouterr().out
    assert "stage 1: 32x32" in text and "Total params: 11,689,512" in text
    assert json.loads(path.read_text())["input_shape"] == [1, 3, 64, 64]
    assert main(["summary", "resnet20"]) == 0  # default input: the model's native 3x32x32
    assert "input 1x3x32x32" in capsys.readouterr().out


def test_read_runs_skips_runs_without_validation(tmp_path):
    make_run(tmp_path, "a", "vgg11", [None, None])
    make_run(tmp_path, "b", "alexnet", [0.3, 0.5])
    (tmp_path / "not-a-run").mkdir()
    found = read_runs(tmp_path)
    assert set(found) == {"alexnet"} and found["alexnet"].epochs == 2
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_runs(tmp_path / "missing")


def test_read_runs_takes_the_selected_checkpoint_on_the_stated_data(tmp_path):
    # The trainer writes best.pt when val_acc beats every earlier epoch: epoch 2 here, whose
    # 0.63 later epochs only tie. The synthetic run scores higher, on other data.
    make_run(tmp_path, "r18-cifar", "resnet18", [0.41, 0.63, 0.58, 0.63])
    make_run(tmp_path, "r18-synth", "resnet18", [0.2, 0.97, 0.9], data="synthetic")
    make_run(tmp_path, "vgg-synth", "vgg11", [0.5], data="synthetic")
    notes: list[str] = []
    found = read_runs(tmp_path, "cifar10", notes=notes)
    assert list(found) == ["resnet18"]
    r18 = found["resnet18"]
    assert (r18.top1, r18.epochs, r18.run, r18.data) == (0.63, 2, "r18-cifar", "cifar10")
    assert notes == ["--runs: left out r18-synth (resnet18 on synthetic, not cifar10)",
                     "--runs: left out vgg-synth (vgg11 on synthetic, not cifar10)"]
    assert read_runs(tmp_path, "synthetic")["resnet18"].top1 == 0.97
    with pytest.raises(ValueError, match=r"several data sets \(cifar10, synthetic\)"):
        read_runs(tmp_path)  # the comparison states no data, and the runs disagree


def test_cli_compare_runs_data(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "r18-cifar", "resnet18", [0.41, 0.63, 0.58])
    make_run(runs, "r18-synth", "resnet18", [0.97], data="synthetic")
    out = tmp_path / "out"
    argv = ["compare", "resnet18", "--input", "3x32x32", "--batch-sizes", "1", "--repeats", "1",
            "--min-time", "0", "--no-train", "--quiet", "--runs", str(runs), "--out", str(out)]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert "several data sets (cifar10, synthetic)" in err and "\n" not in err
    assert not out.exists()
    assert main([*argv, "--runs-data", "cifar10"]) == 0
    err = capsys.readouterr().err.strip()
    assert err == "--runs: left out r18-synth (resnet18 on synthetic, not cifar10)"
    measured = json.loads((out / "results.json").read_text())["measured_accuracy"]
    assert measured == {"resnet18": {"model": "resnet18", "top1": 0.63, "data": "cifar10",
                                     "run": "r18-cifar", "epochs": 2}}


def test_linear_fit():
    fit = linear_fit([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0])
    assert fit.slope == pytest.approx(2.0) and fit.intercept == pytest.approx(1.0)
    assert fit.r2 == pytest.approx(1.0)
    noisy = linear_fit([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert noisy.r2 == pytest.approx(0.25)


def test_leave_one_out_r2_on_a_hand_made_set():
    # On the line y = 2x + 1 but for one outlier: leaving it out gives a perfect line.
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 5.0, 12.0, 9.0, 11.0]
    loo = leave_one_out_r2(x, y)
    assert loo[2] == pytest.approx(1.0) and max(loo[:2] + loo[3:]) < 0.9
    assert loo[0] == pytest.approx(linear_fit(x[1:], y[1:]).r2)
    # Four noisy small points and one large one on their trend: the large one makes the line.
    # Without it, by hand: sxy = 3, sxx = syy = 5, r² = 9 / 25.
    x, y = [1.0, 2.0, 3.0, 4.0, 10.0], [2.0, 1.0, 4.0, 3.0, 10.0]
    assert linear_fit(x, y).r2 > 0.9 and leave_one_out_r2(x, y)[4] == pytest.approx(0.36)
    assert all(math.isnan(v) for v in leave_one_out_r2(x[:3], y[:3]))


def test_compare_shows_the_leave_one_out_r2_beside_the_r2(report_dir, monkeypatch):
    _, comparison, _ = report_dir
    rows = [{"model": m, "batch_size": 1, "macs_per_image": g * 1e9, "latency_per_image_ms": t,
             "train_step_ms_median": None, "deployed_latency_per_image_ms": None}
            for m, g, t in zip("abcd", [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0], strict=True)]
    rows.append({**rows[0], "model": "big", "macs_per_image": 10e9,
                 "latency_per_image_ms": 10.0})
    monkeypatch.setattr(type(comparison), "rows", lambda self: rows)
    hand = dataclasses.replace(comparison, batch_sizes=(1,))
    assert hand.leave_one_out() == {1: (pytest.approx(0.36), "big")}
    r2 = linear_fit([1, 2, 3, 4, 10], [2, 1, 4, 3, 10]).r2
    assert fit_line(hand) == (f"batch 1: r² = {r2:.3f} (leave-one-out: lowest 0.360, "
                              f"without big)")
    assert "train step (ms)" not in headers(hand)  # no row has one


def test_train_step_column_is_there_only_when_steps_were_timed(report_dir):
    _, comparison, _ = report_dir
    assert "train step (ms)" in headers(comparison)  # QUICK times training steps
    assert "(no leave-one-out r²: fewer than 4 models)" in (report_dir[0] / "report.md").read_text()


def test_cli_compare_backend_adds_its_column(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "resnet18", "resnet20", "--input", "3x32x32", "--batch-sizes", "1,2",
                 "--repeats", "1", "--min-time", "0", "--no-train", "--quiet",
                 "--backend", "fused", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    head = next(line for line in text.splitlines() if line.startswith("model"))
    assert "fused ms/image" in head and "train step (ms)" not in head
    assert head.index("ms/image (median)") < head.index("fused ms/image")
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and all(r["deployed_backend"] == "fused" for r in rows)
    assert all(float(r["deployed_latency_per_image_ms"]) > 0 for r in rows)
    assert "| ms/image (median) | fused ms/image |" in (out / "report.md").read_text()
