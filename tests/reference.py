"""Loading `tests/fixtures/reference/`: filled state dicts and logits made by torchvision, timm.

The files are copies of the project's shared reference set, kept in the repository so that a
clone passes on any machine; their provenance is in `tests/fixtures/reference/README.md`, and the
filling rule is the one there ("The deterministic weights"). `CNNZOO_REFERENCE` points elsewhere.
"""

from __future__ import annotations

import json
import math
import os
from functools import cache
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("CNNZOO_REFERENCE", REPO / "tests" / "fixtures" / "reference"))
MODELS = REFERENCE / "models"


def reference_names() -> list[str]:
    return sorted(p.stem for p in MODELS.glob("*.json"))


@cache
def manifest(name: str) -> dict:
    return json.loads((MODELS / f"{name}.json").read_text())


def filled_state_dict(name: str) -> dict[str, torch.Tensor]:
    out = {}
    for i, (key, shape, dtype) in enumerate(manifest(name)["state_dict"]):
        g = torch.Generator().manual_seed(i)
        shape = tuple(shape)
        if dtype == "int64" or "int64" in str(dtype):
            value = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1 and key.endswith("weight"):
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("bias"):
            value = 0.05 * torch.randn(shape, generator=g)
        else:
            value = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:]))
        out[key] = value
    return out


def reference_input() -> torch.Tensor:
    return torch.randn((2, 3, 224, 224), generator=torch.Generator().manual_seed(12345))


def reference_logits(name: str) -> torch.Tensor:
    return torch.tensor(manifest(name)["logits"], dtype=torch.float32)


def assert_logits_match(name: str, logits: torch.Tensor, tol: float = 1e-4) -> None:
    """The README's rule: rtol=tol, atol=tol * max|logit| (tol=1e-4 unless explained)."""
    expected = reference_logits(name)
    atol = tol * expected.abs().max().item()
    torch.testing.assert_close(logits, expected, rtol=tol, atol=atol)
