"""The checkpoint format, below `train` and `infer`: both import it, neither imports the other.

- `torch_file`: the checkpoint dict (`best.pt`, `last.pt`), saved atomically, loaded with
  `torch.load(weights_only=True)`, and the model rebuilt from it;
- `info`: `ModelInfo` and `Preprocess`, what a model file records besides its weights;
- `safetensors_file`: a model as a safetensors file with that record in its header.
"""

from cnnzoo.checkpoint.info import ModelInfo, Preprocess, info_from_checkpoint, resolve_weights
from cnnzoo.checkpoint.safetensors_file import load_safetensors_model, write_safetensors
from cnnzoo.checkpoint.torch_file import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)

__all__ = [
    "FORMAT",
    "CheckpointError",
    "ModelInfo",
    "Preprocess",
    "info_from_checkpoint",
    "load_checkpoint",
    "load_safetensors_model",
    "model_from_checkpoint",
    "resolve_weights",
    "save_checkpoint",
    "write_safetensors",
]
