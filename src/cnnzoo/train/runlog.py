"""What a run leaves behind besides checkpoints: config.json, env.json, metrics.csv/.jsonl,
and the progress bar it shows meanwhile.

The metric files are rewritten whole (atomically) at the end of every epoch from the rows
stored in last.pt, so after a crash they agree with the checkpoint the run resumes from
instead of holding rows of an epoch that will be trained again.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from cnnzoo._version import __version__
from cnnzoo.checkpoint import CheckpointError, load_checkpoint
from cnnzoo.fileio import atomic_write_text, cpu_name
from cnnzoo.models import create_model
from cnnzoo.profile.profiler import run_profile
from cnnzoo.train.device import cpu_bf16_units


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temp file, fsync, rename)."""
    atomic_write_text(path, text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_metrics(run_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """metrics.csv and metrics.jsonl, one row per epoch."""
    run_dir = Path(run_dir)
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(run_dir / "metrics.csv", buf.getvalue())


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """HEAD of the git checkout holding `path` (default: this package), '+dirty' when it has
    uncommitted changes; None outside a checkout."""
    where = Path(path or __file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(*, device: torch.device, precision: str, world_size: int) -> dict[str, Any]:
    """The facts a result depends on: software versions, hardware, threads, code version.

    `device`, `precision` (as resolved: "auto" never appears) and `torch_threads` are what
    the run header printed; `cpu_bf16_units` names the CPU's native bf16 units (bf16 on the
    CPU is opt-in, see `device.resolve`)."""
    gpus = []
    if device.type == "cuda":
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "cnnzoo": __version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16_units": cpu_bf16_units(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "device": str(device),
        "precision": precision,
        "world_size": world_size,
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A one-line progress bar on a terminal: step, loss, accuracy, images/s and ETA.

    Drawing needs the running loss, which on a GPU means waiting for it, so the loop asks
    `due()` first and only then computes the numbers; the bar redraws at most every
    `interval_s` seconds. Off (every method a no-op) when disabled or not on a terminal.
    """

    def __init__(self, total_steps: int, prefix: str, *, enabled: bool = True,
                 stream: TextIO | None = None, interval_s: float = 0.25) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total = total_steps
        self.prefix = prefix
        self.interval_s = interval_s
        self.start = time.perf_counter()
        self.last_draw = 0.0

    def due(self, step: int) -> bool:
        """Whether to draw after `step` (1-based) steps."""
        if not self.enabled:
            return False
        return step == self.total or time.perf_counter() - self.last_draw >= self.interval_s

    def draw(self, step: int, *, images: int, loss: float, acc: float) -> None:
        now = time.perf_counter()
        self.last_draw = now
        elapsed = now - self.start
        eta = elapsed / step * (self.total - step) if step else 0.0
        width = 20
        filled = width * step // self.total
        bar = "#" * filled + "." * (width - filled)
        line = (f"{self.prefix} [{bar}] {step}/{self.total} loss {loss:.4f} acc {100 * acc:5.1f}% "
                f"{images / max(elapsed, 1e-9):,.0f} img/s ETA {format_seconds(eta)}")
        self.stream.write("\r" + line + "\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


# ---- reading runs back: accuracy points for the experiments' plots --------------------------


@dataclass(frozen=True)
class AccuracyPoint:
    """One model's accuracy on the user's data, with its cost at the size it was trained at.

    Attributes:
        model: model (or variant) name.
        data: data set the accuracy was measured on.
        accuracy: top-1 as a fraction (mean over seeds for models trained here).
        accuracy_std: sample std over seeds (0 for one seed or a run).
        params: parameters (scalars).
        macs: multiply-accumulates per image at `image_size`.
        image_size: (C, H, W) the model was trained and counted at.
        source: what the accuracy is ("test top-1, trained here", "best val top-1, run").
        origin: where it came from (this experiment, a run directory, a results.json).
        epochs: epochs trained.
    """

    model: str
    data: str
    accuracy: float
    accuracy_std: float
    params: int
    macs: int
    image_size: tuple[int, int, int]
    source: str
    origin: str
    epochs: int


def read_accuracy_points(spec: str) -> tuple[list[AccuracyPoint], list[str]]:
    """Accuracy points from the user's runs, and a note per item that could not be read.

    `spec` is a path or a glob pattern (`**` allowed). Each match may be:
    - a cnnzoo checkpoint (`*.pt`): its `best_val_acc`, model and options, counted at its
      preprocess image size;
    - a run directory (`cnnzoo train --out`): its `best.pt`, else `last.pt`, as above;
    - a `results.json` of an experiment whose `measured` holds `accuracy_points`, a list of
      {model, accuracy (fraction), params, macs (per image), data?, image_size?, source?}
      (the efficiency experiment writes one);
    - a folder of any of these, one level down.

    Raises:
        ValueError: nothing matches `spec`, or no match holds an accuracy (the notes say why).
    """
    matches = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else (
        [spec] if Path(spec).exists() else [])
    if not matches:
        raise ValueError(f"runs: no run directory, checkpoint or results.json matches {spec!r}")
    items: list[Path] = []
    for m in map(Path, matches):
        if m.is_dir() and not (m / "config.json").exists() and not (m / "results.json").exists():
            items += sorted(p for p in m.iterdir()
                            if (p / "config.json").exists() or p.suffix == ".pt"
                            or (p / "results.json").exists() or p.name == "results.json")
        else:
            items.append(m / "results.json" if m.is_dir() and not (m / "config.json").exists()
                         else m)
    points: list[AccuracyPoint] = []
    notes: list[str] = []
    for item in items:
        try:
            if item.name.endswith(".json"):
                points += _points_from_results(item)
            else:
                points.append(_point_from_checkpoint(item))
        except (OSError, ValueError, KeyError, TypeError, CheckpointError) as err:
            notes.append(f"{item}: {err}")
    if not points:
        raise ValueError(f"runs: no accuracy found in {spec!r}: " + "; ".join(notes or ["empty"]))
    return points, notes


def _point_from_checkpoint(path: Path) -> AccuracyPoint:
    if path.is_dir():
        found = [path / f for f in ("best.pt", "last.pt") if (path / f).exists()]
        if not found:
            raise ValueError("no best.pt or last.pt (its trained size and options are needed "
                             "to count its MACs)")
        path = found[0]
    ckpt = load_checkpoint(path)
    if ckpt.get("best_val_acc") is None:
        raise ValueError("no validation accuracy (trained with val_size=0)")
    if ckpt.get("model_name") is None:
        raise ValueError("the model is not a registered one; its MACs cannot be counted")
    model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"],
                         in_chans=ckpt["in_chans"], **ckpt["model_options"])
    h, w = ckpt["preprocess"]["image_size"]
    size = (int(ckpt["in_chans"]), int(h), int(w))
    counted = run_profile(model, (1, *size), timing=False)  # meta-device count
    options = "".join(f",{k}={v}" for k, v in sorted(ckpt["model_options"].items()))
    return AccuracyPoint(ckpt["model_name"] + (f"({options[1:]})" if options else ""),
                         str(ckpt["config"].get("data", "?")), float(ckpt["best_val_acc"]),
                         0.0, counted.params, counted.macs_per_image, size,
                         "best val top-1, your run",
                         str(path.parent if path.name in ("best.pt", "last.pt") else path),
                         int(ckpt.get("epoch", 0)))


def _points_from_results(path: Path) -> list[AccuracyPoint]:
    results = json.loads(path.read_text())
    rows = results.get("measured", {}).get("accuracy_points")
    if not rows:
        raise ValueError("results.json has no measured.accuracy_points")
    origin = f"{results.get('experiment', '?')} results ({path})"
    return [AccuracyPoint(
        str(r["model"]), str(r.get("data", results.get("data", "?"))), float(r["accuracy"]),
        float(r.get("accuracy_std", 0.0)), int(r["params"]), int(r["macs"]),
        tuple(r.get("image_size", (0, 0, 0))), str(r.get("source", "top-1, experiment")),
        origin, int(r.get("epochs", 0))) for r in rows]
