"""A model as a safetensors file: the weights plus the `ModelInfo` record in its header.

`cnnzoo export --format safetensors` writes it; `load_safetensors_model` rebuilds the
registered model from the header's "cnnzoo" entry, so the file is a complete model that,
unlike a pickle, cannot carry code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from cnnzoo.checkpoint.info import ModelInfo, info_from_checkpoint, metadata_json
from cnnzoo.checkpoint.torch_file import CheckpointError
from cnnzoo.fileio import atomic_write
from cnnzoo.models.registry import create_model

SAFETENSORS_FORMAT = "cnnzoo-safetensors"  # the safetensors header's "format" entry
SAFETENSORS_VERSION = "1"


def write_safetensors(model: nn.Module, info: ModelInfo, out: str | os.PathLike) -> None:
    """Write `model`'s weights and `info` to `out`, atomically."""
    # contiguous copies: safetensors refuses views and shared storage.
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"format": SAFETENSORS_FORMAT,
                                   "format_version": SAFETENSORS_VERSION,
                                   "cnnzoo": metadata_json(info)})
    atomic_write(out, lambda f: f.write(data))


def load_safetensors_model(path: str | os.PathLike) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the registered model a cnnzoo safetensors export holds (eval mode).

    Raises:
        CheckpointError: missing, truncated or foreign file (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such safetensors file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or "
                              f"corrupt): {str(err).splitlines()[0][:160]}") from None
    if meta.get("format") != SAFETENSORS_FORMAT or "cnnzoo" not in meta:
        raise CheckpointError(f"{path}: not a cnnzoo safetensors export (no "
                              f"format={SAFETENSORS_FORMAT!r} metadata, as `cnnzoo export "
                              f"--format safetensors` writes)")
    if meta.get("format_version") != SAFETENSORS_VERSION:
        raise CheckpointError(f"{path}: cnnzoo safetensors version {meta.get('format_version')},"
                              f" this cnnzoo reads version {SAFETENSORS_VERSION}")
    try:
        record: dict[str, Any] = json.loads(meta["cnnzoo"])
        info = info_from_checkpoint(record, record["weights"], path)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: damaged cnnzoo metadata: {err}") from None
    model = create_model(info.model_name, num_classes=info.num_classes, in_chans=info.in_chans,
                         **info.model_options)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit {info.model_name}: "
                              f"{' '.join(str(err).split())[:200]}") from None
    return model.eval(), info
