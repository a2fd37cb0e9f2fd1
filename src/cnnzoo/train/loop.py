"""The training loop: `train(model, data, **options)`.

One epoch: set the loader's epoch (its order and augmentation are a function of
(seed, epoch, rank)) and reseed the global generators from the same key (dropout, stochastic
depth), then for each batch: forward under autocast, loss (+ auxiliary losses), backward,
optional clipping, optimizer step, per-step lr schedule, EMA. Loss and accuracy accumulate on
the device; the host reads them only to draw the progress bar, to check for a non-finite
loss every `CHECK_EVERY` steps and at the end of the epoch. After a step, when
`checkpoint_every` seconds have passed since the last write (`autosave.Timer`), rank 0 writes
last.pt with the step, every rank's generators and metric sums. At the end of the epoch,
validation, and rank 0 writes best.pt (when validation accuracy improved), last.pt and the
metric files.

Because everything random is re-derived from (seed, epoch, rank) at each epoch start, a
mid-epoch last.pt holds the generators as they stood at its step, and last.pt holds the rest
of the state, a run killed at any point and resumed with `resume=True` continues from the
step of its last.pt and ends with exactly the weights of an uninterrupted run (same machine,
same thread count, CPU; see tests/train/test_resume.py).

`setup` (setup.py) builds the `Run`; `fit` is the epoch loop; `checkpoint.save` and
`checkpoint.restore` (train/checkpoint.py) write and read the training state.

Fine-tuning (`init`, `freeze`, `backbone_lr_scale`; see `transfer.py`): the model is built for
the data's classes and filled from the weights file before training (`transfer.prepare`),
frozen stages get no gradients and are put back in eval mode after every `train()`, and the
checkpoints record the file ("init"). A resumed run reads the file again (for the builder
options it implies), then the checkpoint's weights replace it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.data.dataset import ImageDataset
from cnnzoo.data.loader import BatchLoader
from cnnzoo.data.stream import StreamLoader
from cnnzoo.train import checkpoint, distributed, faults, runlog, transfer
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.device import Execution, resolve
from cnnzoo.train.run import Run
from cnnzoo.train.setup import setup

CHECK_EVERY = 50  # steps between host reads of the non-finite-loss flag


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names where and the checkpoint kept."""


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained network (the raw module, not DDP/compiled), in eval mode.
        ema_model: the weight average, or None.
        metrics: one dict per epoch, as in metrics.jsonl.
        best_val_acc: best validation top-1 (fraction), None without validation.
        run_dir: the run directory, None when nothing was written.
    """

    model: nn.Module
    ema_model: nn.Module | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    best_val_acc: float | None = None
    run_dir: Path | None = None


def train(model: str | nn.Module | None = None, data: str | ImageDataset | None = None, *,
          config: TrainConfig | None = None, val_data: ImageDataset | None = None,
          **options: Any) -> TrainResult:
    """Train a zoo model (or any classifier module) on a data set.

    Args:
        model: registered model name, or an nn.Module taking (N, C, H, W) and returning logits.
        data: data set name or path (see `cnnzoo.data.load_dataset`), or an ImageDataset.
        config: a full TrainConfig; `options` override its fields.
        val_data: validation set; default: `config.val_size` held out of `data`.
        **options: TrainConfig fields, e.g. epochs=10, lr=0.05, out="runs/x".

    Returns:
        TrainResult.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (last.pt keeps the last good epoch).
        ValueError: bad options, incompatible resume, unusable data.
    """
    cfg = _config(model, data, config, options)
    info = distributed.detect()
    execution = resolve(cfg.device, cfg.precision, local_rank=info.local_rank)
    created = distributed.init(info, execution.device)
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    finished = False
    try:
        run = setup(cfg, info, execution, module=model if isinstance(model, nn.Module) else None,
                    dataset=data if isinstance(data, ImageDataset) else None, val_data=val_data)
        result = fit(run)
        finished = True
        return result
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        distributed.shutdown(created, finished=finished)


def _config(model: str | nn.Module | None, data: str | ImageDataset | None,
            config: TrainConfig | None, options: dict[str, Any]) -> TrainConfig:
    """`config` with `options` and what `model` and `data` name."""
    values = config.to_dict() if config is not None else {}
    values.update(options)
    if isinstance(model, str):
        values["model"] = model
    elif isinstance(model, nn.Module):
        values["model"] = f"<{type(model).__name__}>"
    if isinstance(data, str):
        values["data"] = data
    elif isinstance(data, ImageDataset):
        values["data"] = data.name
    cfg = TrainConfig.from_dict(values)
    if model is None and not cfg.model:
        raise ValueError("model: give a registered model name or an nn.Module")
    return cfg


def fit(run: Run) -> TrainResult:
    """The epoch loop: train, validate, checkpoint, log; from `run.start_epoch` on."""
    cfg = run.cfg
    for epoch in range(run.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        metrics = train_one_epoch(run, epoch)
        val_loss = val_acc = None
        if run.val_loader is not None:
            val_loss, val_acc = evaluate(run.eval_model, run.val_loader, run.execution)
        improved = val_acc is not None and (run.best is None or val_acc > run.best)
        if improved:
            run.best = val_acc
        row = {"epoch": epoch + 1, "global_step": run.global_step,
               "lr": run.optimizer.param_groups[0]["lr"],
               "train_loss": metrics["train_loss"], "train_acc": metrics["train_acc"],
               "val_loss": val_loss, "val_acc": val_acc, "best_val_acc": run.best,
               "train_time_s": metrics["train_time_s"],
               "train_images_per_s": metrics["train_images_per_s"],
               "epoch_time_s": time.perf_counter() - t0}
        run.rows.append(row)
        if run.run_dir is not None:
            t_save = time.perf_counter()
            # A collective under DDP: every rank with a run directory gathers, rank 0 writes.
            ranks = (run.timer.gather(checkpoint.rank_state(run))
                     if run.info.enabled and run.ema is not None else None)
            if run.writes:
                checkpoint.save(run, epoch + 1, improved, ranks=ranks)
                runlog.write_metrics(run.run_dir, run.rows)
            run.checkpointed = (epoch + 1, 0)
            run.timer.written(time.perf_counter() - t_save)
        if run.say:
            print(_epoch_line(row, cfg.epochs), flush=True)
    run.model.eval()
    return TrainResult(run.model, run.ema.module if run.ema else None, run.rows, run.best,
                       run.run_dir if run.writes else None)


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One pass over this rank's training batches (from `run.start_step` when resumed in the
    middle of the epoch), writing last.pt whenever `run.timer` says so; returns the epoch's
    training metrics (loss and accuracy over all ranks, time, images per second)."""
    start, partial = run.start_step, run.partial
    run.start_step, run.partial = 0, None  # the epochs after this one start at step 0
    t0 = time.perf_counter() - (partial["train_time_s"] if partial else 0.0)
    device, loader = run.execution.device, run.loader
    loader.set_epoch(epoch)
    loader.augment = run.crops if epoch < run.crop_epochs else run.whole
    if partial is not None:
        checkpoint.set_rng_state(partial["rng"])  # where this rank's generators stood
    else:
        _seed_generators(run.cfg.seed, epoch, run.info.rank, start)
    progress = runlog.Progress(len(loader), f"epoch {epoch + 1}/{run.cfg.epochs}",
                               enabled=run.say)
    run.net.train()
    transfer.keep_frozen_in_eval(run.model, run.frozen)
    sums = EpochSums(device, partial["sums"] if partial else None)
    for step, (x, y) in enumerate(loader.batches(start), start):
        faults.kill_point(f"train:{epoch + 1}:{step + 1}")
        logits, loss = train_step(run, x, y)
        sums.add(step, logits, loss, y)
        done = step + 1
        if done % CHECK_EVERY == 0 or done == len(loader):
            _stop_if_non_finite(sums.first_bad, epoch, len(loader), run)
        if done < len(loader) and run.timer.due():
            _stop_if_non_finite(sums.first_bad, epoch, len(loader), run)  # no NaN weights saved
            _save_mid_epoch(run, epoch, done, sums, time.perf_counter() - t0)
        if progress.due(done):
            progress.draw(done, images=sums.seen * run.info.world_size,
                          loss=float(sums.loss) / sums.seen, acc=float(sums.correct) / sums.seen)
    progress.close()
    run.execution.synchronize()
    train_time = time.perf_counter() - t0
    totals = distributed.all_reduce_sum(
        torch.stack([sums.loss.double(), sums.correct.double(),
                     torch.tensor(float(sums.seen), dtype=torch.float64, device=device)]))
    return {"train_loss": (totals[0] / totals[2]).item(),
            "train_acc": (totals[1] / totals[2]).item(),
            "train_time_s": train_time, "train_images_per_s": totals[2].item() / train_time}


