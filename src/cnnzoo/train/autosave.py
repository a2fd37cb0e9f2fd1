"""When the loop writes last.pt in the middle of an epoch: `Timer`.

The cost of a write is the state's size over the disk's speed (and, on a GPU, the copy to
the host, during which the GPU idles), not the speed of a step, so one rule serves CPU and
CUDA: every 60 s, so that a crash loses at most a minute, unless a write takes more than 5%
of that (a big model with optimizer state and EMA on a slow or network disk), in which case
the interval stretches to 20 times the last write's duration. benchmarks/checkpoint_overhead.py
measures the cost.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from cnnzoo.train.distributed import DistInfo

DEFAULT_EVERY_S = 60.0  # checkpoint_every=None: at most a minute of work lost ...
MAX_WRITE_SHARE = 0.05  # ... unless a write takes longer than 5% of that: then less often
POLL_S = 1.0  # under DDP, how often rank 0 tells the others whether a write is due


class Timer:
    """When to write last.pt in the middle of an epoch.

    Rank 0's monotonic clock decides, after a step: due once `every` seconds have passed
    since the last write. Under DDP rank 0 broadcasts its verdict over a gloo group of its
    own (host memory: it never waits for the GPU), so every rank enters the write, which
    gathers their states, at the same step. A broadcast costs ~0.3 ms (2 processes on 2 busy
    cores), too much for every step of a small net, so with its verdict rank 0 sends the
    number of steps until the next one: about `POLL_S` (or `every`, when shorter) at its
    step time.

    `every=None` is the default: 60 s, or 20 times the last write's duration when that is
    longer (a slow disk or a big state), so that writing takes at most 5% of the time;
    0 means never.
    """

    def __init__(self, every: float | None, info: DistInfo, *, enabled: bool) -> None:
        self.fixed = every
        self.every = DEFAULT_EVERY_S if every is None else every
        self.enabled = enabled and self.every > 0
        self.distributed = info.enabled
        self.group: dist.ProcessGroup | None = None
        self.last = time.monotonic()
        self.polled, self.gap, self.countdown = self.last, 1, 1  # DDP: steps between verdicts

    def due(self) -> bool:
        """Whether to write now (the same answer on every rank); called after every step."""
        if not self.enabled:
            return False
        now = time.monotonic()
        due = now - self.last >= self.every
        if not self.distributed:
            return due
        self.countdown -= 1
        if self.countdown > 0:
            return False
        step_s = max((now - self.polled) / self.gap, 1e-9)  # rank 0's is the one sent
        gap = max(1, min(round(min(POLL_S, self.every) / step_s), 10_000))
        verdict = torch.tensor([int(due), gap])
        dist.broadcast(verdict, src=0, group=self._group())
        self.polled, self.gap = now, int(verdict[1])
        self.countdown = self.gap
        return bool(verdict[0])

    def _group(self) -> dist.ProcessGroup:
        # new_group is a collective call: made at the first step, which every rank reaches,
        # not during set-up, where a rank may fail alone.
        if self.group is None:
            self.group = dist.new_group(backend="gloo")
        return self.group

    def written(self, seconds: float) -> None:
        """A write that took `seconds` just ended (called on every rank): count the next
        interval from now. Under DDP the ranks first wait for each other here, so that none
        runs ahead of the file rank 0 has just written: a crash after step k+1 has begun on
        any rank finds the checkpoint of step k (the next step's gradient all-reduce would
        make them wait for rank 0 anyway)."""
        if self.distributed:
            dist.barrier(group=self._group())
        self.last = time.monotonic()
        if self.fixed is None:
            self.every = max(DEFAULT_EVERY_S, seconds / MAX_WRITE_SHARE)

    def gather(self, state: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every rank's `state` (on rank 0, in rank order; None on the others)."""
        if not self.distributed:
            return [state]
        group = self._group()
        states = [None] * dist.get_world_size(group) if dist.get_rank() == 0 else None
        dist.gather_object(state, states, dst=0, group=group)
        return states
