"""The meta device: a model's copy there, the input check, and shortcuts for its operators.

`meta_model` gives the profiler and the receptive-field tracker their throw-away copy of a
model (built on meta from a registry name, or copied with `meta_copy`); `check_input_shape`
is the one input check both apply.

Shortcuts: on the meta device a shape is all an operator has to produce.

Many operators have no C++ meta kernel: on meta tensors PyTorch runs their Python reference
decompositions, which do the full dtype, broadcasting and stride analysis in Python. For a
handful of operators the answer is known without that analysis, and they dominate a count:
batch-norm alone was 60% of a DenseNet-121 count, weight initialisation most of building
ResNet-1202. Both modes below answer only those cases and pass everything else through;
tests check they give the same shapes, strides, dtypes and byte counts as the slow path.

Autograd runs above a dispatch mode, so it records and saves exactly what it would; the
FLOP counter and the memory tracker see the tensors these shortcuts create.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnzoo.models import create_model
from cnnzoo.models.registry import get_builder

aten = torch.ops.aten

# Out-of-place operators whose output, for operands of one shape, dtype and layout, is a
# tensor like the first operand.
_LIKE_INPUT = {
    aten.relu.default, aten.silu.default, aten.sigmoid.default, aten.hardtanh.default,
    aten.hardswish.default, aten.hardsigmoid.default, aten.gelu.default, aten.tanh.default,
    aten.add.Tensor, aten.mul.Tensor, aten.sub.Tensor, aten.div.Tensor, aten.clone.default,
    aten.leaky_relu.default, aten.elu.default,
}
# In-place operators that change values only (never shape or layout): on meta, no-ops.
_VALUES_ONLY_INPLACE = {
    aten.relu_.default, aten.silu_.default, aten.sigmoid_.default, aten.hardtanh_.default,
    aten.hardswish_.default, aten.leaky_relu_.default, aten.add_.Tensor, aten.mul_.Tensor,
    aten.normal_.default, aten.uniform_.default, aten.fill_.Scalar, aten.zero_.default,
    aten.erfinv_.default, aten.clamp_.default, aten.mul_.Scalar, aten.add_.Scalar,
    aten.div_.Scalar, aten.sub_.Scalar, aten.copy_.default, aten.exponential_.default,
    aten.bernoulli_.float,
}


class MetaShortcuts(TorchDispatchMode):
    """Answer batch-norm and same-shape elementwise operators on meta tensors directly."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if args and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta":
            if func is aten.native_batch_norm.default:
                return _batch_norm(args[0])
            if func in _VALUES_ONLY_INPLACE and _same_layout(args, kwargs):
                return args[0]
            if func in _LIKE_INPUT and _same_layout(args, kwargs):
                return torch.empty_like(args[0])
        return func(*args, **kwargs)


def _batch_norm(x: torch.Tensor):
    """What the decomposition gives on meta: output like x, per-channel mean and inv. std."""
    stats = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    channels = x.shape[1]
    return (torch.empty_like(x), x.new_empty((channels,), dtype=stats),
            x.new_empty((channels,), dtype=stats))


def _same_layout(args, kwargs) -> bool:
    """A contiguous (or channels-last) floating-point first operand, and every other tensor
    operand of its shape, dtype and strides (no broadcasting, no type promotion: those take
    the slow path)."""
    first = args[0]
    if not first.dtype.is_floating_point or not (
        first.is_contiguous() or first.is_contiguous(memory_format=torch.channels_last)
    ):
        return False
    for a in (*args[1:], *kwargs.values()):
        if isinstance(a, torch.Tensor) and (
            a.shape != first.shape or a.dtype != first.dtype or a.stride() != first.stride()
            or a.device != first.device
        ):
            return False
    return True


def check_input_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """(N, C, H, W) from a 4- or 3-element shape of positive ints, else one-line ValueError."""
    shape = tuple(shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ValueError(f"input shape: expected (N, C, H, W) or (C, H, W) ints, got {shape}")
    if shape[0] < 1:
        raise ValueError(f"batch size must be >= 1, got {shape[0]} in input shape {shape}")
    if min(shape[1:]) < 1:
        raise ValueError(f"input shape: expected positive C, H, W, got {shape}")
    return shape


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers live on the meta device.

    The copy is made without copying any data: `deepcopy` is handed, through its memo, a
    meta twin for every parameter and buffer. The original is not touched.
    """
    memo: dict[int, torch.Tensor] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) in memo:
            continue
        twin = torch.empty_like(t, device="meta")
        if isinstance(t, nn.Parameter):
            twin = nn.Parameter(twin, requires_grad=t.requires_grad)
        memo[id(t)] = twin
    return copy.deepcopy(model, memo)


def meta_model(model_or_name: nn.Module | str, in_chans: int, *, caller: str
               ) -> tuple[str, nn.Module]:
    """(name, a disposable meta-device model): built on meta from a registry name, or a
    `meta_copy` of a module; `caller` names the function in the error for anything else.

    Raises:
        ValueError: an unknown name (listing the closest ones).
        TypeError: neither a module nor a name.
    """
    if isinstance(model_or_name, str):
        get_builder(model_or_name)  # unknown name: ValueError listing the closest ones
        try:
            # MetaShortcuts turns weight initialisation into no-ops: meta tensors hold no values.
            with torch.device("meta"), MetaShortcuts():
                return model_or_name, create_model(model_or_name, in_chans=in_chans)
        except NotImplementedError:  # an initialiser without a meta kernel: build, then copy
            return model_or_name, meta_copy(create_model(model_or_name, in_chans=in_chans))
    if not isinstance(model_or_name, nn.Module):
        raise TypeError(f"{caller}: expected an nn.Module or a model name, got "
                        f"{type(model_or_name).__name__}")
    name = getattr(model_or_name, "name", None) or type(model_or_name).__name__
    return str(name), meta_copy(model_or_name)
