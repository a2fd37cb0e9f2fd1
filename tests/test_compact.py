"""compact_resnet8: the speedrun's ResNet-8 (widened, pooled stem) for 28x28 images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.compact import CompactResNet


def expected_counts(k: int, classes: int, side: int = 28) -> tuple[int, int]:
    """(parameters, MACs) of compact_resnet8 from its layer list, by hand: 3x3 convs without
    bias, BN (2 parameters per channel), 1x1 projections where the shape changes, FC."""
    w1, w2, w3 = 16 * k, 32 * k, 64 * k
    s1 = side // 2  # after the 2x2 max-pool
    s2 = (s1 + 1) // 2  # 3x3/2 pad 1: ceil
    s3 = (s2 + 1) // 2
    convs = [  # (in, out, kernel, output side)
        (1, w1, 3, side),
        (w1, w1, 3, s1), (w1, w1, 3, s1),
        (w1, w2, 3, s2), (w2, w2, 3, s2), (w1, w2, 1, s2),
        (w2, w3, 3, s3), (w3, w3, 3, s3), (w2, w3, 1, s3),
    ]
    norms = [w1, w1, w1, w2, w2, w2, w3, w3, w3]
    params = sum(i * o * kk * kk for i, o, kk, _ in convs) + 2 * sum(norms)
    params += w3 * classes + classes
    macs = sum(i * o * kk * kk * s * s for i, o, kk, s in convs) + w3 * classes
    return params, macs


@pytest.mark.parametrize("k", [1, 2, 3])
def test_parameters_and_macs_match_the_layer_list(k):
    model = cnnzoo.create_model("compact_resnet8", num_classes=10, in_chans=1, widen_factor=k)
    params, macs = expected_counts(k, 10)
    assert sum(p.numel() for p in model.parameters()) == params
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == 2 * macs


def test_k2_is_the_documented_size():
    # The figures the docstring and docs/speedrun.md quote.
    assert expected_counts(2, 10) == (308_074, 10_319_616)


@pytest.mark.parametrize(("stem_pool", "stem_side", "side"), [(True, 14, 4), (False, 28, 7)])
def test_stage_shapes(stem_pool, stem_side, side):
    model = cnnzoo.create_model("compact_resnet8", num_classes=10, in_chans=1,
                                stem_pool=stem_pool).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        stem = model.pool(model.stem(x))
        feats = model.forward_features(x)
    assert stem.shape == (2, 32, stem_side, stem_side)
    assert feats.shape == (2, 128, side, side)
    assert model.num_features == 128
    assert model.forward_head(feats).shape == (2, 10)


@pytest.mark.parametrize("stem_pool", [True, False])
def test_min_input_size_is_honest(stem_pool):
    model = cnnzoo.create_model("compact_resnet8", num_classes=10, in_chans=1,
                                stem_pool=stem_pool).eval()
    m = model.min_input_size
    assert m == (2 if stem_pool else 1)
    with torch.no_grad():
        assert model(torch.randn(1, 1, m, m)).shape == (1, 10)
    if m > 1:
        with pytest.raises(ValueError, match="compact_resnet8.*H, W >= 2"):
            model(torch.randn(1, 1, m - 1, m - 1))
        # The check is not cosmetic: without it the max-pool itself fails on 1x1.
        with pytest.raises(RuntimeError):
            model.forward_features(torch.randn(1, 1, m - 1, m - 1))


def test_zero_init_residual_makes_blocks_identity_plus_relu():
    model = cnnzoo.create_model("compact_resnet8", num_classes=10, in_chans=1,
                                zero_init_residual=True).eval()
    block = model.layer1[0]  # stride 1, same width: identity shortcut
    x = torch.randn(2, 32, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(x))
        plain = cnnzoo.create_model("compact_resnet8", num_classes=10, in_chans=1).eval()
        assert not torch.allclose(plain.layer1[0](x), F.relu(x))


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="widen_factor >= 1, got 0"):
        cnnzoo.create_model("compact_resnet8", widen_factor=0)
    with pytest.raises(ValueError, match="3 stage depths"):
        CompactResNet((1, 1))
    with pytest.raises(TypeError, match="'width'"):
        cnnzoo.create_model("compact_resnet8", width=32)


def test_learns_a_small_batch():
    # 32 random images with random labels: only a net that trains end to end memorises them.
    torch.manual_seed(0)
    model = cnnzoo.create_model("compact_resnet8", num_classes=10, in_chans=1, widen_factor=1)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() == 1.0
