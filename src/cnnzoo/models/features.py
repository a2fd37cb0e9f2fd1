"""Backbones: the feature map of each stage, and what each stage sees.

Every family names its stages with two methods of `ZooModel`:

- `forward_steps()`: `forward_features` written as a chain of submodule names (`"conv1"`,
  `"layer1"`, `"features.4"`), which run one after the other on the checked input;
- `feature_stages()`: the steps whose output is a stage's feature map, with its channels.

From those, `feature_info(model)` gives one `FeatureInfo` per stage: the module name, the
channels, the reduction (total stride: input side / map side) and the theoretical receptive
field in input pixels, and `FeatureExtractor` is the module `create_model(name,
features_only=True, out_indices=...)` returns: the stem and the stages up to the last selected
one, holding the model's own modules under their own names (so a full model's state dict loads
into it, less the head), and returning the selected feature maps as a list.

Receptive field and reduction follow kernel, stride and dilation (padding moves the field,
it does not grow it) along the height axis (every kernel in the zoo is square): a layer with
kernel k, stride s and dilation d takes (rf, jump) to (rf + (k - 1) d jump, jump s), where
jump is the stride accumulated so far (Araujo, Norris, Sim 2019, "Computing Receptive Fields of
Convolutional Neural Networks", Distill, eq. 1-2). Branches are followed by tracing each step
with `torch.fx`: concatenations and residual additions take the largest field of their inputs.
Two rules to know:
- Squeeze-and-excitation (SE-ResNet, EfficientNet) multiplies each channel by a gate computed
  from the global average of the whole map, so strictly every unit after the first SE block
  depends on the whole image. The field reported is that of the convolutional path, as in the
  literature; the gate is a per-channel scalar, not a spatial window.
- A deformable convolution counts with its nominal (offset-free) grid; its real field depends
  on the input.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from cnnzoo.layers import DeformConv2d
from cnnzoo.models.base import ZooModel, check_image


@dataclass(frozen=True)
class FeatureInfo:
    """One stage's feature map.

    Attributes:
        module: name of the submodule whose output is the map (`"layer2"`, `"features.8"`).
        num_chs: channels of the map.
        reduction: total stride; the map's side is the input's divided by it (see the rounding
            rule of each family: padded layers round up, VGG/DenseNet pools round down).
        receptive_field: theoretical receptive field of one unit, in input pixels (a side).
    """

    module: str
    num_chs: int
    reduction: int
    receptive_field: int


# Layers with a spatial extent that `_grow` does not follow: meeting one is an error, not a
# silently wrong number.
_UNFOLLOWED_MODULES = (
    nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample,
    nn.Fold, nn.Unfold, nn.Flatten, nn.Linear,
)
_UNFOLLOWED_FUNCTIONS = {
    F.conv2d, F.conv_transpose2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate, F.unfold, F.fold, F.grid_sample, torch.conv2d,
    torch.flatten,
}


class _Tracer(fx.Tracer):
    """torch.nn layers and deformable convs stay whole; every other module is traced through."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, DeformConv2d) or super().is_leaf_module(m, module_qualified_name)


def _first(value: int | Sequence[int]) -> int:
    return value if isinstance(value, int) else value[0]


def _grow_leaf(m: nn.Module, rf: int, jump: int) -> tuple[int, int]:
    if isinstance(m, (nn.Conv2d, DeformConv2d)):
        k, s, d = m.kernel_size[0], m.stride[0], m.dilation[0]
    elif isinstance(m, nn.MaxPool2d):
        k, s, d = _first(m.kernel_size), _first(m.stride), _first(m.dilation)
    elif isinstance(m, nn.AvgPool2d):
        k, s, d = _first(m.kernel_size), _first(m.stride), 1
    elif isinstance(m, _UNFOLLOWED_MODULES):
        raise ValueError(f"receptive field: cannot follow {type(m).__name__} layers")
    else:
        return rf, jump  # pointwise, or across channels only (norms, activations, LRN)
    return rf + (k - 1) * d * jump, jump * s


def _grow(module: nn.Module, rf: int, jump: int) -> tuple[int, int]:
    """(receptive field, jump) after `module`, given those of its input."""
    tracer = _Tracer()
    if tracer.is_leaf_module(module, ""):
        return _grow_leaf(module, rf, jump)
    graph = tracer.trace(module)
    env: dict[fx.Node, tuple[int, int]] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            env[node] = (rf, jump)  # every step takes one tensor
            continue
        if node.op == "output":
            return env[node.args[0]]
        inputs = [env[n] for n in node.all_input_nodes if n in env]
        if not inputs:
            continue  # a constant or a parameter, not derived from the input
        # Concatenation, addition, gating: each output unit sees the union of its inputs'
        # fields, centred alike, i.e. the largest.
        merged = (max(i[0] for i in inputs), max(i[1] for i in inputs))
        if node.op == "call_module":
            merged = _grow_leaf(module.get_submodule(node.target), *merged)
        elif node.op == "call_function" and node.target in _UNFOLLOWED_FUNCTIONS:
            raise ValueError(f"receptive field: cannot follow {node.target.__name__}")
        elif node.target is operator.getitem and isinstance(node.args[1], tuple):
            # x[:, :, ::s, ::s] (the CIFAR ResNet's option-A shortcut) subsamples by s.
            index = node.args[1]
            if len(index) > 2 and isinstance(index[2], slice) and index[2].step:
                merged = (merged[0], merged[1] * index[2].step)
        env[node] = merged
    raise AssertionError("an fx graph ends with an output node")


