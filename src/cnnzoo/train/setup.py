"""Everything a run needs before its first step: `setup(cfg, ...) -> Run`.

In order: torch's global settings, the run directory (and whether to resume: `resume`, or a
torchrun restart), the data splits, the model (`transfer.prepare`: built, filled from an init
file, frozen; BatchNorm synchronised with `sync_bn`), the loaders, the optimisation state, the
resumed state from last.pt and the run directory's first files; then the ranks agree that all
of that worked, and last comes the DDP wrapper, so that it broadcasts the weights every rank
then holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.checkpoint.torch_file import versions
from cnnzoo.data.augment import Augment
from cnnzoo.data.dataset import ImageDataset, train_val_split
from cnnzoo.data.loader import BatchLoader
from cnnzoo.data.shards import is_shard_dir
from cnnzoo.data.sources import load_dataset
from cnnzoo.fileio import remove_stale_temp_files
from cnnzoo.train import checkpoint, distributed, runlog, sync_bn, transfer
from cnnzoo.train.autosave import Timer
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.device import Execution
from cnnzoo.train.ema import ModelEma
from cnnzoo.train.loss import make_criterion
from cnnzoo.train.optim import build_optimizer
from cnnzoo.train.run import Run
from cnnzoo.train.schedule import build_scheduler
from cnnzoo.train.streaming import StreamData, open_stream_data, stream_loaders

EVAL_BATCH = 512  # images per validation batch and rank; no gradients, so larger is fine


def setup(cfg: TrainConfig, info: distributed.DistInfo, execution: Execution, *,
          module: nn.Module | None = None, dataset: ImageDataset | None = None,
          val_data: ImageDataset | None = None) -> Run:
    """Build the run `cfg` describes, resumed from its last.pt when `cfg.resume` finds one
    or torchrun restarted the job that wrote it.

    Under torchrun every rank builds its part, then all exchange how that went before the
    first collective (DDP's broadcast): an error on one rank (a missing data path on one
    node, say) is raised on every rank, naming that rank, and ranks that would resume from
    different points refuse to start.

    Args:
        module: a model to train instead of the registered `cfg.model`.
        dataset: the training data instead of loading `cfg.data`.
        val_data: validation set; default: `cfg.val_size` held out of the training data.
    """
    try:
        run, message = _build(cfg, info, execution, module, dataset, val_data)
    except Exception as err:
        # Tell the other ranks, so they raise it too; this rank's own error is the one to
        # show, even if the exchange fails as well (a peer died).
        with contextlib.suppress(RuntimeError):
            distributed.exchange(err, None)
        raise
    starts = distributed.exchange(None, (run.start_epoch, run.global_step))
    if len(set(starts)) > 1:
        where = ", ".join(f"rank {r}: epoch {e} step {s}" for r, (e, s) in enumerate(starts))
        raise ValueError(f"resume: the ranks found different checkpoints ({where}); every "
                         f"rank must read the same {run.run_dir / 'last.pt'} (put --out on a "
                         f"file system all nodes share)")
    run.net = distributed.wrap(run.model, info, execution.device)
    if cfg.compile:
        run.net = torch.compile(run.net)
    if run.say and message is not None:
        print(message, flush=True)
    if run.say and (run.start_step or run.start_epoch):
        restart = f"torchrun restart {info.restarts}: " if info.restarts else ""
        where = (f"in epoch {run.start_epoch + 1}, after step {run.start_step}/{len(run.loader)}"
                 if run.start_step else f"after epoch {run.start_epoch}")
        print(f"{restart}resuming {run.run_dir / 'last.pt'} {where}", flush=True)
    return run


def _build(cfg: TrainConfig, info: distributed.DistInfo, execution: Execution,
           module: nn.Module | None, dataset: ImageDataset | None,
           val_data: ImageDataset | None) -> tuple[Run, str | None]:
    """This rank's run (and its run directory's first files), before the DDP wrapper, and
    the message `transfer.prepare` left."""
    device = execution.device
    _configure_torch(cfg, device)
    if info.is_main and not cfg.quiet:
        print(execution.describe(), flush=True)  # after the thread count is set
    if cfg.batch_size % info.world_size:
        raise ValueError(f"batch_size: {cfg.batch_size} does not divide over "
                         f"{info.world_size} processes")
    run_dir = Path(cfg.out) if cfg.out is not None else None
    writes = run_dir is not None and info.is_main
    resume_from = _check_run_dir(cfg, run_dir, info, writes)
    shards = None
    if dataset is None and is_shard_dir(cfg.data):
        shards, train_ds = open_stream_data(cfg)
    else:
        if cfg.recipe is not None:
            raise ValueError(f"recipe: {cfg.recipe!r} applies to a shard directory (cnnzoo "
                             f"data pack); in-memory data are augmented with --hflip, "
                             f"--crop-padding, --random-erasing")
        train_ds, val_ds = _splits(cfg, dataset, val_data)
    built = transfer.prepare(cfg, module, num_classes=train_ds.num_classes,
                             in_chans=train_ds.in_chans)
    model = built.model
    image_size = _image_size(cfg, model, train_ds)
    if shards is not None:  # a stream has no common size: it is resized to one
        image_size = image_size or min(train_ds.image_size)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and info.enabled:
        model = sync_bn.convert(model, device)  # before the optimizer and EMA see it
    whole = Augment(crop_padding=cfg.crop_padding, hflip=cfg.hflip,
                    alternate_flip=cfg.alternate_flip, random_erasing=cfg.random_erasing)
    # Progressive sizes: crop_size for the first crop_size_epochs epochs, then whole images.
    crops = replace(whole, crop_size=cfg.crop_size)
    if shards is not None:
        loader, val_loader = stream_loaders(cfg, shards, train_ds, image_size, info, device,
                                            EVAL_BATCH)
    else:
        loader, val_loader = _loaders(cfg, train_ds, val_ds, crops, image_size, info, device)
    optimizer = build_optimizer(model, cfg)
    run = Run(
        cfg, info, execution, model, model, make_criterion(model, cfg.label_smoothing),
        loader, val_loader, crops, whole,
        cfg.epochs if cfg.crop_size_epochs is None else cfg.crop_size_epochs,
        optimizer, build_scheduler(optimizer, cfg, len(loader)),
        torch.amp.GradScaler(device.type, enabled=execution.use_scaler),
        ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None, built.frozen,
        _record(cfg, module, train_ds, image_size, built.model_options, built.init),
        run_dir, writes, say=info.is_main and not cfg.quiet,
        timer=Timer(cfg.checkpoint_every, info, enabled=run_dir is not None))
    if resume_from is not None:
        checkpoint.restore(run, resume_from)
    if writes:
        _start_run_dir(run)
    return run, built.message


def _configure_torch(cfg: TrainConfig, device: torch.device) -> None:
    """Threads and determinism, process-wide (`train` restores the determinism flag)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic


