"""Bring torchvision / timm state dicts into cnnzoo models through explicit key mappings.

The mappings themselves (per reference name: the cnnzoo model, its builder options and the key
rewrites) are data in `cnnzoo.models.keymap`; this module builds the model and loads strictly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from cnnzoo.models.keymap import (  # noqa: F401  (re-exported: the names callers import from here)
    EFFICIENTNET_RULES,
    GOOGLENET_RULES,
    TIMM,
    TORCHVISION,
    Rules,
    convert_keys,
    load_strict,
    num_classes,
)
from cnnzoo.models.registry import create_model


def from_torchvision(name: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A cnnzoo model holding a torchvision state dict, loaded strictly.

    The number of classes is read from the state dict's classifier. The model is returned in
    whatever mode `nn.Module` starts in (training); call `.eval()` for inference.
    """
    return _load("torchvision", TORCHVISION, name, state_dict)


def from_timm(name: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A cnnzoo model holding a timm state dict (e.g. `seresnet50`), loaded strictly."""
    return _load("timm", TIMM, name, state_dict)


def _load(source: str, table: dict, name: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    if name not in table:
        raise ValueError(
            f"from_{source}: no mapping for {name!r}; supported: {', '.join(sorted(table))}"
        )
    zoo_name, options, rules = table[name]
    options = dict(options)
    if zoo_name == "googlenet":
        options["aux_logits"] = any(k.startswith("aux1.") for k in state_dict)
    model = create_model(zoo_name, num_classes=num_classes(state_dict), **options)
    load_strict(model, convert_keys(state_dict, rules), what=f"{source} {name}")
    return model
