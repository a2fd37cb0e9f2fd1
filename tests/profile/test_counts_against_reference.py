"""Golden counts: cnnzoo's profiler against FlopCounterMode on the reference implementations
(tests/fixtures/reference/models/*.json) and against torchvision's published GMACs."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.models import create_model
from cnnzoo.profile import profile
from cnnzoo.profile.published import PUBLISHED_TOP1, TORCHVISION
from reference import manifest, reference_names

# Reference name -> (cnnzoo model, builder options) building the same architecture.
ZOO_EQUIVALENT = {
    "googlenet": ("googlenet", {"torchvision_compat": True}),  # reference: torchvision's
    "timm_seresnet50": ("se_resnet50", {}),
}


def meta_model(name: str, **options):
    with torch.device("meta"):
        return create_model(name, **options)


@pytest.mark.parametrize("ref", reference_names())
def test_macs_and_params_equal_the_reference(ref):
    name, options = ZOO_EQUIVALENT.get(ref, (ref, {}))
    expected = manifest(ref)
    model = meta_model(name, **options)
    model.name = name
    report = profile(model, tuple(expected["input_shape"]))  # (2, 3, 224, 224)
    assert report.macs_per_image == expected["macs_per_image"]
    assert report.macs == expected["input_shape"][0] * expected["macs_per_image"]
    assert report.trainable_params == expected["num_params"]


# The golden figures: GMACs at 224x224 (torchvision's "GFLOPS" column).
GOLDEN_GMACS_224 = {
    "alexnet": 0.714, "vgg16": 15.470, "googlenet": 1.498, "resnet18": 1.814,
    "resnet50": 4.089, "densenet121": 2.834, "efficientnet_b0": 0.386,
}


@pytest.mark.parametrize("name", sorted(GOLDEN_GMACS_224))
def test_golden_gmacs_at_224(name):
    options = {"torchvision_compat": True} if name == "googlenet" else {}
    report = profile(meta_model(name, **options), (1, 3, 224, 224))
    assert round(report.macs_per_image / 1e9, 3) == GOLDEN_GMACS_224[name]


TORCHVISION_ENTRIES = sorted(n for n, p in PUBLISHED_TOP1.items() if p.source == TORCHVISION)


@pytest.mark.parametrize("name", TORCHVISION_ENTRIES)
def test_published_table_agrees_with_the_count(name):
    """Every torchvision row of the shipped table: GMACs at its evaluation crop and params."""
    pub = PUBLISHED_TOP1[name]
    options = {"torchvision_compat": True, "aux_logits": False} if name == "googlenet" else {}
    report = profile(meta_model(name, **options), (1, 3, pub.eval_size, pub.eval_size))
    assert round(report.macs_per_image / 1e9, 3) == pytest.approx(pub.gmacs, abs=1e-9)
    assert report.params == pub.params
    assert 50 < pub.top1_percent < 90


def test_se_resnet50_published_top1_is_the_papers():
    pub = PUBLISHED_TOP1["se_resnet50"]
    assert pub.top1_percent == pytest.approx(76.71)
    assert "Hu et al." in pub.source and "Table 2" in pub.source


def test_saved_for_backward_matches_the_measured_reference():
    """tests/fixtures/reference/README.md: autograd really saves 3,979 MiB for DenseNet-121 at
    batch 32 (input included), against estimates of 5,510 (torchinfo) and 842 (fvcore)."""
    report = profile("densenet121", (32, 3, 224, 224))
    saved_mib = (report.activation_bytes_train + report.input_bytes) / 2**20
    assert round(saved_mib) == 3979
