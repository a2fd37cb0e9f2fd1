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
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from cnnzoo.fileio import atomic_write_text, current_umask
from cnnzoo.profile.html import render_html
from cnnzoo.profile.markdown import render_markdown
from cnnzoo.profile.plots import make_plots
from cnnzoo.profile.profiler import (
    check_batch_sizes,
    check_device,
    check_input_shape,
    environment,
    run_profile,
)
from cnnzoo.profile.report import (
    Comparison,
    LinearFit,
    MeasuredAccuracy,
    finite,
    linear_fit,
    rows_to_csv,
)
from cnnzoo.profile.timing import TimingOptions

# The comparison's data classes live in report.py, below the writers; they are imported
# from here as before.
__all__ = ["COMPARE_TIMING", "DEFAULT_BATCH_SIZES", "DEFAULT_MODELS", "Comparison",
           "LinearFit", "MeasuredAccuracy", "check_output_dir", "compare", "linear_fit",
           "read_runs", "write_comparison"]

DEFAULT_MODELS = (
    "alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "densenet121", "se_resnet50",
    "efficientnet_b0",
)
DEFAULT_BATCH_SIZES = (1, 4, 16)
# Enough for a stable median within the 5-minute budget on 2 cores (docs/profile.md).
COMPARE_TIMING = TimingOptions(warmup=1, repeats=3, max_repeats=20, min_time_s=0.5,
                               time_train=False)


def compare(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    image_size: tuple[int, int, int] = (3, 224, 224),
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    device: str | torch.device = "cpu",
    runs_dir: str | os.PathLike | None = None,
    runs_data: str | None = None,
    notes: list[str] | None = None,
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
        runs_dir: a folder of training runs (`cnnzoo train` output) for measured accuracy:
            each run's selected (best-validation) checkpoint (`read_runs`).
        runs_data: the data set those accuracies are measured on; runs on other data are
            left out. None: the one data set the runs share (several are an error).
        notes: when given, gets one line per run left out.
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
    measured = read_runs(runs_dir, runs_data, notes=notes) if runs_dir is not None else {}
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


def read_runs(runs_dir: str | os.PathLike, data: str | None = None, *,
              notes: list[str] | None = None) -> dict[str, MeasuredAccuracy]:
    """Validation top-1 of each model's selected checkpoint, from `<runs_dir>/*/config.json`
    and `metrics.jsonl`, counting only runs on one data set.

    A run directory written by `cnnzoo train` holds `config.json` (with `model` and `data`)
    and `metrics.jsonl` (one row per epoch, from the first, `val_acc` as a fraction). A run's
    accuracy is that of the checkpoint it selected, best.pt: the first epoch whose `val_acc`
    beat every earlier one (the trainer's rule), and `epochs` is that epoch, the training the
    checkpoint had. Where several runs train the same model, the best one is kept. Runs
    without validation are skipped.

    Args:
        runs_dir: the folder of run directories.
        data: the data set the accuracies must be measured on, as `cnnzoo train --data`
            names it (`config.json`'s `data`). None: the one data set the runs share.
        notes: when given, gets one line per run left out because it is on other data.

    Raises:
        FileNotFoundError: `runs_dir` is not a directory.
        ValueError: `data` is None and the runs with validation are on several data sets.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--runs: {root} is not a directory")
    found = [f for f in map(_selected_checkpoint, sorted(root.glob("*/config.json"))) if f]
    if data is None:
        datasets = sorted({f.data for f in found})
        if len(datasets) > 1:
            raise ValueError(f"--runs: runs on several data sets ({', '.join(datasets)}); "
                             "state the one to compare with --runs-data")
        data = datasets[0] if datasets else ""
    best: dict[str, MeasuredAccuracy] = {}
    for run in found:
        if not _same_data(run.data, data):
            if notes is not None:
                notes.append(f"--runs: left out {run.run} ({run.model} on {run.data}, "
                             f"not {data})")
            continue
        if run.model not in best or run.top1 > best[run.model].top1:
            best[run.model] = run
    return best


def _selected_checkpoint(config_path: Path) -> MeasuredAccuracy | None:
    """The row of the epoch the trainer wrote best.pt at, or None (unreadable, no validation)."""
    run = config_path.parent
    try:
        config = json.loads(config_path.read_text())
        lines = (run / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError):
        return None
    model = config.get("model")
    best, epoch = None, 0
    for i, row in enumerate(rows, 1):
        acc = row.get("val_acc")
        if acc is not None and (best is None or acc > best):  # as train.loop.fit: strictly
            best, epoch = acc, i
    if best is None or not model:
        return None
    return MeasuredAccuracy(model, best, str(config.get("data", "?")), run.name, epoch)


def _same_data(a: str, b: str) -> bool:
    """Whether two `--data` values name one data set: equal, or paths to one folder/file."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_output_dir(out_dir: str | os.PathLike) -> None:
    """Fail now, with one line, if `out_dir` cannot be created or written."""
    _staging_dir(Path(out_dir)).rmdir()


def write_comparison(comparison: Comparison, out_dir: str | os.PathLike) -> Path:
    """Write results.csv/json, report.md, report.html and plots/*.png into `out_dir`.

    Everything is written to a fresh folder beside `out_dir` and renamed into place at the
    end, so `out_dir` holds either the previous complete report or the new one.
    """
    out = Path(out_dir)
    staging = _staging_dir(out)
    try:
        data = comparison.to_dict()
        atomic_write_text(staging / "results.json", json.dumps(finite(data), indent=2) + "\n")
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
