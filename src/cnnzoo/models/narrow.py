"""Narrower variants of two small zoo models, by name, for experiments that need a cheap point.

They are not registered (the registry holds the papers' models; every registered one has
golden counts): build one with `build_small_model(name, num_classes=, in_chans=)`, which also
takes any registry name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from cnnzoo.models.registry import create_model
from cnnzoo.models.resnet_cifar import CifarResNet

# Called with num_classes=, in_chans=.
NARROW_VARIANTS: dict[str, Callable[..., nn.Module]] = {
    # ResNet-8 with stages 16-32-64 (k = 1): a quarter of the default k = 2's MACs.
    "compact_resnet8_k1": functools.partial(create_model, "compact_resnet8", widen_factor=1),
    # CIFAR ResNet-20 at half width (stages 8-16-32): about a quarter of its MACs.
    "resnet20_w8": functools.partial(CifarResNet, 20, base_width=8),
}


def build_small_model(name: str, *, num_classes: int, in_chans: int) -> nn.Module:
    """A narrower variant of `NARROW_VARIANTS`, or the registry model `name`."""
    if name in NARROW_VARIANTS:
        return NARROW_VARIANTS[name](num_classes=num_classes, in_chans=in_chans)
    return create_model(name, num_classes=num_classes, in_chans=in_chans)
