"""Memory: activation sizes on the meta device, and measured peaks on a real device.

Three figures, three methods:

- **Inference activations** (`LiveActivations`): the peak of the bytes held by the tensors a
  forward pass creates, tracked on the meta device. A `TorchDispatchMode` sees every
  operator's outputs; each new storage is counted when it appears and uncounted when it
  dies (a `weakref.finalize` on the storage; PyTorch keeps one Python object per storage,
  so the finaliser fires exactly when the last tensor viewing it goes). Views and in-place
  results share a storage and are counted once; parameters, buffers and the input are
  excluded.
- **Training activations** (`saved_for_backward_bytes`): the bytes autograd keeps for the
  backward pass, read from `torch.autograd.graph.saved_tensors_hooks` in a train-mode
  forward on the meta device, each storage once, weights and input excluded. This is what a
  training step really has to hold, which estimates from layer outputs are not (they differ
  from it by up to 4.7x on DenseNet-121, see tests/fixtures/reference/README.md).
- **Measured peak** (`measure_peak_bytes`): on CUDA, `torch.cuda.max_memory_allocated`
  after `reset_peak_memory_stats`. On CPU there is no such counter, so the peak comes from
  the allocator itself: under `torch.profiler` with `profile_memory=True`, PyTorch's CPU
  allocator reports every allocation and free (address, size) as it happens. Walking those
  events in time order and keeping the running sum gives the exact peak of what PyTorch
  allocated during the call, to the byte, including the workspaces that operators allocate
  through it (im2col buffers, oneDNN weight reorders). Memory that a library mallocs behind
  PyTorch's back is not seen. Tensor-lifetime tracking with a dispatch mode was the other
  choice; it sees operator outputs only, not those workspaces, so it would under-report.
  The peak is reported as the bytes already resident when the call starts (weights,
  buffers, optimizer state, gradients, the input batch: `resident_bytes`) plus the largest
  growth of allocations during the call.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata  # address of the StorageImpl: unique while it lives


class LiveActivations(TorchDispatchMode):
    """Track the bytes of live tensors created by operators inside the context.

    Attributes after exit: `peak_bytes` (largest total at any moment) and `live_bytes`
    (what was still alive on exit, e.g. the output).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._exclude = {_storage_key(t) for t in exclude}
        self._sizes: dict[int, int] = {}
        self._finalizers: list[weakref.finalize] = []
        self.live_bytes = 0
        self.peak_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        if t.is_sparse or t.is_nested:
            return  # no single dense storage to follow
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._exclude:
            return
        size = storage.nbytes()
        old = self._sizes.get(key)
        if old is None:
            self._finalizers.append(weakref.finalize(storage, self._free, key))
            old = 0
        if size > old:  # new, or resized in place by an `out=` kernel
            self._sizes[key] = size
            self.live_bytes += size - old
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def _free(self, key: int) -> None:
        self.live_bytes -= self._sizes.pop(key, 0)

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        for fin in self._finalizers:  # tensors outliving the pass must not call back later
            fin.detach()
        self._finalizers.clear()
        return result


def saved_for_backward_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves in one forward of `model` on `x`.

    Weights, buffers and `x` itself are excluded (they exist without the forward).
    """
    exclude = {_storage_key(t) for t in (*model.parameters(), *model.buffers(), x)}
    saved: dict[int, int] = {}
    keep: list = []  # holding the storages keeps their addresses (our keys) unique

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in exclude and key not in saved:
            saved[key] = storage.nbytes()
            keep.append(storage)
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(saved.values())


def resident_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind `tensors` (None entries are skipped)."""
    sizes = {}
    for t in tensors:
        if t is not None:
            sizes[_storage_key(t)] = t.untyped_storage().nbytes()
    return sum(sizes.values())


def measure_peak_bytes(fn: Callable[[], object], device: torch.device | str) -> int:
    """Peak growth of allocated bytes on `device` while `fn()` runs (exact; see module doc).

    Add `resident_bytes` of what was alive before the call for the absolute peak. On CUDA the
    growth is `max_memory_allocated` minus `memory_allocated` at the start.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        raise ValueError(f"measure_peak_bytes: expected a cpu or cuda device, got {device}")
    return _cpu_peak_growth(fn)


def _cpu_peak_growth(fn: Callable[[], object]) -> int:
    prof = torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # Kineto prints "profiler_start/stop" lines on fd 2
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        fields = node.typed[1]
        if type(fields).__name__ == "_ExtraFields_Allocation" and fields.device.type == "cpu":
            events.append((node.start_time_ns, fields.ptr, fields.alloc_size))
    events.sort(key=lambda e: e[0])
    live: dict[int, int] = {}
    total = peak = 0
    for _, ptr, size in events:
        if size > 0:
            live[ptr] = live.get(ptr, 0) + size
            total += size
            peak = max(peak, total)
        elif ptr in live:  # a free of memory allocated before the call is not ours
            total -= live.pop(ptr)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ logging) for the duration; Python errors still raise."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
