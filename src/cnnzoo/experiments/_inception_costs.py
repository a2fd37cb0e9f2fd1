"""The cost of an Inception module with and without its 1x1 reductions (Szegedy et al. 2015,
Fig. 2a against 2b, with Table 1's widths): the modules, their closed-form weight counts, a
stack of Table 1's nine, and the parameters and MACs `cnnzoo.profile` counts for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from torch import nn

from cnnzoo.layers import ConvNormAct
from cnnzoo.models.inception_blocks import (
    GOOGLENET_TABLE_1,
    Inception,
    InceptionSpec,
    NaiveInception,
)
from cnnzoo.profile import profile

ConvBlock = partial(ConvNormAct, norm_layer=None)  # the paper's conv: bias + ReLU, no norm


def inception_module(in_chs: int, spec: InceptionSpec, *, naive: bool,
                     conv_block: Any = ConvBlock) -> nn.Module:
    """The naive (Fig. 2a) or reduced (Fig. 2b) module with 5x5 kernels, as the paper."""
    if naive:
        return NaiveInception(in_chs, spec, conv_block)
    return Inception(in_chs, spec, conv_block, kernel_5x5=5)


def inception_weights(in_chs: int, spec: InceptionSpec, *, naive: bool) -> int:
    """Conv weights (biases excluded) of one module, in closed form; MACs = this x H x W."""
    if naive:
        return in_chs * (spec.ch1x1 + 9 * spec.ch3x3 + 25 * spec.ch5x5)
    return (in_chs * (spec.ch1x1 + spec.ch3x3red + spec.ch5x5red + spec.pool_proj)
            + 9 * spec.ch3x3red * spec.ch3x3 + 25 * spec.ch5x5red * spec.ch5x5)


def inception_stack(*, naive: bool, rows: Iterable[str] = tuple(GOOGLENET_TABLE_1),
                    in_chs: int = 192) -> nn.Sequential:
    """Table 1's modules in order, with GoogLeNet's max-pools before 4a and 5a."""
    layers: list[nn.Module] = []
    for row in rows:
        if row in ("4a", "5a"):
            layers.append(nn.MaxPool2d(3 if row == "4a" else 2, 2, ceil_mode=True))
        module = inception_module(in_chs, GOOGLENET_TABLE_1[row], naive=naive)
        layers.append(module)
        in_chs = module.out_channels
    return nn.Sequential(*layers)


def cost_table() -> dict[str, dict[str, Any]]:
    """Parameters and MACs (one 192 x 28 x 28 input) of the naive and reduced versions of
    module 3a, of stage 3 (3a, 3b) and of all nine modules, counted by `cnnzoo.profile`."""
    scopes = {"module 3a": ("3a",), "stage 3 (3a-3b)": ("3a", "3b"),
              "all nine (3a-5b)": tuple(GOOGLENET_TABLE_1)}
    table = {}
    for scope, rows in scopes.items():
        entry: dict[str, Any] = {}
        for variant in ("naive", "reduced"):
            stack = inception_stack(naive=variant == "naive", rows=rows)
            report = profile(stack, (1, 192, 28, 28))
            entry[variant] = {"params": report.params, "macs": report.macs,
                              "out_channels": stack[-1].out_channels}
        entry["params_ratio"] = entry["naive"]["params"] / entry["reduced"]["params"]
        entry["macs_ratio"] = entry["naive"]["macs"] / entry["reduced"]["macs"]
        table[scope] = entry
    return table
