"""The key mappings from torchvision / timm state dicts to cnnzoo models, as data.

Most families use the reference names already (`conv1`, `layer1.0.bn2`, `features.denseblock1`),
so their mapping is the identity. Where cnnzoo names a part differently, the mapping is an
ordered list of regular-expression rewrites from the reference key to the cnnzoo key, listed
here next to the model so that a reader can check it against both code bases.

This module builds no model (it imports nothing of the registry), so that both `convert`
(`from_torchvision`, `from_timm`) and the registry's `pretrained=` loading can use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

Rules = list[tuple[str, str]]

# GoogLeNet (torchvision form): BasicConv2d(conv, bn) -> ConvNormAct(0, 1). Everything else
# (conv1..3, inception3a.branch2.0, aux1.conv, aux1.fc1, fc) already has torchvision's name;
# e.g. aux1.conv.conv.weight -> aux1.conv.0.weight, inception3a.branch1.bn.bias ->
# inception3a.branch1.1.bias.
GOOGLENET_RULES: Rules = [
    (r"\.conv\.weight$", ".0.weight"),
    (r"\.bn\.", ".1."),
]

# EfficientNet (torchvision `features.i.j.block.k`) -> cnnzoo names.
EFFICIENTNET_RULES: Rules = [
    (r"^features\.0\.", "stem."),  # features.0.0.weight -> stem.0.weight
    (r"^features\.8\.", "head."),  # features.8.1.bias -> head.1.bias
    (r"^classifier\.1\.", "classifier."),  # Sequential(Dropout, Linear) -> Linear
    # Stage 1 has expand ratio 1 and so no expand conv: its sub-ops are block.0/1/2, not 1/2/3.
    (r"^(features\.1\.\d+)\.block\.0\.", r"\1.dw."),
    (r"^(features\.1\.\d+)\.block\.1\.", r"\1.se."),
    (r"^(features\.1\.\d+)\.block\.2\.", r"\1.project."),
    (r"^(features\.[2-7]\.\d+)\.block\.0\.", r"\1.expand."),
    (r"^(features\.[2-7]\.\d+)\.block\.1\.", r"\1.dw."),
    (r"^(features\.[2-7]\.\d+)\.block\.2\.", r"\1.se."),
    (r"^(features\.[2-7]\.\d+)\.block\.3\.", r"\1.project."),
    # features.1..7 are the MBConv stages (Table 1 stages 2-8); cnnzoo counts them from 0.
    *[(rf"^features\.{i}\.", f"stages.{i - 1}.") for i in range(1, 8)],
]

# torchvision name -> (cnnzoo name, builder options, key rewrites)
TORCHVISION: dict[str, tuple[str, dict, Rules]] = {
    "alexnet": ("alexnet", {}, []),
    **{f"vgg{d}{bn}": (f"vgg{d}{bn}", {}, []) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "googlenet": ("googlenet", {"torchvision_compat": True}, GOOGLENET_RULES),
    **{f"resnet{d}": (f"resnet{d}", {}, []) for d in (18, 34, 50, 101, 152)},
    **{f"densenet{d}": (f"densenet{d}", {}, []) for d in (121, 161, 169, 201)},
    **{f"efficientnet_b{i}": (f"efficientnet_b{i}", {}, EFFICIENTNET_RULES) for i in range(8)},
}

# timm name -> (cnnzoo name, builder options, key rewrites). timm's ResNet uses torchvision's
# names, and its SE module (`se.fc1`, `se.fc2`, 1x1 convs with bias) is cnnzoo's SqueezeExcite.
TIMM: dict[str, tuple[str, dict, Rules]] = {
    **{f"resnet{d}": (f"resnet{d}", {}, []) for d in (18, 34, 50, 101, 152)},
    **{f"seresnet{d}": (f"se_resnet{d}", {}, []) for d in (18, 34, 50, 101, 152)},
}



def convert_keys(state_dict: Mapping[str, torch.Tensor], rules: Rules) -> dict[str, torch.Tensor]:
    """Apply the ordered rewrites to every key."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def num_classes(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Output size of the classifier: the last 2-D weight in the state dict's order."""
    for key in reversed(list(state_dict)):
        value = state_dict[key]
        if key.endswith("weight") and value.dim() == 2:
            return value.shape[0]
    raise ValueError("state dict has no 2-D classifier weight to read the class count from")


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str) -> None:
    """`load_state_dict(strict=True)` with a one-line error that names the first mismatches."""
    check_strict(model, state_dict, what=what)
    model.load_state_dict(state_dict, strict=True)


def check_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Raise `load_strict`'s one-line ValueError unless every key and shape matches; loads
    nothing (so `model` may live on the meta device)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{what} does not fit {getattr(model, 'name', type(model).__name__)}: "
            f"{len(missing)} missing keys (first: {missing[:1]}), "
            f"{len(unexpected)} unexpected keys (first: {unexpected[:1]})"
        )
    for key, value in state_dict.items():
        if own[key].shape != value.shape:
            raise ValueError(
                f"{what} does not fit {getattr(model, 'name', type(model).__name__)}: "
                f"{key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
