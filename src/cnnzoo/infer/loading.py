"""A trained model and what it needs to be fed: from a checkpoint or an exported safetensors file.

Whatever evaluates, predicts or exports goes through `load_model(path)`, which returns the
network in eval mode (so GoogLeNet returns plain logits, not its training-time tuple) and a
`ModelInfo` with the class names and the recorded `Preprocess`. The preprocessing is the
one training applied without augmentation: convert to the model's channel count, resize to
the recorded (H, W), scale to [0, 1] and normalise with the training split's mean/std.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from cnnzoo.checkpoint.info import ModelInfo, info_from_checkpoint, resolve_weights
from cnnzoo.checkpoint.safetensors_file import load_safetensors_model
from cnnzoo.checkpoint.torch_file import load_checkpoint, model_from_checkpoint


def load_model(path: str | os.PathLike, *, weights: str = "auto",
               device: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Load a trained model for inference, in eval mode.

    Args:
        path: a cnnzoo checkpoint (`best.pt`, `last.pt`) or a `.safetensors` file written by
            `cnnzoo export --format safetensors`.
        weights: for a checkpoint: "auto" (the weights validation used: the EMA when the run
            kept one), "model" or "ema". A safetensors file holds one set.
        device: where to put the model.

    Raises:
        CheckpointError: missing, truncated or foreign file (one line naming it).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        model, info = load_safetensors_model(path)
    else:
        ckpt = load_checkpoint(path)
        chosen = resolve_weights(ckpt, weights)
        model = model_from_checkpoint(ckpt, weights=chosen)
        info = info_from_checkpoint(ckpt, chosen, path)
    return model.to(device).eval(), info

