"""Learning-rate schedules, evaluated per optimizer step as a multiplier of the peak lr.

Each schedule is a small frozen dataclass called with the step index (0-based, the step about
to be taken) and the total number of steps. `build_scheduler` wraps one in `LambdaLR`, whose
state dict then holds only the step counter and these plain fields, so it loads with
`torch.load(weights_only=True)`.

- cosine: linear warm-up then half a cosine to 0 (Loshchilov & Hutter 2016, "SGDR",
  arXiv:1608.03983, without restarts; warm-up from Goyal et al. 2017, arXiv:1706.02677).
- step: divide by 10 at fixed fractions of training; He et al. 2015 (arXiv:1512.03385,
  section 4.2) divide at 32k and 48k of 64k iterations, i.e. fractions 0.5 and 0.75.
- onecycle: Smith & Topin 2017, "Super-Convergence", arXiv:1708.07120: linear rise from
  lr/25 to lr over `pct_start` of training, then linear fall to 0. Deviation: momentum is
  not cycled (the paper cycles it between 0.95 and 0.85); lr/25 is PyTorch's OneCycleLR
  default start.
- constant: 1 throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cnnzoo.train.config import TrainConfig


@dataclass
class Cosine:
    total_steps: int
    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps  # the first step already moves the weights
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Step:
    total_steps: int
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        passed = sum(step >= round(m * self.total_steps) for m in self.milestones)
        return self.gamma**passed


@dataclass
class OneCycle:
    total_steps: int
    pct_start: float = 0.25
    start_div: float = 25.0

    def __call__(self, step: int) -> float:
        peak = max(1, round(self.pct_start * self.total_steps))
        if step < peak:
            start = 1.0 / self.start_div
            return start + (1.0 - start) * step / peak
        return max(0.0, 1.0 - (step - peak) / max(1, self.total_steps - peak))


@dataclass
class Constant:
    total_steps: int

    def __call__(self, step: int) -> float:
        return 1.0


def make_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The lr multiplier of `cfg.schedule` as a function of the optimizer step."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        return Cosine(total, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "step":
        return Step(total, milestones=tuple(cfg.milestones))
    if cfg.schedule == "onecycle":
        return OneCycle(total, pct_start=cfg.onecycle_pct_start)
    if cfg.schedule == "constant":
        return Constant(total)
    raise ValueError(f"schedule: expected cosine, step, onecycle or constant, got {cfg.schedule!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step `LambdaLR`; call `.step()` after every `optimizer.step()`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, make_schedule(cfg, steps_per_epoch))