def feature_info(model: ZooModel) -> list[FeatureInfo]:
    """One `FeatureInfo` per stage of `model`, in forward order (works on the meta device)."""
    stages = dict(model.feature_stages())
    rf, jump = 1, 1
    info = []
    for step in model.forward_steps():
        rf, jump = _grow(model.get_submodule(step), rf, jump)
        if step in stages:
            info.append(FeatureInfo(step, stages[step], jump, rf))
    if len(info) != len(stages):
        missing = sorted(set(stages) - {i.module for i in info})
        raise ValueError(f"{model.name}: feature stages {missing} are not forward steps")
    return info


def select_stages(name: str, info: Sequence[FeatureInfo],
                  out_indices: Sequence[int] | None) -> tuple[int, ...]:
    """The stage indices `out_indices` names (all when None), as non-negative ints.

    Raises:
        ValueError: an index out of range, repeated or out of order, or an empty selection;
            the message names the model and the valid range.
    """
    n = len(info)
    if out_indices is None:
        return tuple(range(n))
    stages = ", ".join(f"{i}: {s.module}" for i, s in enumerate(info))
    valid = f"expected increasing indices in 0..{n - 1} (or -{n}..-1) of its {n} stages ({stages})"
    given = tuple(out_indices) if isinstance(out_indices, (tuple, list)) else (out_indices,)
    if not given or not all(isinstance(i, int) and not isinstance(i, bool) for i in given):
        raise ValueError(f"{name}: out_indices {out_indices!r}: {valid}")
    if any(not -n <= i < n for i in given):
        raise ValueError(f"{name}: out_indices {given} out of range: {valid}")
    indices = tuple(i % n for i in given)
    if any(b <= a for a, b in itertools.pairwise(indices)):
        raise ValueError(f"{name}: out_indices {given} repeat or are out of order: {valid}")
    return indices


def _prune(module: nn.Module, paths: Sequence[str]) -> dict[str, nn.Module]:
    """The children of `module` that `paths` run, by name. A child that runs only in part (the
    first layers of VGG's `features`) becomes a new `nn.Sequential` of just those parts under
    their own names, so the state-dict keys stay those of the full model."""
    used: dict[str, list[str]] = {}
    for path in paths:
        head, _, rest = path.partition(".")
        used.setdefault(head, []).append(rest)
    kept: dict[str, nn.Module] = {}
    for head, rests in used.items():
        child = module.get_submodule(head)
        if "" in rests:
            kept[head] = child
        else:
            part = nn.Sequential()
            for name, sub in _prune(child, rests).items():
                part.add_module(name, sub)
            kept[head] = part
    return kept


class FeatureExtractor(nn.Module):
    """The stem and stages of a zoo model; `forward` returns the selected stages' maps.

    It holds the model's own modules (shared, not copied) up to the last selected stage, under
    their names in the model, and nothing after it: no classifier, no head conv.

    Args:
        model: a zoo model; `create_model(..., features_only=True)` builds it without a
            classifier (`num_classes=0`) before handing it here.
        out_indices: indices into `model.feature_info` (increasing; negative counts from the
            end); None selects every stage.

    Attributes:
        feature_info: the selected stages' `FeatureInfo`, in the order of the outputs.
        out_indices: the selected indices, non-negative.
    """

    def __init__(self, model: ZooModel, out_indices: Sequence[int] | None = None):
        super().__init__()
        info = model.feature_info
        self.out_indices = select_stages(model.name, info, out_indices)
        self.feature_info = [info[i] for i in self.out_indices]
        self.name = model.name
        self.family = model.family
        self.input_size = model.input_size
        # The whole network's minimum (eval mode): fewer stages may accept less.
        self.min_input_size = model.min_input_size
        steps = model.forward_steps()
        last = steps.index(self.feature_info[-1].module)
        self._steps = tuple(steps[:last + 1])
        self._outputs = frozenset(i.module for i in self.feature_info)
        for name, module in _prune(model, self._steps).items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_image(self.name, self.input_size[0], self.min_input_size, x)
        features = []
        for step in self._steps:
            x = self.get_submodule(step)(x)
            if step in self._outputs:
                features.append(x)  # N x num_chs x ~H/reduction x ~W/reduction
        return features

    def extra_repr(self) -> str:
        return f"name={self.name!r}, out_indices={self.out_indices}"
