"""An exponential moving average of a model's weights (Polyak & Juditsky 1992).

After each optimizer step, every floating-point entry of the state dict (parameters and
norm statistics, as timm's ModelEmaV2 does) moves towards the model's:
`ema = decay * ema + (1 - decay) * weights`. Early in training the average would be
dominated by the random initial weights, so the decay is capped at (1 + n) / (10 + n) after
n updates (TensorFlow's `ExponentialMovingAverage(num_updates=...)` rule). Integer entries
(BatchNorm's `num_batches_tracked`) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """The averaged copy of a model.

    Args:
        model: the model being trained (not modified).
        decay: weight of the old average per update, in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self._pairs: list | None = None

    def _tensor_pairs(self, model: nn.Module) -> list:
        """(floating EMA tensors, model tensors, integer EMA tensors, model tensors), built
        once: `state_dict()` every step would cost more Python time than the update."""
        if self._pairs is None:
            ema_sd, model_sd = self.module.state_dict(), model.state_dict()
            if list(ema_sd) != list(model_sd):
                raise ValueError("ModelEma: the model's state dict keys changed")
            ef, mf, ei, mi = [], [], [], []
            for key, e in ema_sd.items():
                m = model_sd[key]
                if e.is_floating_point():
                    ef.append(e)
                    mf.append(m.detach())
                else:
                    ei.append(e)
                    mi.append(m.detach())
            self._pairs = [ef, mf, ei, mi]
        return self._pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards `model`'s current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_float, model_float, ema_int, model_int = self._tensor_pairs(model)
        torch._foreach_lerp_(ema_float, model_float, 1.0 - d)  # e += (1 - d) * (m - e)
        for e, m in zip(ema_int, model_int, strict=True):
            e.copy_(m)

    def load(self, weights: dict, updates: int) -> None:
        """Restore an average saved as (`module.state_dict()`, `updates`)."""
        self.module.load_state_dict(weights)
        self.updates = int(updates)
