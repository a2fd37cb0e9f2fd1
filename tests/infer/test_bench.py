"""`cnnzoo bench` and `cnnzoo.infer.bench`: the figures it reports, its files, and the noise
flag raised when another process shares the cores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.cli import bench as cli_bench
from cnnzoo.cli import main
from cnnzoo.cpuinfo import native_bf16
from cnnzoo.infer import backends as backends_mod
from cnnzoo.infer import bench as bench_mod
from cnnzoo.profile.peak import measure_peak


def _small(**kw):
    args = dict(rounds=2, min_time_s=0.01, threads=1, peak_size="small")
    args.update(kw)
    return bench_mod.bench(["resnet20"], ["eager", "fused"], [1, 4], (3, 32, 32), **args)


def test_every_entry_gets_its_figures_in_interleaved_rounds():
    result = _small()
    assert [(r.backend, r.batch) for r in result.rows] == [
        ("eager", 1), ("eager", 4), ("fused", 1), ("fused", 4)]
    peak = result.peak
    assert peak.gflops == max(peak.matmul_gflops, peak.conv_gflops) > 0
    for r in result.rows:
        assert len(r.round_medians_ms) == 2 and r.calls >= 6
        assert 0 < r.median_ms <= r.p90_ms
        assert r.images_per_s == pytest.approx(r.batch / (r.median_ms / 1e3))
        # resnet20 by hand: 40,550,400 conv MACs per 3x32x32 image + 64 x 1000 classifier.
        assert r.gflops == pytest.approx(2 * 40_614_400 * r.batch / (r.median_ms / 1e3) / 1e9,
                                         rel=1e-3)
        assert r.pct_of_peak == pytest.approx(100 * r.gflops / peak.gflops)
        assert r.max_abs_diff <= r.tolerance


def test_peak_is_the_best_of_matmul_and_conv():
    peak = measure_peak("small", repeats=2, min_time_s=0.0)
    assert peak.gflops == max(peak.matmul_gflops, peak.conv_gflops)
    assert "fp32 peak" in peak.line() and peak.cpu in peak.line()


def test_an_entry_timed_beside_a_busy_loop_is_flagged(monkeypatch):
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        result = _small(min_time_s=0.2)
    finally:
        for p in busy:
            p.kill()
            p.wait(timeout=10)
    assert all(r.other_load is not None and r.other_load > bench_mod.NOISY_LOAD
               for r in result.rows)
    assert all(any("other processes" in n for n in r.noisy) for r in result.rows)


def test_cli_prints_the_table_and_writes_its_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_mod, "measure_peak", lambda size: measure_peak("small"))
    out = tmp_path / "bench"
    assert main(["bench", "resnet20", "--backends", "eager,fused", "--batch-sizes", "1,2",
                 "--input", "3x32x32", "--rounds", "1", "--min-time", "0.01", "--threads", "1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("device cpu")
    assert "fp32 peak" in text and "% peak" in text
    data = json.loads((out / "bench.json").read_text())
    assert len(data["rows"]) == 4 and data["peak"]["gflops"] > 0
    assert (out / "bench.csv").read_text().count("\n") == 5
    assert (out / "throughput.png").stat().st_size > 1000


def test_cli_rejects_an_unknown_backend(capsys):
    assert main(["bench", "resnet20", "--backends", "eager,tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "--backends: unknown tensorrt" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not native_bf16()[0], reason="bf16 needs native bf16 units")
def test_bf16_entries_carry_their_agreement_labelled_random_data():
    result = bench_mod.bench(["resnet20"], ["bf16"], [2], (3, 32, 32), rounds=1,
                             min_time_s=0.01, threads=1, peak_size="small")
    (row,) = result.rows
    assert row.agreement_on == "32 calibration images" and 0 < row.max_rel_diff <= 5e-2
    assert 0 <= row.top1_agreement <= 1
    assert "on random data (32 calibration images)" in result.table()


def test_cli_leaves_bf16_out_in_one_line_where_the_cpu_lacks_it(capsys, monkeypatch):
    monkeypatch.setattr(cli_bench, "native_bf16", lambda: (False, "no native bf16 here"))
    assert main(["bench", "resnet20", "--backends", "bf16"]) == 2
    assert capsys.readouterr().out.strip() == "cnnzoo bench: bf16 left out: no native bf16 here"


def _image_folder(root, classes=2, per_class=16, size=12):
    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{k}" / f"{i:02d}.png")
    return root


def test_calibration_data_is_an_equal_share_of_each_class_resized_and_normalised(tmp_path):
    root = _image_folder(tmp_path / "folder", size=32)
    cal = bench_mod.calibration_data(str(root), (3, 32, 32))
    assert cal.name == str(root) and len(cal.batches) == bench_mod.CALIBRATION_BATCHES
    x = torch.cat(cal.batches)
    # All 32 of the 32 images, 16 per class, normalised with the folder's own statistics.
    assert x.shape == (32, 3, 32, 32)
    assert abs(float(x.mean())) < 0.05 and 0.95 < float(x.std()) < 1.05
    # Smaller images are resized to the input.
    small = bench_mod.calibration_data(str(_image_folder(tmp_path / "s12", size=12)),
                                       (3, 32, 32))
    assert torch.cat(small.batches).shape == (32, 3, 32, 32)


def test_calibration_data_of_the_wrong_shape_is_one_line(tmp_path):
    root = _image_folder(tmp_path / "folder")
    with pytest.raises(ValueError, match=r"^--calibration .*: 3-channel images, the input has "
                                         r"1 channels$"):
        bench_mod.calibration_data(str(root), (1, 32, 32))
    small = _image_folder(tmp_path / "small", per_class=4)
    with pytest.raises(ValueError, match=r"8 training images, at least 32 expected"):
        bench_mod.calibration_data(str(small), (3, 32, 32))


def test_cli_calibrates_int8_on_real_images_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_mod, "measure_peak", lambda size: measure_peak("small"))
    # Random weights give near-equal logits, whose argmax int8 rounding may flip: the bar is
    # about trained models (tests/infer/test_deploy.py), not this label.
    monkeypatch.setattr(backends_mod, "INT8_AGREEMENT", 0.0)
    root = _image_folder(tmp_path / "folder")
    out = tmp_path / "bench"
    assert main(["bench", "resnet20", "--backends", "int8", "--batch-sizes", "2",
                 "--input", "3x32x32", "--rounds", "1", "--min-time", "0.01", "--threads", "1",
                 "--calibration", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"calibrated and checked on 32 training images of {root}" in text
    assert f"on real images of {root} (32 calibration images)" in text
    assert "random data" not in text
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    assert row["calibration"] == str(root) and 0 <= row["top1_agreement"] <= 1
