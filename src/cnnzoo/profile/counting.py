"""Counting without computing: parameters, MACs per layer and tensor sizes on the meta device.

A tensor on PyTorch's `meta` device has a shape and a dtype but no data, so a forward pass
over a meta copy of a model runs every operator's shape logic and nothing else: VGG-19 at
600x600 counts in a fraction of a second and allocates nothing.

Counting rule (the one behind torchvision's "GFLOPS" column, which is really GMACs): the
MACs are `torch.utils.flop_counter.FlopCounterMode`'s FLOPs / 2 for one eval-mode forward.
FlopCounterMode counts convolutions (`2 x out elements x C_in/groups x kh x kw`), linear
layers and matrix products (`addmm`, `mm`, `bmm`, `baddbmm`) and attention; bias additions,
batch-norm, activations, pooling, residual additions, concatenation and the SE rescaling
count 0, as does any custom operator it does not know. Only the forward pass is counted:
FlopCounterMode overcounts the backward of grouped convolutions by the factor `groups`.

Operators without a C++ meta kernel (batch-norm, elementwise ops) run Python decompositions
on meta, slower than the counting itself; `meta.MetaShortcuts` answers the common cases
directly (they count 0 MACs either way).

Per-layer rows take their MACs from FlopCounterMode's own module hierarchy
(`get_flop_counts()`); forward hooks on the throw-away meta copy only record output shapes
and sizes.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from cnnzoo.profile.memory import LiveActivations, saved_for_backward_bytes
from cnnzoo.profile.meta import MetaShortcuts
from cnnzoo.profile.meta import meta_copy as meta_copy  # its home before meta.py
from cnnzoo.profile.report import LayerRow


@dataclass(frozen=True)
class ForwardCount:
    """What one meta forward pass gives (see `count_forward`)."""

    macs: int
    layers: tuple[LayerRow, ...]
    activation_bytes: int


def parameter_stats(model: nn.Module) -> tuple[int, int, int, int]:
    """(params, trainable params, parameter bytes, buffer bytes); shared tensors once."""
    params = list(model.parameters())  # `parameters()` already skips shared duplicates
    n = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    p_bytes = sum(p.numel() * p.element_size() for p in params)
    b_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    return n, trainable, p_bytes, b_bytes


def count_forward(model: nn.Module, x: torch.Tensor) -> ForwardCount:
    """MACs, per-layer rows and the activation peak of one eval-mode forward of `x`.

    `model` must be a disposable copy (e.g. from `meta.meta_copy`): it is put in eval mode and
    carries hooks for the duration of the call.
    """
    model.eval()
    # path -> [output shape of first call, output bytes, calls, order of first return]
    records: dict[str, list] = {}
    clock = itertools.count()
    handles: list[RemovableHandle] = []
    for path, module in model.named_modules():
        records[path] = [None, 0, 0, -1]
        handles.append(module.register_forward_hook(_recorder(records[path], clock)))
    exclude = [*model.parameters(), *model.buffers(), x]
    try:
        with (
            paused_gc(),
            torch.no_grad(),
            # The last mode entered sees each operator first. The shortcuts answer the
            # operators that count 0 before the counter spends time on them; the memory
            # tracker, at the bottom, sees every tensor made, the shortcuts' included.
            LiveActivations(exclude=exclude) as live,
            FlopCounterMode(display=False) as counter,
            MetaShortcuts(),
        ):
            model(x)
    finally:
        for h in handles:
            h.remove()

    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__  # FlopCounterMode names modules "<RootClass>.<path>"
    modules = list(model.named_modules())
    own = {path: sum(p.numel() for p in m.parameters(recurse=False)) for path, m in modules}
    subtree = dict(own)  # parameters below each module: own ones added to every ancestor
    for path, n in own.items():
        parts = path.split(".") if path else []
        for i in range(len(parts)):
            subtree[".".join(parts[:i])] += n
    rows = []
    for path, module in modules:
        shape, out_bytes, calls, order = records[path]
        key = f"{root}.{path}" if path else root
        rows.append(
            LayerRow(
                path=path,
                type=type(module).__name__,
                depth=0 if not path else path.count(".") + 1,
                output_shape=shape,
                params=subtree[path],
                own_params=own[path],
                macs=flops.get(key, 0) // 2,
                output_bytes=out_bytes,
                calls=calls,
                is_leaf=next(module.children(), None) is None,
                order=order,
            )
        )
    total_macs = counter.get_total_flops() // 2
    return ForwardCount(macs=total_macs, layers=tuple(rows), activation_bytes=live.peak_bytes)


def train_saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one train-mode forward of a disposable copy."""
    model.train()
    with paused_gc(), MetaShortcuts():
        return saved_for_backward_bytes(model, x)


@contextlib.contextmanager
def paused_gc():
    """Pause Python's cyclic garbage collector for a meta pass, as `timeit` does.

    A pass creates many short-lived Python objects; a collection triggered in the middle
    walks the caller's whole heap and can cost more than the pass itself (3x on ResNet-50
    after other models were built in the same process).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _recorder(record: list, clock: itertools.count):
    def hook(module: nn.Module, inputs, output) -> None:
        tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        if record[2] == 0:
            record[3] = next(clock)
            if tensors:
                record[0] = tuple(tensors[0].shape)
        record[1] += sum(t.numel() * t.element_size() for t in tensors)
        record[2] += 1

    return hook
