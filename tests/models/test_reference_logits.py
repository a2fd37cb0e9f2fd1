"""Every model in tests/fixtures/reference/models/ computes what torchvision / timm computes.

Two comparisons per model, from one float64 run: with the reference's float32 `logits` at the
README's tolerance, and with its float64 `logits_f64` at 1e-9 x max|logit|, the proof of
equality. The deterministic fill makes deep nets amplify float32 rounding (hence 1e-4, and 3e-4
for SE-ResNet-50); in float64 that rounding is ~1e-16, so a different function (a wrong padding,
a missing bias, a swapped branch) shows up as a difference of order 1 and 1e-9 leaves no room
for one. Measured here: every model within 4e-15 x max|logit|.
"""

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
PROOF = 1e-9  # float64 against logits_f64, relative to max|logit|


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
    expected = torch.tensor(manifest(name)["logits_f64"], dtype=torch.float64)
    assert logits.shape == expected.shape
    rel = ((logits - expected).abs().max() / expected.abs().max()).item()
    assert rel <= PROOF, f"{name}: max |logit - logits_f64| = {rel:.3e} x max|logit| > {PROOF}"


def test_the_float64_proof_catches_a_different_function():
    """One BatchNorm scale of ResNet-18 changed by 1%: far outside the proof tolerance."""
    state = filled_state_dict("resnet18")
    state["layer3.0.bn1.weight"] = state["layer3.0.bn1.weight"] * 1.01
    model = cnnzoo.from_torchvision("resnet18", state).eval().double()
    expected = torch.tensor(manifest("resnet18")["logits_f64"], dtype=torch.float64)
    with torch.no_grad():
        got = model(reference_input().double())
    assert ((got - expected).abs().max() / expected.abs().max()).item() > 1e3 * PROOF


def test_float32_matches_too():
    """The float64 comparison above is not hiding a float32 problem (checked on one model)."""
    model = _load("resnet50").eval()
    with torch.no_grad():
        assert_logits_match("resnet50", model(reference_input()))
