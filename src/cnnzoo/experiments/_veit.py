"""What `lesion` and `paths` share (Veit, Wilber, Belongie 2016, arXiv:1605.06431): the CIFAR
ResNet they study and its plain twin, its residual blocks in order, deleting blocks at test
time, and a block split into its residual branch and its shortcut.

Nothing here judges a claim; the two experiment modules do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.experiments.base import Context
from cnnzoo.experiments.common import Splits, fit
from cnnzoo.models.resnet import BasicBlock
from cnnzoo.models.resnet_cifar import CifarResNet


def train_cifar_net(ctx: Context, splits: Splits, *, depth: int, width: int, shortcut: bool,
                    epochs: int, lr: float, batch_size: int, seed: int
                    ) -> tuple[CifarResNet, list[dict[str, Any]]]:
    """Build a CifarResNet (`shortcut=False`: its plain twin) for the splits' images and train
    it with the experiments' usual recipe (SGD, cosine schedule, weight decay 5e-4).

    The residual net and its plain twin have the same parameters, so with the same `seed` they
    also start from the same weights: the only difference is the identity paths.
    """
    torch.manual_seed(seed)
    model = CifarResNet(depth, num_classes=splits.num_classes, in_chans=splits.in_chans,
                        shortcut=shortcut, base_width=width)
    kind = "ResNet" if shortcut else "plain"
    ctx.log(f"training {kind}-{depth} (width {width}) for {epochs} epochs")
    model, rows = fit(ctx, model, splits, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                      schedule="cosine", weight_decay=5e-4)
    model.eval()
    ctx.log(f"{kind}-{depth}: val accuracy {rows[-1]['val_acc']:.4f}")
    return model, rows


def residual_blocks(model: CifarResNet) -> list[tuple[str, BasicBlock]]:
    """The blocks in forward order, named as in the state dict ("layer2.0", ...)."""
    return [(f"{stage}.{i}", block) for stage in ("layer1", "layer2", "layer3")
            for i, block in enumerate(getattr(model, stage))]


def is_downsampling(block: BasicBlock) -> bool:
    """True for a block that changes the map's size or channels (the first of layer2/layer3):
    it cannot become an identity."""
    return block.stride != 1 or block.conv1.in_channels != block.conv2.out_channels


class ShortcutOnly(nn.Module):
    """A deleted downsampling block of a ResNet: only its shortcut is left, as in Veit et al.

    The block computed relu(branch(x) + shortcut(x)); without the branch that is
    relu(shortcut(x)). The ReLU is kept for the formula's sake: x comes out of a ReLU and option
    A only subsamples it and appends zeros, so it changes nothing.
    """

    def __init__(self, block: BasicBlock):
        super().__init__()
        if block.downsample is None:
            raise ValueError("ShortcutOnly: expected a residual block with a shape-changing "
                             "shortcut (downsample), got one without")
        self.shortcut = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x))


def deletable(model: CifarResNet) -> list[str]:
    """Blocks that can be deleted: every block of a ResNet (a downsampling one keeps its
    shortcut), only the shape-preserving blocks of a plain net (a deleted downsampling layer
    of a plain net would leave nothing of the right shape)."""
    return [name for name, block in residual_blocks(model)
            if block.shortcut or not is_downsampling(block)]


@contextmanager
def deleted(model: CifarResNet, names: Sequence[str]) -> Iterator[CifarResNet]:
    """Within the block, `model` runs with the named blocks deleted, then gets them back.

    A shape-preserving block becomes the identity (relu(x) = x, since x is a ReLU's output); a
    ResNet's downsampling block keeps only its shortcut (`ShortcutOnly`). Nothing else changes:
    the other blocks' BatchNorm statistics stay as trained, as in the paper.

    Raises:
        ValueError: an unknown block name, or a downsampling block of a plain net.
    """
    blocks = dict(residual_blocks(model))
    unknown = [n for n in names if n not in blocks]
    if unknown:
        raise ValueError(f"deleted: unknown block {unknown[0]!r}; expected one of "
                         f"{', '.join(blocks)}")
    allowed = set(deletable(model))
    for name in names:
        if name not in allowed:
            raise ValueError(f"deleted: block {name!r} of a plain net changes the shape, so "
                             f"deleting it leaves nothing to compute; expected one of "
                             f"{', '.join(deletable(model))}")
    saved = []
    try:
        for name in names:
            stage, index = name.split(".")
            layer: nn.Sequential = getattr(model, stage)
            block = blocks[name]
            saved.append((layer, int(index), block))
            layer[int(index)] = ShortcutOnly(block) if is_downsampling(block) else nn.Identity()
        yield model
    finally:
        for layer, index, block in reversed(saved):
            layer[index] = block


@dataclass
class BlockParts:
    """One block's forward pass kept apart: out = relu(branch + shortcut), both functions of
    the leaf `x`, so a backward pass can take either path through the block."""

    x: torch.Tensor
    branch: torch.Tensor
    shortcut: torch.Tensor
    relu_mask: torch.Tensor


def block_parts(block: BasicBlock, x: torch.Tensor) -> tuple[BlockParts, torch.Tensor]:
    """Run a residual BasicBlock on a fresh leaf copy of `x`, keeping its branch and its
    shortcut as separate graph outputs. Returns the parts and the block's output (detached).

    The sum relu(branch + shortcut) is what `BasicBlock.forward` computes (tested).
    """
    if not block.shortcut:
        raise ValueError("block_parts: expected a residual block, got one without shortcut")
    leaf = x.detach().requires_grad_(True)
    out = block.relu(block.bn1(block.conv1(leaf)))
    out = block.bn2(block.conv2(out))
    if block.se is not None:
        out = block.se(out)
    out = block.drop_path(out)
    shortcut = leaf if block.downsample is None else block.downsample(leaf)
    total = out + shortcut
    return BlockParts(leaf, out, shortcut, total > 0), F.relu(total).detach()
