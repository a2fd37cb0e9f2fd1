"""Optimizers: SGD with (Nesterov) momentum and AdamW, with no weight decay on norms and biases.

Weight decay on a BatchNorm scale or a bias does not regularise anything the next layer
cannot undo, and decaying a norm's scale towards 0 only fights the normalisation; the
practice comes from Goyal et al. 2017 ("Accurate, Large Minibatch SGD", arXiv:1706.02677,
section 5.1 applies it to weights only) and is the default in timm and nanoGPT, which decay
the parameters with >= 2 dimensions and nothing else. We use the same rule: a parameter is
decayed when it has two or more dimensions (conv and linear weights).

For fine-tuning, the backbone (a zoo model's `forward_features`) may learn at a fraction of the
head's rate (`backbone_lr_scale`): pretrained features need small corrections, a new
classifier a full-size start. Each group carries its "lr_scale", and the per-step schedule
multiplies every group's initial rate alike, so the ratio holds throughout training.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.train.config import TrainConfig
from cnnzoo.train.transfer import backbone_parameters


def param_groups(model: nn.Module, weight_decay: float, *,
                 backbone_lr_scale: float = 1.0) -> list[dict]:
    """Weights (decayed) and norms + biases (not decayed); the backbone apart when it learns
    at another rate.

    Args:
        model: the network; frozen parameters (requires_grad=False) are left out.
        weight_decay: coefficient of the weights' groups.
        backbone_lr_scale: when not 1, the parameters of `forward_features` (a zoo model's
            `forward_steps()` modules) get their own two groups with "lr_scale" set to it;
            the head's groups come first, with "lr_scale" 1.

    Returns:
        [decay, no_decay] or, with a backbone scale, [head decay, head no_decay,
        backbone decay, backbone no_decay] (empty groups left out).
    """
    backbone = set()
    if backbone_lr_scale != 1.0:
        backbone = backbone_parameters(model)
    groups = {(part, decayed): [] for part in ("head", "backbone") for decayed in (True, False)}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        part = "backbone" if id(param) in backbone else "head"
        groups[part, param.ndim >= 2].append(param)
    if not any(groups.values()):
        raise ValueError("optimizer: every parameter is frozen; nothing to train")
    return [{"params": params, "weight_decay": weight_decay if decayed else 0.0,
             "lr_scale": backbone_lr_scale if part == "backbone" else 1.0}
            for (part, decayed), params in groups.items()
            if params or (part == "head" and not backbone)]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` over `param_groups(model, ...)`, each group's learning
    rate `cfg.lr` x its "lr_scale" (the schedule then multiplies every group alike)."""
    groups = param_groups(model, cfg.weight_decay, backbone_lr_scale=cfg.backbone_lr_scale)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise ValueError(f"optimizer: expected sgd or adamw, got {cfg.optimizer!r}")
