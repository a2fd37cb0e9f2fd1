"""The training state in a checkpoint: what last.pt adds to the model file.

The file format itself (keys, atomic save, `weights_only` load) is `cnnzoo.checkpoint`'s;
this module fills it from a run and restores a run from it. The "rng" states are restored on
resume, but the loop also reseeds every generator at each epoch start from (seed, epoch,
rank): that, not the saved states (rank 0's only), is what makes a resumed multi-process run
exact. The data loader keeps no state: its order and augmentation are a function of
(seed, epoch, rank), so an epoch-boundary checkpoint resumes it exactly.

In the middle of an epoch (every `checkpoint_every` seconds, see `autosave.Timer`),
last.pt also holds "step", the steps done in the epoch in progress, and "ranks", each rank's
state of that epoch: its generators (dropout and stochastic depth have drawn from them since
the epoch start), its metric sums and its training time so far. A resumed run restores its
rank's entry and skips the loader's first "step" batches of the epoch, which the loader
reproduces without drawing any random number. A stream (`data.stream.StreamLoader`) instead
keeps its engine's position: the rank's entry holds it as "stream" (plain JSON-able values).
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.checkpoint.torch_file import load_checkpoint, save_checkpoint
from cnnzoo.train import faults
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.run import Run


def rng_state() -> dict[str, Any]:
    """The state of every random number generator the loop may draw from."""
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"bit_generator": bit_generator, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save(run: Run, epoch: int, improved: bool, *, step: int = 0,
         ranks: list[dict[str, Any]] | None = None) -> None:
    """Write last.pt (and best.pt when validation improved) after `epoch` completed epochs
    and `step` steps of the next one.

    Args:
        ranks: each rank's `rank_state`, gathered by `Timer.gather` (mid-epoch; and under
            DDP with EMA), or None.
    """
    ema = run.ema
    weights = {**run.record, "model": run.model.state_dict(),
               "ema": ema.module.state_dict() if ema else None,
               "ema_updates": ema.updates if ema else 0,
               "eval_weights": "ema" if ema else "model",
               "epoch": epoch, "step": step, "global_step": run.global_step,
               "best_val_acc": run.best, "metrics": run.rows}
    if improved:
        save_checkpoint(run.run_dir / "best.pt", {**weights, "kind": "best"})
    training = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
                "rng": rng_state(), "ranks": ranks}
    where = f"{epoch + 1}:{step}" if step else f"{epoch}"
    save_checkpoint(run.run_dir / "last.pt", {**weights, "kind": "last", **training},
                    before_replace=partial(faults.kill_point, f"ckpt-write:{where}"))


def restore(run: Run, path: Path) -> None:
    """Continue `run` from the last.pt at `path`: weights, optimiser, RNG and progress (and,
    from the middle of an epoch, the step and this rank's state of that epoch)."""
    state = load_checkpoint(path)  # on the CPU: the RNG states must stay there
    check_resumable(run.cfg, state, path)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] is not None:
        run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None:
        run.ema.load(state["ema"], state["ema_updates"])
    set_rng_state(state["rng"])
    run.start_epoch, run.global_step = state["epoch"], state["global_step"]
    run.start_step = state.get("step", 0)  # files written before mid-epoch saves have none
    ranks = state.get("ranks") or []
    # Another world size cannot take over the ranks' states: the loop then reseeds the
    # generators from (seed, epoch, rank) at the step, and the epoch's metrics count from there.
    mine = ranks[run.info.rank] if len(ranks) == run.info.world_size else {}
    if run.ema is not None and "ema_buffers" in mine:
        ema = run.ema.module.state_dict()
        for key, value in mine["ema_buffers"].items():
            ema[key].copy_(value)
    run.partial = mine if run.start_step and "rng" in mine else None
    if run.start_step and "stream" in mine:
        run.loader.load_state_dict(mine["stream"])
    run.best, run.rows = state["best_val_acc"], list(state["metrics"])
    run.checkpointed = (run.start_epoch, run.start_step)


def rank_state(run: Run, sums: dict[str, Any] | None = None,
               train_time_s: float = 0.0) -> dict[str, Any]:
    """What last.pt keeps of this rank besides rank 0's state: in the middle of an epoch its
    generators, metric `sums` and training time so far; under DDP with EMA the EMA's buffers.

    The EMA's parameters are the same on every rank (DDP averages the gradients), but its
    BatchNorm statistics follow the rank's own batches: each rank validates its slice with
    them, so a resumed run needs each rank's own to report the same validation metrics.
    """
    state: dict[str, Any] = {}
    if sums is not None:
        state.update(rng=rng_state(), sums=sums, train_time_s=train_time_s)
        if hasattr(run.loader, "state_dict"):  # a stream: where the engine stands (JSON)
            state["stream"] = run.loader.state_dict()
    if run.ema is not None and run.info.enabled:
        params = {name for name, _ in run.ema.module.named_parameters()}
        state["ema_buffers"] = {k: v.detach().cpu().clone()
                                for k, v in run.ema.module.state_dict().items()
                                if k not in params}
    return state


def check_resumable(cfg: TrainConfig, state: dict[str, Any], path: Path) -> None:
    """Refuse a best.pt, or a last.pt trained with other settings."""
    if state.get("kind") != "last":
        raise ValueError(f"{path}: a {state.get('kind')!r} checkpoint holds no training state")
    diff = cfg.differences(TrainConfig.from_dict(state["config"]))
    if diff:
        raise ValueError(f"resume: {path} was trained with other settings ({'; '.join(diff)}); "
                         f"resume with the same options")

