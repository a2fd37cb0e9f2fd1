"""The SE gates of a trained network: where they sit, what they output per image, and how
much of that the class explains (eta^2 against a label-shuffled chance level).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from cnnzoo.data import ImageDataset, normalize
from cnnzoo.models.resnet import BasicBlock


def se_blocks(model: nn.Module, *, with_gate: bool = True) -> dict[str, BasicBlock]:
    """The model's BasicBlocks by module name, in forward order (only those with an SE gate
    unless `with_gate` is False)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, BasicBlock) and (m.se is not None or not with_gate)}


@torch.no_grad()
def collect_gates(model: nn.Module, data: ImageDataset, *,
                  batch_size: int = 500) -> dict[str, torch.Tensor]:
    """The excitation (sigmoid output) of every SE block on every image of `data`.

    Returns:
        block name -> (N, C) gates in [0, 1], rows in the order of `data`.
    """
    blocks = se_blocks(model)
    if not blocks:
        raise ValueError("collect_gates: the model has no SE gates")
    gates: dict[str, list[torch.Tensor]] = {name: [] for name in blocks}
    hooks = [block.se.gate.register_forward_hook(
        lambda _m, _inp, out, name=name: gates[name].append(out.flatten(1).clone()))
        for name, block in blocks.items()]
    model.eval()
    try:
        for start in range(0, len(data), batch_size):
            model(normalize(data.images[start:start + batch_size].float(), data.mean, data.std))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts) for name, parts in gates.items()}


def class_means(gates: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean gate per class and channel, (num_classes, C); NaN rows for absent classes."""
    out = torch.full((num_classes, gates.shape[1]), math.nan, dtype=torch.float64)
    for k in range(num_classes):
        rows = gates[labels == k]
        if len(rows):
            out[k] = rows.double().mean(0)
    return out


def class_specificity(gates: torch.Tensor, labels: torch.Tensor) -> float:
    """eta^2: the fraction of the gates' variance over images that the class explains,
    summed over channels: sum_c sum_k n_k (m_kc - m_c)^2 / sum_c sum_i (g_ic - m_c)^2.

    0 when every class has the same mean gate, 1 when the gate depends on the class alone;
    0 for constant gates (nothing to explain).
    """
    g = gates.double()
    centred = g - g.mean(0)
    total = float((centred ** 2).sum())
    if total == 0.0:
        return 0.0
    between = 0.0
    for k in labels.unique():
        rows = centred[labels == k]
        between += len(rows) * float((rows.mean(0) ** 2).sum())
    return between / total


def shuffled_specificity(gates: torch.Tensor, labels: torch.Tensor, *, seed: int,
                         repeats: int = 5) -> float:
    """eta^2 with the labels permuted (mean over `repeats` permutations): the chance level."""
    gen = torch.Generator().manual_seed(seed)
    values = [class_specificity(gates, labels[torch.randperm(len(labels), generator=gen)])
              for _ in range(repeats)]
    return float(np.mean(values))


def stage_of(block_name: str) -> int:
    """1 for "layer1.0", 3 for "layer3.2"."""
    return int(block_name.split(".")[0].removeprefix("layer"))


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    def ranks(v: list[float]) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in set(v):  # ties share their mean rank
            idx = [i for i, w in enumerate(v) if w == value]
            r[idx] = r[idx].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def fig6_blocks(blocks: list[str]) -> list[str]:
    """The last block of the first stage, of the middle stage and of the last stage."""
    last_of = {}
    for b in blocks:
        last_of[stage_of(b)] = b
    stages = sorted(last_of)
    return list(dict.fromkeys([last_of[stages[0]], last_of[stages[len(stages) // 2]],
                               last_of[stages[-1]]]))
