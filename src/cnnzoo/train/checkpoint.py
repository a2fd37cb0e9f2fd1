"""The training state in a checkpoint: what last.pt adds to the model file.

The file format itself (keys, atomic save, `weights_only` load) is `cnnzoo.checkpoint`'s;
this module fills it from a run and restores a run from it. The "rng" states are restored on
resume, but the loop also reseeds every generator at each epoch start from (seed, epoch,
rank): that, not the saved states (rank 0's only), is what makes a resumed multi-process run
exact. The data loader keeps no state: its order and augmentation are a function of
(seed, epoch, rank), so an epoch-boundary checkpoint resumes it exactly.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """The state of every random number generator the loop may draw from."""
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"bit_generator": bit_generator, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))

