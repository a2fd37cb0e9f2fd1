"""Load a weights-table entry into a freshly built model: fetch, verify, map the keys, load.

`create_model(name, pretrained=True)` builds the model with the entry's options and calls
`load_pretrained`; the file comes from the user cache (`cnnzoo.models.hub`, downloaded once and
checked against the published SHA-256 prefix), is read with `torch.load(weights_only=True)`,
its keys are rewritten by the source's rules (`cnnzoo.models.keymap`) and it is loaded
strictly: every key and every shape must match, so an entry without a published hash still
cannot load a file of another architecture. Both checks run on the downloaded part file,
before it enters the cache.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnzoo.models.hub import cached_file, weights_dir
from cnnzoo.models.keymap import TIMM, TORCHVISION, Rules, check_strict, convert_keys, load_strict
from cnnzoo.models.weights import WeightsEntry

_KEYMAPS = {"torchvision": TORCHVISION, "timm": TIMM}


def key_rules(entry: WeightsEntry) -> Rules:
    """The key rewrites from the entry's source names to cnnzoo's."""
    return _KEYMAPS[entry.source][entry.source_name][2]


def cache_path(entry: WeightsEntry) -> Path:
    """Where the entry's file is (or will be) in the cache."""
    return weights_dir() / entry.file_name


def read_state_dict(path: str | Path, entry: WeightsEntry) -> dict[str, torch.Tensor]:
    """The entry's file as a cnnzoo-keyed state dict (tensors only, on the CPU)."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike: one line naming the file
        raise ValueError(f"{entry.key}: {path} is not a readable weights file "
                         f"({type(err).__name__}: {err}); delete it to download again") from None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{entry.key}: {path} holds a {type(state_dict).__name__}, "
                         "expected a state dict")
    return convert_keys(state_dict, key_rules(entry))


def load_pretrained(model: nn.Module, entry: WeightsEntry, *,
                    progress: bool | None = None) -> nn.Module:
    """Fill `model` (built with `entry.options` and `entry.num_classes`) with the entry's
    weights, downloading them first if the cache lacks them.

    Raises:
        WeightsDownloadError: the download failed (one line; the cache is left clean).
        ValueError: the file does not fit the model (first mismatching keys or shape).
    """
    what = f"{entry.source} weights {entry.key}"

    def fits(part: Path) -> None:  # before the file enters the cache: a misfit leaves none
        check_strict(model, read_state_dict(part, entry), what=f"{what} ({entry.url})")

    path = cached_file(entry.url, entry.sha256_prefix, check=fits, progress=progress)
    load_strict(model, read_state_dict(path, entry), what=f"{what} ({path})")
    return model
