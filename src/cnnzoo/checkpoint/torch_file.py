"""A cnnzoo checkpoint file: written atomically, read with `torch.load(weights_only=True)`.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
without unpickling any code. Keys (`FORMAT_VERSION` 1):

    format          "cnnzoo-checkpoint"
    format_version  1
    kind            "last" (full training state) or "best" (weights, no optimizer state)
    model_name      registered model name, or None for a module passed in directly
    model_options   builder keyword options, e.g. {"drop_path_rate": 0.2}
    num_classes, in_chans
    classes         class names, index = label
    preprocess      {"mean": [...], "std": [...] (per channel, of pixel/255),
                     "image_size": [H, W] the model was trained at, "resize": bool
                     (the images were resized from the data's size to image_size)};
                    the model's input is (resize(uint8 pixels, image_size) / 255 - mean) / std,
                    i.e. `cnnzoo.data.preprocess(images, mean, std, image_size=...)`
    model           state dict of the trained weights
    ema             state dict of the weight average (same keys as model), or None
    ema_updates     number of EMA updates so far (its warm-up depends on it)
    eval_weights    "ema" or "model": the weights the validation accuracy was measured on
    epoch           completed epochs
    step            steps done in the epoch after those (0 at an epoch end; > 0 in a
                    last.pt written mid-epoch; absent in files of cnnzoo before it: 0)
    global_step     optimizer steps taken
    best_val_acc    best validation top-1 so far (fraction), or None without validation
    metrics         the per-epoch metric rows so far (list of dicts)
    config          the TrainConfig as a dict
    versions        {"cnnzoo": ..., "torch": ...}
  only in "last":
    optimizer, scheduler, scaler (GradScaler state or None),
    rng             {"torch": ByteTensor, "cuda": [ByteTensor] or None,
                     "numpy": {...}, "python": [...]} (rank 0's)
    ranks           per rank, in rank order, the state that differs between ranks
                    (`cnnzoo.train.checkpoint.rank_state`), or None. When step > 0: its
                    state of the unfinished epoch, {"rng": like "rng", "sums": {"loss":
                    float32, "correct": int64 (0-dim), "seen": images}, "train_time_s":
                    seconds}; under DDP with EMA also "ema_buffers" (the EMA's BatchNorm
                    statistics, which follow the rank's own batches)

`cnnzoo.train.checkpoint` fills the training state ("last" keys) from a run and restores a
run from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo._version import __version__
from cnnzoo.fileio import atomic_write
from cnnzoo.models.registry import create_model

FORMAT = "cnnzoo-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable cnnzoo checkpoint; the message names the file."""


def versions() -> dict[str, str]:
    """The checkpoint's (and every export's) "versions" entry."""
    return {"cnnzoo": __version__, "torch": str(torch.__version__)}


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any], *,
                    before_replace: Callable[[], None] | None = None) -> None:
    """Write `checkpoint` (a dict with this module's keys) atomically to `path`.

    `before_replace` runs once the temp file is complete, before it replaces `path` (the
    crash tests kill the process there).
    """
    checkpoint = {"format": FORMAT, "format_version": FORMAT_VERSION, **checkpoint}
    atomic_write(path, lambda f: torch.save(checkpoint, f), before_replace=before_replace)


def load_checkpoint(path: str | os.PathLike, *,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a cnnzoo checkpoint with `weights_only=True`.

    Raises:
        CheckpointError: missing, truncated, corrupt or foreign file (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged zip or pickle
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, corrupt or not saved by torch): "
            f"{_reason(err)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cnnzoo checkpoint (expected a dict with "
                              f"format={FORMAT!r}, as `cnnzoo train` writes)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')}, "
                              f"this cnnzoo reads version {FORMAT_VERSION}")
    return ckpt


def _reason(err: Exception) -> str:
    """The informative line of torch.load's (often multi-paragraph) message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = next((x.split("WeightsUnpickler error:", 1)[1] for x in lines
                 if "WeightsUnpickler error:" in x),  # e.g. "Unsupported global: GLOBAL x.Y"
                lines[0] if lines else "")
    return f"{type(err).__name__}: {line.strip().split('. ')[0]}"[:200]


def model_from_checkpoint(ckpt: dict[str, Any], *, weights: str = "auto") -> nn.Module:
    """Rebuild the registered model a checkpoint records and load its weights (eval mode).

    Args:
        ckpt: from `load_checkpoint`.
        weights: "model", "ema", or "auto" (the weights validation used: `eval_weights`).
    """
    if ckpt.get("model_name") is None:
        raise CheckpointError("checkpoint holds a model that is not in the registry "
                              "(trained from a module passed in directly); build it yourself "
                              "and load ckpt['model']")
    if weights == "auto":
        weights = ckpt.get("eval_weights", "model")
    if weights not in ("model", "ema") or ckpt.get(weights) is None:
        raise CheckpointError(f"checkpoint has no {weights!r} weights")
    model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"],
                         in_chans=ckpt["in_chans"], **ckpt["model_options"])
    model.load_state_dict(ckpt[weights])
    return model.eval()
