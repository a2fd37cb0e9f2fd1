"""Optimizers: SGD with (Nesterov) momentum and AdamW, with no weight decay on norms and biases.

Weight decay on a BatchNorm scale or a bias does not regularise anything the next layer
cannot undo, and decaying a norm's scale towards 0 only fights the normalisation; the
practice comes from Goyal et al. 2017 ("Accurate, Large Minibatch SGD", arXiv:1706.02677,
section 5.1 applies it to weights only) and is the default in timm and nanoGPT, which decay
the parameters with >= 2 dimensions and nothing else. We use the same rule: a parameter is
decayed when it has two or more dimensions (conv and linear weights).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.train.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: weights (decayed) and norms + biases (not decayed).

    Args:
        model: the network; frozen parameters (requires_grad=False) are left out.
        weight_decay: coefficient of the first group.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` over `param_groups(model, cfg.weight_decay)`."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise ValueError(f"optimizer: expected sgd or adamw, got {cfg.optimizer!r}")
