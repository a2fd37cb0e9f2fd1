"""Backbones: the feature map of each stage, as `create_model(features_only=True)` gives them.

Every family names its stages (see `cnnzoo.models.base`): `forward_steps()`, `forward_features`
written as a chain of submodule names (`"conv1"`, `"layer1"`, `"features.4"`) which run one
after the other on the checked input, and `feature_info`, one `FeatureInfo` (module, channels,
reduction) per step whose output is a stage's feature map, declared beside the stages.

`FeatureExtractor` is the module `create_model(name, features_only=True, out_indices=...)`
returns: the stem and the stages up to the last selected one, holding the model's own modules
under their own names (so a full model's state dict loads into it, less the head), and returning
the selected feature maps as a list. The receptive field of each stage is computed by the one
engine, `cnnzoo.profile.receptive_field.feature_receptive_fields`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from cnnzoo.models.base import FeatureInfo, ZooModel, check_image


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
        missing = [i.module for i in info if i.module not in steps]
        if missing:
            raise ValueError(f"{model.name}: feature stages {missing} are not forward steps")
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
