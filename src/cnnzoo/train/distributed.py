"""Data-parallel training under torchrun: detection, process group, DDP, metric reduction.

`torchrun --nproc_per_node=N -m cnnzoo train ...` starts N copies of the same command and
sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT) in each one's environment. Each
process then joins one process group (gloo on CPU, nccl on CUDA, one GPU per process),
wraps the model in DistributedDataParallel, which averages the gradients of all ranks in
backward, and reads its own shard of every global batch. Only rank 0 writes files.
Without those variables (or with WORLD_SIZE=1) all of this is a no-op.

torchrun (torch.distributed.elastic) also sets TORCHELASTIC_RESTART_COUNT, the number of
times it has restarted the worker group (after `--max-restarts=K`, when a rank died), and
TORCHELASTIC_RUN_ID, the job's rendezvous id (a fresh uuid per `--standalone` job): `setup`
reads them to resume a restarted job from its last.pt. At start-up the ranks exchange how
their setup went (`exchange`) before the first collective that DDP makes, so one rank's error
ends every rank with that error instead of leaving them blocked, or failing with gloo's
"Connection closed by peer".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

STORE_TIMEOUT = timedelta(minutes=30)  # torch's default for gloo process groups
ATTEMPT_STORE_KEY = "cnnzoo/attempt_store_port"


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restarts: int = 0  # times torchrun restarted this job's processes
    job_id: str | None = None  # torchrun's run id; None outside torchrun

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0


def detect() -> DistInfo:
    """Read torchrun's environment variables; absent ones mean a single process."""
    try:
        info = DistInfo(rank=int(os.environ.get("RANK", 0)),
                        world_size=int(os.environ.get("WORLD_SIZE", 1)),
                        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                        restarts=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
                        job_id=os.environ.get("TORCHELASTIC_RUN_ID"))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE, LOCAL_RANK and TORCHELASTIC_RESTART_COUNT must be "
                         "integers (they are set by torchrun)") from None
    if not 0 <= info.rank < info.world_size:
        raise ValueError(f"RANK={info.rank} is outside WORLD_SIZE={info.world_size}")
    return info


def backend_for(device: torch.device) -> str:
    """nccl between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def init(info: DistInfo, device: torch.device) -> bool:
    """Join the process group when running under torchrun with more than one process.

    Returns:
        True when this call created the group (and `shutdown` should destroy it).
    """
    if not info.enabled or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True):
        dist.init_process_group(backend=backend_for(device), store=_attempt_store(info),
                                rank=info.rank, world_size=info.world_size)
    else:
        dist.init_process_group(backend=backend_for(device), rank=info.rank,
                                world_size=info.world_size)
    return True


def _attempt_store(info: DistInfo) -> dist.Store:
    """A key-value store of this torchrun attempt alone, for the process group's rendezvous.

    torchrun (2.13 included) hands every attempt of a job the same store (its agent's, at
    MASTER_ADDR:MASTER_PORT), so after a restart the ranks would read the dead attempt's
    addresses: gloo fails with "Connection refused" or hangs connecting (pytorch/pytorch
    #135712). Its restart count cannot scope the keys: each node's agent counts its own
    restarts. So rank 0 starts a store of its own and posts its port in the shared one; a
    rank that reads a dead attempt's post finds no server there and reads again (torchrun
    stops every old worker before it starts new ones).
    """
    shared, _, _ = next(dist.rendezvous("env://"))
    host = os.environ["MASTER_ADDR"]
    if info.rank == 0:
        store = dist.TCPStore(host, 0, info.world_size, is_master=True,
                              timeout=STORE_TIMEOUT, wait_for_workers=False)
        shared.set(ATTEMPT_STORE_KEY, str(store.port))
        return store
    deadline = time.monotonic() + STORE_TIMEOUT.total_seconds()
    while True:
        port = int(shared.get(ATTEMPT_STORE_KEY))
        try:
            store = dist.TCPStore(host, port, info.world_size, is_master=False,
                                  timeout=timedelta(seconds=2))
        except (RuntimeError, OSError):  # DistStoreError: nothing listens there (any more)
            if time.monotonic() > deadline:
                raise
            continue
        store.set_timeout(STORE_TIMEOUT)
        return store


def shutdown(created: bool, *, finished: bool) -> None:
    """Leave the process group that `init` created, after a run that finished.

    All ranks first meet at a barrier, so none tears its side down while rank 0 still
    writes checkpoints. After an error the group is left alone (the process is about to
    exit): the other ranks may be blocked in a collective, and destroying the group under
    them can hang (torchtitan destroys it only after a successful run for this reason).
    """
    if created and finished and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class PeerFailedError(RuntimeError):
    """Another rank failed to start; the message is that rank's error."""


def exchange(error: BaseException | None, value: Any) -> list[Any]:
    """Every rank's `value`, after checking that no rank failed (`error` not None).

    Called by every rank at the same point, also by one whose start-up raised (it passes
    its exception, then re-raises it). On the others, the lowest failed rank's error
    becomes a `PeerFailedError` naming it, so all ranks stop with the same line.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    reports: list[Any] = [None] * dist.get_world_size()
    message = None if error is None else str(error) or type(error).__name__
    dist.all_gather_object(reports, (message, value))
    failed = [(rank, text) for rank, (text, _) in enumerate(reports) if text is not None]
    if failed and error is None:
        rank, text = failed[0]
        raise PeerFailedError(f"rank {rank}: {text}")
    return [v for _, v in reports]


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when distributed, else `model` itself.

    DDP broadcasts rank 0's weights and buffers at construction, so the ranks start equal,
    and (broadcast_buffers=True) rank 0's BatchNorm statistics before every forward.
    BatchNorm's batch statistics are computed per rank, over the rank's share of the global
    batch, unless `sync_bn.convert` made them global first (`--sync-bn`).
    """
    if not info.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place (no-op in a single process); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
