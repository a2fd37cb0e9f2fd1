"""What a run leaves behind besides checkpoints: config.json, env.json, metrics.csv/.jsonl,
and the progress bar it shows meanwhile.

The metric files are rewritten whole (atomically) at the end of every epoch from the rows
stored in last.pt, so after a crash they agree with the checkpoint the run resumes from
instead of holding rows of an epoch that will be trained again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from cnnzoo._version import __version__
from cnnzoo.fileio import atomic_write_text, cpu_name
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
