"""The training loop: `train(model, data, **options)`.

One epoch: set the loader's epoch (its order and augmentation are a function of
(seed, epoch, rank)) and reseed the global generators from the same key (dropout, stochastic
depth), then for each batch: forward under autocast, loss (+ auxiliary losses), backward,
optional clipping, optimizer step, per-step lr schedule, EMA. Loss and accuracy accumulate on
the device; the host reads them only to draw the progress bar, to check for a non-finite
loss every `CHECK_EVERY` steps and at the end of the epoch. Then validation, and rank 0
writes best.pt (when validation accuracy improved), last.pt and the metric files.

Because everything random is re-derived from (seed, epoch, rank) at each epoch start and
last.pt holds the rest of the state, a run killed at any point and resumed with
`resume=True` ends with exactly the weights of an uninterrupted run (same machine, same
thread count, CPU; see tests/test_train_resume.py).

Fine-tuning (`init`, `freeze`, `backbone_lr_scale`; see `transfer.py`): the model is built for
the data's classes and filled from the weights file before training, frozen stages get no
gradients and are put back in eval mode after every `train()`, and the checkpoints record the
file ("init"). A resumed run reads the file again (for the builder options it implies), then
the checkpoint's weights replace it.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.checkpoint.torch_file import load_checkpoint, save_checkpoint, versions
from cnnzoo.data.augment import Augment
from cnnzoo.data.dataset import ImageDataset, train_val_split
from cnnzoo.data.loader import BatchLoader
from cnnzoo.data.sources import load_dataset
from cnnzoo.fileio import remove_stale_temp_files
from cnnzoo.train import checkpoint as ckpt_io
from cnnzoo.train import distributed, faults, runlog, transfer
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.device import Execution, resolve
from cnnzoo.train.ema import ModelEma
from cnnzoo.train.optim import build_optimizer
from cnnzoo.train.schedule import build_scheduler

CHECK_EVERY = 50  # steps between host reads of the non-finite-loss flag
EVAL_BATCH = 512  # images per validation batch and rank; no gradients, so larger is fine


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

    info = distributed.detect()
    execution = resolve(cfg.device, cfg.precision, local_rank=info.local_rank)
    created = distributed.init(info, execution.device)
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    finished = False
    try:
        result = _run(cfg, model if isinstance(model, nn.Module) else None,
                      data if isinstance(data, ImageDataset) else None, val_data, info, execution)
        finished = True
        return result
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        distributed.shutdown(created, finished=finished)


def _run(cfg: TrainConfig, module: nn.Module | None, dataset: ImageDataset | None,
         val_data: ImageDataset | None, info: distributed.DistInfo,
         execution: Execution) -> TrainResult:
    device = execution.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
    if cfg.batch_size % info.world_size:
        raise ValueError(f"batch_size: {cfg.batch_size} does not divide over "
                         f"{info.world_size} processes")
    run_dir = Path(cfg.out) if cfg.out is not None else None
    writes = run_dir is not None and info.is_main
    resume_from = _check_run_dir(cfg, run_dir, writes)

    # Data: a validation split held out of the training split; the test split is not used.
    train_ds = dataset if dataset is not None else load_dataset(cfg.data, "train",
                                                                data_dir=cfg.data_dir)
    if cfg.num_classes is not None and cfg.num_classes != train_ds.num_classes:
        raise ValueError(f"num_classes: {cfg.num_classes} given, but {train_ds.name} has "
                         f"{train_ds.num_classes} classes ({', '.join(train_ds.classes[:12])}"
                         f"{', ...' if train_ds.num_classes > 12 else ''})")
    val_ds = val_data
    if val_ds is None and cfg.val_size > 0:
        size = int(cfg.val_size) if cfg.val_size >= 1 else float(cfg.val_size)
        train_ds, val_ds = train_val_split(train_ds, size, seed=cfg.seed)

    built = transfer.prepare(cfg, module, num_classes=train_ds.num_classes,
                             in_chans=train_ds.in_chans)
    model, frozen = built.model, built.frozen
    image_size = _image_size(cfg, model, train_ds)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    per_rank_batch = cfg.batch_size // info.world_size
    augment = Augment(crop_padding=cfg.crop_padding, hflip=cfg.hflip,
                      alternate_flip=cfg.alternate_flip, random_erasing=cfg.random_erasing)
    # Progressive sizes: crop_size for the first crop_size_epochs epochs, then whole images.
    small_crops = replace(augment, crop_size=cfg.crop_size)
    small_crop_epochs = cfg.epochs if cfg.crop_size_epochs is None else cfg.crop_size_epochs
    loader = BatchLoader(
        train_ds, per_rank_batch, shuffle=True, drop_last=True, device=device, seed=cfg.seed,
        augment=small_crops,
        image_size=image_size, rank=info.rank, world_size=info.world_size,
        channels_last=cfg.channels_last)
    if len(loader) == 0:
        raise ValueError(f"batch_size: {cfg.batch_size} is larger than the training split "
                         f"({len(train_ds)} images)")
    val_loader = None
    if val_ds is not None:  # each rank evaluates a disjoint slice; sums are all-reduced
        val_loader = BatchLoader(val_ds.subset(range(info.rank, len(val_ds), info.world_size)),
                                 EVAL_BATCH, device=device, image_size=image_size,
                                 channels_last=cfg.channels_last)

    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(loader))
    scaler = torch.amp.GradScaler(device.type, enabled=execution.use_scaler)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None
    record = _record(cfg, module, train_ds, image_size, built.model_options, built.init)
    start_epoch, global_step, best, rows = 0, 0, None, []
    if resume_from is not None:
        state = load_checkpoint(resume_from)  # CPU: RNG states must stay there
        _check_resumable(cfg, state, resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load(state["ema"], state["ema_updates"])
        ckpt_io.set_rng_state(state["rng"])
        start_epoch, global_step = state["epoch"], state["global_step"]
        best, rows = state["best_val_acc"], list(state["metrics"])

    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)  # left by a run killed mid-write
        runlog.write_json(run_dir / "config.json", cfg.to_dict())
        runlog.write_json(run_dir / "env.json", runlog.environment(
            device=device, precision=execution.precision, world_size=info.world_size))
    net = distributed.wrap(model, info, device)
    if cfg.compile:
        net = torch.compile(net)
    criterion = _criterion(model, cfg.label_smoothing)
    say = info.is_main and not cfg.quiet
    if say and built.message is not None:
        print(built.message, flush=True)
    if say and start_epoch:
        print(f"resuming {run_dir / 'last.pt'} after epoch {start_epoch}", flush=True)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        loader.set_epoch(epoch)
        loader.augment = small_crops if epoch < small_crop_epochs else augment
        _seed_generators(cfg.seed, epoch, info.rank)
        progress = runlog.Progress(len(loader), f"epoch {epoch + 1}/{cfg.epochs}", enabled=say)
        net.train()
        transfer.keep_frozen_in_eval(model, frozen)
        # Accumulated on the device: no host sync per step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        seen = 0
        for step, (x, y) in enumerate(loader):
            faults.kill_point(f"train:{epoch + 1}:{step + 1}")
            with torch.autocast(device.type, dtype=execution.amp_dtype,
                                enabled=execution.amp_dtype is not None):
                logits, loss = criterion(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            global_step += 1
            loss = loss.detach().float()
            loss_sum += loss * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            seen += len(y)
            done = step + 1
            if done % CHECK_EVERY == 0 or done == len(loader):
                _stop_if_non_finite(first_bad, epoch, len(loader), run_dir, rows)
            if progress.due(done):
                progress.draw(done, images=seen * info.world_size,
                              loss=float(loss_sum) / seen, acc=float(correct) / seen)
        progress.close()
        execution.synchronize()
        train_time = time.perf_counter() - t0

        totals = distributed.all_reduce_sum(
            torch.stack([loss_sum.double(), correct.double(),
                         torch.tensor(float(seen), dtype=torch.float64, device=device)]))
        train_loss, train_acc = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
        eval_model = ema.module if ema is not None else model
        val_loss = val_acc = None
        if val_loader is not None:
            val_loss, val_acc = evaluate(eval_model, val_loader, execution, cfg.label_smoothing)
        improved = val_acc is not None and (best is None or val_acc > best)
        if improved:
            best = val_acc
        row = {
            "epoch": epoch + 1, "global_step": global_step,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "best_val_acc": best,
            "train_time_s": train_time,
            "train_images_per_s": totals[2].item() / train_time,
            "epoch_time_s": time.perf_counter() - t0,
        }
        rows.append(row)
        if writes:
            weights = {**record, "model": model.state_dict(),
                       "ema": ema.module.state_dict() if ema else None,
                       "ema_updates": ema.updates if ema else 0,
                       "eval_weights": "ema" if ema else "model",
                       "epoch": epoch + 1, "global_step": global_step,
                       "best_val_acc": best, "metrics": rows}
            if improved:
                save_checkpoint(run_dir / "best.pt", {**weights, "kind": "best"})
            save_checkpoint(
                run_dir / "last.pt",
                {**weights, "kind": "last", "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                 "rng": ckpt_io.rng_state()},
                before_replace=partial(faults.kill_point, f"ckpt-write:{epoch + 1}"))
            runlog.write_metrics(run_dir, rows)
        if say:
            print(_epoch_line(row, cfg.epochs), flush=True)

    model.eval()
    return TrainResult(model, ema.module if ema else None, rows, best,
                       run_dir if writes else None)


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, execution: Execution,
             label_smoothing: float = 0.0) -> tuple[float, float]:
    """Mean loss and top-1 accuracy of `model` over `loader`, summed over all ranks.

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
        sums[0] += F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing)
        sums[1] += (logits.argmax(1) == y).sum()
        sums[2] += len(y)
    distributed.all_reduce_sum(sums)
    model.train(was_training)
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def _criterion(model: nn.Module, label_smoothing: float):
    """(output, y) -> (main logits, loss). A tuple output (GoogLeNet in training) is
    (logits, aux logits...), and the loss adds `model.aux_weight` x each auxiliary loss
    (Szegedy et al. 2014, section 5: weight 0.3)."""
    aux_weight = getattr(model, "aux_weight", None)

    def criterion(output, y):
        if isinstance(output, tuple):
            if aux_weight is None:
                raise ValueError(f"{type(model).__name__} returned a tuple but has no "
                                 "aux_weight attribute to weigh its auxiliary outputs")
            logits, *aux = output
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            for a in aux:
                if a is not None:
                    loss = loss + aux_weight * F.cross_entropy(a, y,
                                                               label_smoothing=label_smoothing)
            return logits, loss
        return output, F.cross_entropy(output, y, label_smoothing=label_smoothing)

    return criterion