class EpochSums:
    """This rank's loss and correct predictions summed over the epoch so far, on the device
    (no host sync per step), the images seen, and the first step whose loss was not finite
    (-1: none). `state()` is what a mid-epoch last.pt keeps of them; `EpochSums(device,
    state)` continues from it."""

    def __init__(self, device: torch.device, state: dict[str, Any] | None = None) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.seen = 0
        if state is not None:
            self.loss.copy_(state["loss"])
            self.correct.copy_(state["correct"])
            self.seen = state["seen"]

    def add(self, step: int, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step,
                                     self.first_bad)
        self.seen += len(y)

    def state(self) -> dict[str, Any]:
        return {"loss": self.loss.cpu(), "correct": self.correct.cpu(), "seen": self.seen}


def _save_mid_epoch(run: Run, epoch: int, done: int, sums: EpochSums, elapsed: float) -> None:
    """last.pt after `done` steps of `epoch`, with every rank's state of the epoch (a
    collective: every rank calls it at the same step, rank 0 writes)."""
    t0 = time.perf_counter()
    ranks = run.timer.gather(checkpoint.rank_state(run, sums.state(), elapsed))
    if run.writes:
        checkpoint.save(run, epoch, False, step=done, ranks=ranks)
    run.checkpointed = (epoch, done)
    run.timer.written(time.perf_counter() - t0)


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward under autocast, loss, backward, optional clipping, optimizer step, per-step
    lr schedule, EMA. Returns the main logits and the float32 loss, detached."""
    execution = run.execution
    with torch.autocast(execution.device.type, dtype=execution.amp_dtype,
                        enabled=execution.amp_dtype is not None):
        logits, loss = run.criterion(run.net(x), y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.grad_clip_norm is not None:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model)
    run.global_step += 1
    return logits.detach(), loss.detach().float()


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader | StreamLoader, execution: Execution
             ) -> tuple[float, float]:
    """Mean loss and top-1 accuracy of `model` over `loader`, summed over all ranks.

    The loss is plain cross-entropy: label smoothing shapes the training loss only, so the
    validation loss is the number `cnnzoo eval` reports for the same weights and images.

    Returns:
        (loss, accuracy as a fraction).
    """
    was_training = model.training
    model.eval()
    device = execution.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
    for x, y in loader:
        with torch.autocast(device.type, dtype=execution.amp_dtype,
                            enabled=execution.amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.argmax(1) == y).sum()
        sums[2] += len(y)
    distributed.all_reduce_sum(sums)
    model.train(was_training)
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def _seed_generators(seed: int, epoch: int, rank: int, step: int = 0) -> None:
    """Seed torch (CPU and CUDA), numpy and random from (seed, epoch, rank), and the step
    when resuming mid-epoch without this rank's saved generators (another world size)."""
    key = [seed, epoch, rank] + ([step] if step else [])
    s = int(np.random.SeedSequence(key).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def _stop_if_non_finite(first_bad: torch.Tensor, epoch: int, steps: int, run: Run) -> None:
    flag = distributed.all_reduce_sum((first_bad >= 0).to(torch.int64))
    if int(flag) == 0:
        return
    bad_step = int(first_bad)
    where = f"step {bad_step + 1}/{steps}" if bad_step >= 0 else "another rank"
    if run.run_dir is None:
        kept = "no run directory"
    elif run.checkpointed is None:
        kept = "no checkpoint was written yet"
    else:
        done, step = run.checkpointed
        at = f"epoch {done + 1}, step {step}" if step else f"epoch {done}"
        kept = f"kept {run.run_dir / 'last.pt'} from {at}"
    raise NonFiniteLossError(f"loss became NaN or inf in epoch {epoch + 1}, {where}; "
                             f"training stopped, {kept} (lower lr or enable grad_clip_norm)")


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    val = ("" if row["val_acc"] is None else
           f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%")
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {100 * row['train_acc']:.2f}%{val}  lr {row['lr']:.3g}  "
            f"{row['train_images_per_s']:,.0f} img/s  {row['epoch_time_s']:.1f} s")

