"""The training loss, with the auxiliary classifiers' terms where a model has them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


def make_criterion(model: nn.Module, label_smoothing: float):
    """(output, y) -> (main logits, loss). A tuple output (GoogLeNet in training) is
    (logits, aux logits...), and the loss adds `model.aux_weight` x each auxiliary loss
    (Szegedy et al. 2014, section 5: weight 0.3).

    Label smoothing is part of this training loss only; validation (`loop.evaluate`) and
    `cnnzoo eval` report plain cross-entropy."""
    aux_weight = getattr(model, "aux_weight", None)

    def criterion(output, y):
        if isinstance(output, tuple):
            if aux_weight is None:
                raise ValueError(f"{type(model).__name__} returned a tuple but has no "
                                 "aux_weight attribute to weigh its auxiliary outputs")
            logits, *aux = output
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            for a in aux:
                if a is not None:
                    loss = loss + aux_weight * F.cross_entropy(a, y,
                                                               label_smoothing=label_smoothing)
            return logits, loss
        return output, F.cross_entropy(output, y, label_smoothing=label_smoothing)

    return criterion