def _splits(cfg: TrainConfig, dataset: ImageDataset | None, val_data: ImageDataset | None
            ) -> tuple[ImageDataset, ImageDataset | None]:
    """The training and validation sets: a validation split is held out of the training
    split; the test split is not used."""
    train_ds = dataset if dataset is not None else load_dataset(cfg.data, "train",
                                                                data_dir=cfg.data_dir)
    if cfg.num_classes is not None and cfg.num_classes != train_ds.num_classes:
        raise ValueError(f"num_classes: {cfg.num_classes} given, but {train_ds.name} has "
                         f"{train_ds.num_classes} classes ({', '.join(train_ds.classes[:12])}"
                         f"{', ...' if train_ds.num_classes > 12 else ''})")
    if val_data is None and cfg.val_size > 0:
        size = int(cfg.val_size) if cfg.val_size >= 1 else float(cfg.val_size)
        return train_val_split(train_ds, size, seed=cfg.seed)
    return train_ds, val_data


def _loaders(cfg: TrainConfig, train_ds: ImageDataset, val_ds: ImageDataset | None,
             augment: Augment, image_size: int | None, info: distributed.DistInfo,
             device: torch.device) -> tuple[BatchLoader, BatchLoader | None]:
    """This rank's training loader and its slice of the validation set."""
    loader = BatchLoader(
        train_ds, cfg.batch_size // info.world_size, shuffle=True, drop_last=True,
        device=device, seed=cfg.seed, augment=augment, image_size=image_size, rank=info.rank,
        world_size=info.world_size, channels_last=cfg.channels_last)
    if len(loader) == 0:
        raise ValueError(f"batch_size: {cfg.batch_size} is larger than the training split "
                         f"({len(train_ds)} images)")
    if val_ds is None:
        return loader, None
    # Each rank evaluates a disjoint slice; the sums are all-reduced.
    val_loader = BatchLoader(val_ds.subset(range(info.rank, len(val_ds), info.world_size)),
                             EVAL_BATCH, device=device, image_size=image_size,
                             channels_last=cfg.channels_last)
    return loader, val_loader


def _image_size(cfg: TrainConfig, model: nn.Module, ds: ImageDataset | StreamData
                ) -> int | None:
    """Square side to resize batches to, or None to keep the data's size."""
    if cfg.image_size is not None:
        return cfg.image_size
    smallest = getattr(model, "min_input_size", 1)
    return smallest if min(ds.image_size) < smallest else None


def _record(cfg: TrainConfig, module: nn.Module | None, ds: ImageDataset | StreamData,
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


def _check_run_dir(cfg: TrainConfig, run_dir: Path | None, info: distributed.DistInfo,
                   writes: bool) -> Path | None:
    """The checkpoint to resume from, if any; refuses to overwrite a run without resume.

    After a torchrun restart (`--max-restarts`), last.pt is resumed without `resume` when
    this job wrote it (env.json holds its run id): a restart continues the job, but never
    adopts another job's run that the first attempt refused to overwrite.
    """
    if run_dir is None:
        return None
    last = run_dir / "last.pt"
    if info.restarts and info.job_id is not None and last.is_file() \
            and _job_id(run_dir) == info.job_id:
        return last
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


def _job_id(run_dir: Path) -> str | None:
    """The torchrun run id of the job that last started in `run_dir` (from env.json)."""
    try:
        return json.loads((run_dir / "env.json").read_text()).get("torchelastic_run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _start_run_dir(run: Run) -> None:
    """Create the run directory with config.json and env.json (again on resume)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(run.run_dir)  # left by a run killed mid-write
    runlog.write_json(run.run_dir / "config.json", run.cfg.to_dict())
    env = runlog.environment(device=run.execution.device, precision=run.execution.precision,
                             world_size=run.info.world_size)
    # The job id lets a torchrun restart recognise its own last.pt (`_check_run_dir`).
    runlog.write_json(run.run_dir / "env.json", {**env, "torchelastic_run_id": run.info.job_id})