def _image_size(cfg: TrainConfig, model: nn.Module, ds: ImageDataset) -> int | None:
    """Square side to resize batches to, or None to keep the data's size."""
    if cfg.image_size is not None:
        return cfg.image_size
    smallest = getattr(model, "min_input_size", 1)
    return smallest if min(ds.image_size) < smallest else None


def _record(cfg: TrainConfig, module: nn.Module | None, ds: ImageDataset,
            image_size: int | None, model_options: dict[str, Any],
            init: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint keys that let eval/predict/export rebuild the model and its input, and
    where its weights started ("init": `transfer.init_record` and the frozen steps, or None
    for a fresh initialisation)."""
    return {
        "model_name": None if module is not None else cfg.model,
        "model_options": dict(model_options),  # with those the init file needs
        "num_classes": ds.num_classes,
        "in_chans": ds.in_chans,
        "classes": list(ds.classes),
        "preprocess": {"mean": list(ds.mean), "std": list(ds.std),
                       "image_size": [image_size, image_size] if image_size
                       else list(ds.image_size),
                       "resize": image_size is not None},
        "config": cfg.to_dict(),
        "init": init,
        "versions": versions(),
    }


def _check_run_dir(cfg: TrainConfig, run_dir: Path | None, writes: bool) -> Path | None:
    """The checkpoint to resume from, if any; refuses to overwrite a run without resume."""
    if run_dir is None:
        return None
    last = run_dir / "last.pt"
    if cfg.resume:
        if last.is_file():
            return last
        if writes:
            print(f"resume: no {last} yet, starting from epoch 1", file=sys.stderr)
        return None
    if last.exists():
        raise ValueError(f"out: {run_dir} already holds a run (last.pt); pass resume "
                         f"(--resume) to continue it or choose another directory")
    return None


def _check_resumable(cfg: TrainConfig, state: dict[str, Any], path: Path) -> None:
    if state.get("kind") != "last":
        raise ValueError(f"{path}: a {state.get('kind')!r} checkpoint holds no training state")
    diff = cfg.differences(TrainConfig.from_dict(state["config"]))
    if diff:
        raise ValueError(f"resume: {path} was trained with other settings ({'; '.join(diff)}); "
                         f"resume with the same options")


def _seed_generators(seed: int, epoch: int, rank: int) -> None:
    """Seed torch (CPU and CUDA), numpy and random from (seed, epoch, rank)."""
    s = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def _stop_if_non_finite(first_bad: torch.Tensor, epoch: int, steps: int, run_dir: Path | None,
                        rows: list) -> None:
    flag = distributed.all_reduce_sum((first_bad >= 0).to(torch.int64))
    if int(flag) == 0:
        return
    bad_step = int(first_bad)
    where = f"step {bad_step + 1}/{steps}" if bad_step >= 0 else "another rank"
    if run_dir is None:
        kept = "no run directory"
    elif rows:
        kept = f"kept {run_dir / 'last.pt'} from epoch {rows[-1]['epoch']}"
    else:
        kept = "no checkpoint was written yet"
    raise NonFiniteLossError(f"loss became NaN or inf in epoch {epoch + 1}, {where}; "
                             f"training stopped, {kept} (lower lr or enable grad_clip_norm)")


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    val = ("" if row["val_acc"] is None else
           f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%")
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {100 * row['train_acc']:.2f}%{val}  lr {row['lr']:.3g}  "
            f"{row['train_images_per_s']:,.0f} img/s  {row['epoch_time_s']:.1f} s")

