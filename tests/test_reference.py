"""Every model in ../shared/reference/models/ computes what torchvision / timm computes."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from reference import (
    assert_logits_match,
    filled_state_dict,
    manifest,
    reference_input,
    reference_names,
)

NAMES = reference_names()


def _load(name: str) -> torch.nn.Module:
    if name.startswith("timm_"):
        return cnnzoo.from_timm(manifest(name)["model"], filled_state_dict(name))
    return cnnzoo.from_torchvision(name, filled_state_dict(name))


def test_reference_files_are_present():
    assert len(NAMES) >= 16, f"expected the 16 reference models, found {NAMES}"


@pytest.mark.parametrize("name", NAMES)
def test_reference_logits_and_params(name):
    model = _load(name)
    assert sum(p.numel() for p in model.parameters()) == manifest(name)["num_params"]
    model.eval()
    with torch.no_grad():
        logits = model(reference_input())
    assert_logits_match(name, logits)
