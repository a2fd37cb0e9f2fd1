"""A training run's state: what `setup` builds, each epoch reads and updates, last.pt keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.data.augment import Augment
from cnnzoo.data.loader import BatchLoader
from cnnzoo.data.stream import StreamLoader
from cnnzoo.train.autosave import Timer
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.device import Execution
from cnnzoo.train.distributed import DistInfo
from cnnzoo.train.ema import ModelEma


@dataclass
class Run:
    """Everything one training run holds.

    Attributes:
        cfg, info, execution: the options, this process's rank, device and precision.
        model: the raw module: what is saved, averaged (EMA) and clipped.
        net: what runs forward: `model` wrapped for DDP and/or compiled.
        criterion: (output, y) -> (main logits, loss), see `loss.make_criterion`.
        loader, val_loader: this rank's training batches and validation slice (or None).
        crops, whole: the augmentation of the first `crop_epochs` epochs (crop_size crops)
            and of the rest (whole images).
        optimizer, scheduler, scaler, ema: the optimisation state (ema: None without it).
        frozen: the forward steps `--freeze` froze (kept in eval mode while training).
        record: the checkpoint keys fixed for the run (model, classes, preprocess, config).
        run_dir: the run directory, None when nothing is written; writes: this rank writes.
        say: this rank prints progress.
        timer: when to write last.pt in the middle of an epoch.
        start_epoch, global_step, best, rows: progress so far (restored on resume).
        start_step: steps of epoch `start_epoch` already done (resumed mid-epoch; the loop
            sets it back to 0 once it continues there); partial: this rank's state of that
            epoch (generators, metric sums, time), or None.
        checkpointed: (completed epochs, steps) of the last.pt on disk, None before one.
    """

    cfg: TrainConfig
    info: DistInfo
    execution: Execution
    model: nn.Module
    net: nn.Module
    criterion: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    loader: BatchLoader | StreamLoader
    val_loader: BatchLoader | StreamLoader | None
    crops: Augment
    whole: Augment
    crop_epochs: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    frozen: list[str]
    record: dict[str, Any]
    run_dir: Path | None
    writes: bool
    say: bool
    timer: Timer
    start_epoch: int = 0
    global_step: int = 0
    best: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    start_step: int = 0
    partial: dict[str, Any] | None = None
    checkpointed: tuple[int, int] | None = None

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation measures: the EMA when the run keeps one."""
        return self.ema.module if self.ema is not None else self.model
