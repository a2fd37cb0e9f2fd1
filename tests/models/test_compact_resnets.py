"""compact_resnet8/10: the speedrun's ResNet-8 (widened, pooled stem) for 28x28 images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.compact import CompactResNet


def expected_counts(k: int, classes: int, side: int = 28,
                    extra_last: int = 0) -> tuple[int, int]:
    """(parameters, MACs) of compact_resnet8 from its layer list, by hand: 3x3 convs without
    bias, BN (2 parameters per channel), 1x1 projections where the shape changes, FC.
    `extra_last` more identity blocks in the last stage (compact_resnet10: 1)."""
    w1, w2, w3 = 16 * k, 32 * k, 64 * k
    s1 = side // 2  # after the 2x2 max-pool
    s2 = (s1 + 1) // 2  # 3x3/2 pad 1: ceil
    s3 = (s2 + 1) // 2
    convs = [  # (in, out, kernel, output side)
        (1, w1, 3, side),
        (w1, w1, 3, s1), (w1, w1, 3, s1),
        (w1, w2, 3, s2), (w2, w2, 3, s2), (w1, w2, 1, s2),
        (w2, w3, 3, s3), (w3, w3, 3, s3), (w2, w3, 1, s3),
    ] + [(w3, w3, 3, s3)] * (2 * extra_last)
    norms = [w1, w1, w1, w2, w2, w2, w3, w3, w3] + [w3] * (2 * extra_last)
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
    # The figures the docstrings and docs/speedrun.md quote.
    assert expected_counts(2, 10) == (308_074, 10_319_616)
    assert expected_counts(2, 10, extra_last=1) == (603_498, 15_038_208)


@pytest.mark.parametrize("k", [1, 2])
def test_resnet10_adds_one_last_stage_block(k):
    model = cnnzoo.create_model("compact_resnet10", num_classes=10, in_chans=1, widen_factor=k)
    params, macs = expected_counts(k, 10, extra_last=1)
    assert sum(p.numel() for p in model.parameters()) == params
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == 2 * macs
    assert len(model.layer3) == 2 and model.layer3[1].downsample is None


def _randomize_norms(model: torch.nn.Module, *, positive_scale: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.bias.data.normal_(generator=gen)
            scale = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.weight.data = scale if positive_scale else -scale


@pytest.mark.parametrize("name", ["compact_resnet8", "compact_resnet10"])
def test_pool_first_equals_pool_last_while_norm_scales_are_positive(name):
    # BN with a positive scale and ReLU are increasing maps, so they commute with max-pool:
    # the reordered stem computes the same function; with negative scales it must not.
    last = cnnzoo.create_model(name, num_classes=10, in_chans=1).eval()
    first = cnnzoo.create_model(name, num_classes=10, in_chans=1, pool_first=True).eval()
    assert [type(m).__name__ for m in first.stem] == ["Conv2d", "MaxPool2d", "BatchNorm2d",
                                                      "ReLU"]
    assert isinstance(first.pool, torch.nn.Identity)
    x = torch.randn(4, 1, 28, 28)
    for positive in (True, False):
        _randomize_norms(last, positive_scale=positive)
        state = last.state_dict()
        # same weights; only the stem's BN moved from stem.1 to stem.2
        state = {k.replace("stem.1.", "stem.2."): v for k, v in state.items()}
        first.load_state_dict(state)
        with torch.no_grad():
            same = torch.allclose(first(x), last(x), atol=1e-5)
        assert same == positive


def test_pool_first_needs_the_pool():
    with pytest.raises(ValueError, match="pool_first=True needs stem_pool=True"):
        cnnzoo.create_model("compact_resnet8", stem_pool=False, pool_first=True)


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
