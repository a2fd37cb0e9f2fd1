"""Float64 proof of equality: every reference model gives torchvision's / timm's own float64
logits (`logits_f64` in tests/fixtures/reference/models/*.json) to within 1e-9 x max|logit|.

The float32 comparison in test_reference.py needs 1e-4 (3e-4 for SE-ResNet-50), because the
deterministic fill makes deep nets amplify float32 rounding. In float64 that rounding is ~1e-16,
so a different function (a wrong padding, a missing bias, a swapped branch) shows up as a
difference of order 1, and a tolerance of 1e-9 leaves no room for one. Measured here: every
model within 4e-15 x max|logit|.
"""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from reference import filled_state_dict, manifest, reference_input, reference_names

PROOF = 1e-9


def _load(name: str) -> torch.nn.Module:
    if name.startswith("timm_"):
        return cnnzoo.from_timm(manifest(name)["model"], filled_state_dict(name))
    return cnnzoo.from_torchvision(name, filled_state_dict(name))


@pytest.mark.parametrize("name", reference_names())
def test_float64_logits_equal_the_reference_float64_logits(name):
    expected = torch.tensor(manifest(name)["logits_f64"], dtype=torch.float64)
    model = _load(name).eval().double()
    with torch.no_grad():
        got = model(reference_input().double())
    assert got.shape == expected.shape
    rel = ((got - expected).abs().max() / expected.abs().max()).item()
    assert rel <= PROOF, f"{name}: max |logit - reference| = {rel:.3e} x max|logit| > {PROOF}"


def test_the_proof_catches_a_different_function():
    """One BatchNorm scale of ResNet-18 changed by 1%: far outside the proof tolerance."""
    state = filled_state_dict("resnet18")
    state["layer3.0.bn1.weight"] = state["layer3.0.bn1.weight"] * 1.01
    model = cnnzoo.from_torchvision("resnet18", state).eval().double()
    expected = torch.tensor(manifest("resnet18")["logits_f64"], dtype=torch.float64)
    with torch.no_grad():
        got = model(reference_input().double())
    assert ((got - expected).abs().max() / expected.abs().max()).item() > 1e3 * PROOF
