"""The comparison of Canziani, Paszke and Culurciello (arXiv:1605.07678), on your hardware.

"An Analysis of Deep Neural Network Models for Practical Applications" (2016) compares the
landmark ImageNet networks by accuracy, parameters, operations, inference time and memory,
and finds that the number of operations is a reliable estimate of inference time and that
accuracy and inference time are in a hyperbolic relationship. `compare` measures the same
quantities for any set of zoo models and batch sizes on this machine; `write_comparison`
writes the table, the plots and the reports. The accuracy axis is labelled by source:
published ImageNet top-1 (`published.py`), or top-1 measured by the user's own training runs.

With the defaults (8 models, 224x224, batch sizes 1, 4, 16) a run takes a few minutes on
2 CPU cores: each (model, batch size) gets one warm-up inference run that also measures
memory and at least 3 timed runs (more for fast models, up to half a second of timed work),
and one training step that measures the training peak memory. Timing training steps too
(`time_train`, `cnnzoo compare --time-train`) roughly triples the run: a step costs about
three forward passes and VGG-16 alone is half of the default set's operations.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnzoo.fileio import atomic_write_text, current_umask
from cnnzoo.profile.profiler import (
    check_batch_sizes,
    check_device,
    check_input_shape,
    environment,
    run_profile,
)
from cnnzoo.profile.published import published_top1
from cnnzoo.profile.report import ProfileReport, rows_to_csv
from cnnzoo.profile.timing import TimingOptions

DEFAULT_MODELS = (
    "alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "densenet121", "se_resnet50",
    "efficientnet_b0",
)
DEFAULT_BATCH_SIZES = (1, 4, 16)
# Enough for a stable median within the 5-minute budget on 2 cores (docs/profile.md).
COMPARE_TIMING = TimingOptions(warmup=1, repeats=3, max_repeats=20, min_time_s=0.5,
                               time_train=False)


@dataclass(frozen=True)
class MeasuredAccuracy:
    """Best validation top-1 of one of the user's training runs (fraction in [0, 1])."""

    model: str
    top1: float
    data: str
    run: str
    epochs: int


