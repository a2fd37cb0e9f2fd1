"""Data-parallel training under torchrun: detection, process group, DDP, metric reduction.

`torchrun --nproc_per_node=N -m cnnzoo train ...` starts N copies of the same command and
sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT) in each one's environment. Each
process then joins one process group (gloo on CPU, nccl on CUDA, one GPU per process),
wraps the model in DistributedDataParallel, which averages the gradients of all ranks in
backward, and reads its own shard of every global batch. Only rank 0 writes files.
Without those variables (or with WORLD_SIZE=1) all of this is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

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
                        local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers "
                         "(they are set by torchrun)") from None
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
    dist.init_process_group(backend=backend_for(device), rank=info.rank,
                            world_size=info.world_size)
    return True


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


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when distributed, else `model` itself.

    DDP broadcasts rank 0's weights and buffers at construction, so the ranks start equal,
    and (broadcast_buffers=True) rank 0's BatchNorm statistics before every forward.
    BatchNorm's batch statistics are still computed per rank, over the rank's share of
    the global batch.
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