@dataclass(frozen=True)
class LinearFit:
    """Least-squares line y = slope * x + intercept and its coefficient of determination."""

    slope: float
    intercept: float
    r2: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """Profiles of several models at one image size, timed at several batch sizes.

    Attributes:
        reports: one `ProfileReport` per model (counted at batch 1, timed per batch size).
        batch_sizes: the timed batch sizes.
        measured: measured accuracy per model from `--runs` (empty without runs).
        env: hardware and software of the measurement.
        wall_time_s: seconds the whole comparison took.
    """

    reports: tuple[ProfileReport, ...]
    batch_sizes: tuple[int, ...]
    measured: dict[str, MeasuredAccuracy] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per model x batch size (the results.csv table)."""
        out = []
        for rep in self.reports:
            pub = published_top1(rep.model)
            meas = self.measured.get(rep.model)
            for t in rep.timings:
                out.append({
                    "model": rep.model,
                    "family": rep.family,
                    "image_shape": "x".join(map(str, rep.input_shape[1:])),
                    "batch_size": t.batch_size,
                    "params": rep.params,
                    "param_bytes": rep.param_bytes,
                    "macs_per_image": rep.macs_per_image,
                    "flops_per_image": 2 * rep.macs_per_image,
                    "activation_bytes_per_image": rep.activation_bytes // rep.input_shape[0],
                    "latency_ms_median": t.latency_ms_median,
                    "latency_ms_p90": t.latency_ms_p90,
                    "latency_per_image_ms": t.latency_per_image_ms,
                    "throughput_images_per_s": t.throughput_images_per_s,
                    "train_step_ms_median": t.train_step_ms_median,
                    "train_step_ms_p90": t.train_step_ms_p90,
                    "peak_inference_bytes": t.peak_inference_bytes,
                    "peak_train_bytes": t.peak_train_bytes,
                    "inference_repeats": t.inference_repeats,
                    "train_repeats": t.train_repeats,
                    "top1_published_percent": pub.top1_percent if pub else None,
                    "top1_published_source": pub.source if pub else None,
                    "top1_measured_percent": 100 * meas.top1 if meas else None,
                    "top1_measured_data": meas.data if meas else None,
                    "device": self.env.get("device"),
                    "device_name": self.env.get("device_name"),
                    "threads": self.env.get("threads"),
                    "torch_version": self.env.get("torch_version"),
                    "date": self.env.get("date"),
                })
        return out

    def fits(self) -> dict[int, LinearFit]:
        """Per batch size: latency per image (ms) against GMACs per image, least squares."""
        fits = {}
        for b in self.batch_sizes:
            pts = [(r["macs_per_image"] / 1e9, r["latency_per_image_ms"])
                   for r in self.rows() if r["batch_size"] == b]
            if len(pts) >= 3:
                fits[b] = linear_fit([p[0] for p in pts], [p[1] for p in pts])
        return fits

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "batch_sizes": list(self.batch_sizes),
            "wall_time_s": self.wall_time_s,
            "rows": self.rows(),
            "macs_vs_latency_fits": {str(b): f.__dict__ for b, f in self.fits().items()},
            "measured_accuracy": {k: v.__dict__ for k, v in self.measured.items()},
            "reports": [_report_without_layers(r) for r in self.reports],
        }


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Ordinary least squares of y on x, with r^2 = 1 - SS_res / SS_tot."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_res = sum((b - (slope * a + intercept)) ** 2 for a, b in zip(x, y, strict=True))
    ss_tot = sum((b - my) ** 2 for b in y)
    r2 = 1 - ss_res / ss_tot if ss_tot else float("nan")
    return LinearFit(slope, intercept, r2, n)


def compare(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    image_size: tuple[int, int, int] = (3, 224, 224),
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    device: str | torch.device = "cpu",
    runs_dir: str | os.PathLike | None = None,
    options: TimingOptions = COMPARE_TIMING,
    progress: Callable[[int, int, str], None] | None = None,
) -> Comparison:
    """Count and time each model at each batch size (see module doc).

    Every model is counted on the meta device first, so an unknown name or an image size a
    model cannot take fails in a second, before any timing starts.

    Args:
        models: registry names.
        image_size: (C, H, W) of one image.
        batch_sizes: batch sizes to time.
        device: "cpu" or "cuda[:i]".
        runs_dir: a folder of training runs (`cnnzoo train` output) for measured accuracy.
        options: warm-up and repetitions.
        progress: called as `progress(done, total, label)` after each measured step.
    """
    start = time.perf_counter()
    if not models:
        raise ValueError("compare: expected at least one model")
    if len(tuple(image_size)) != 3:
        raise ValueError(f"compare: image size: expected C, H, W, got {tuple(image_size)}")
    shape = check_input_shape((1, *image_size))
    batch_sizes = check_batch_sizes(batch_sizes)
    device = check_device(device)
    measured = read_runs(runs_dir) if runs_dir is not None else {}
    for name in models:  # fail fast: names and shapes before minutes of timing
        run_profile(name, shape, timing=False)
    total = len(models) * len(batch_sizes)
    done = 0
    reports = []
    for name in models:
        def step(batch: int, name: str = name) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total, f"{name} batch {batch}")

        if progress is not None:
            progress(done, total, f"{name} ...")
        reports.append(run_profile(name, shape, timing=True, batch_sizes=batch_sizes,
                                   device=device, options=options, on_batch=step))
    env = environment(device, timing=True, options=options)
    return Comparison(tuple(reports), batch_sizes, measured, env, time.perf_counter() - start)


def read_runs(runs_dir: str | os.PathLike) -> dict[str, MeasuredAccuracy]:
    """Best validation top-1 per model from `<runs_dir>/*/config.json` + `metrics.jsonl`.

    A run directory written by `cnnzoo train` holds `config.json` (with `model` and `data`)
    and `metrics.jsonl` (one row per epoch, `val_acc` as a fraction). Where several runs
    train the same model, the best one is kept. Runs without validation are skipped.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--runs: {root} is not a directory")
    best: dict[str, MeasuredAccuracy] = {}
    for config_path in sorted(root.glob("*/config.json")):
        run = config_path.parent
        try:
            config = json.loads(config_path.read_text())
            lines = (run / "metrics.jsonl").read_text().splitlines()
        except (OSError, json.JSONDecodeError):
            continue
        rows = [json.loads(line) for line in lines if line.strip()]
        accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
        model = config.get("model")
        if not accs or not model:
            continue
        found = MeasuredAccuracy(model, max(accs), str(config.get("data", "?")), run.name,
                                 len(rows))
        if model not in best or found.top1 > best[model].top1:
            best[model] = found
    return best


def check_output_dir(out_dir: str | os.PathLike) -> None:
    """Fail now, with one line, if `out_dir` cannot be created or written."""
    _staging_dir(Path(out_dir)).rmdir()


def write_comparison(comparison: Comparison, out_dir: str | os.PathLike) -> Path:
    """Write results.csv/json, report.md, report.html and plots/*.png into `out_dir`.

    Everything is written to a fresh folder beside `out_dir` and renamed into place at the
    end, so `out_dir` holds either the previous complete report or the new one.
    """
    from cnnzoo.profile.html import render_html
    from cnnzoo.profile.markdown import render_markdown
    from cnnzoo.profile.plots import make_plots

    out = Path(out_dir)
    staging = _staging_dir(out)
    try:
        data = comparison.to_dict()
        atomic_write_text(staging / "results.json", json.dumps(_finite(data), indent=2) + "\n")
        atomic_write_text(staging / "results.csv", rows_to_csv(comparison.rows()))
        plots = make_plots(comparison, staging / "plots")
        atomic_write_text(staging / "report.md", render_markdown(comparison, plots))
        atomic_write_text(staging / "report.html", render_html(comparison, plots, staging))
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _staging_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output {out} exists and is not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial",
                                        dir=out.parent))
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700
        return staging
    except OSError as err:
        raise OSError(f"cannot write the output directory {out}: {err.strerror or err}") from None


def _swap_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)  # rename is atomic on one file system
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _report_without_layers(report: ProfileReport) -> dict[str, Any]:
    d = report.to_dict()
    d.pop("layers")
    return _finite(d)


def _finite(obj):
    """JSON has no NaN: None in its place."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
