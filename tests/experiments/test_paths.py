"""`paths` (Veit et al. 2016): path counts, one path's gradient, and the tiny preset end to end."""

from __future__ import annotations

import json
import math
import random
from itertools import product

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.experiments import run_experiment
from cnnzoo.experiments._veit import block_parts, residual_blocks
from cnnzoo.experiments.paths import (
    DECAY_SUPPORTED,
    SHORT_REJECTED,
    SHORT_SUPPORTED,
    TRAINED_MIN_MARGIN,
    decay_factor,
    effective_range,
    forward_parts,
    length_ratio,
    path_gradient,
    path_length_counts,
    sample_paths,
    sampling_errors,
)
from cnnzoo.models.resnet_cifar import CifarResNet


@pytest.mark.parametrize("n", [0, 1, 3, 9, 54])
def test_path_lengths_are_binomial(n):
    counts = path_length_counts(n)
    assert counts == [math.comb(n, k) for k in range(n + 1)]
    assert sum(counts) == 2**n
    if n <= 9:  # enumerate the paths: one branch-or-shortcut choice per block
        by_length = [0] * (n + 1)
        for route in product((False, True), repeat=n):
            by_length[sum(route)] += 1
        assert by_length == counts
    with pytest.raises(ValueError, match="expected n >= 0 blocks"):
        path_length_counts(-1)


def _trained_like_net(depth=14):
    torch.manual_seed(0)
    net = CifarResNet(depth, num_classes=5, in_chans=1, base_width=4)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_block_parts_add_up_to_the_block():
    net = _trained_like_net()
    x = torch.rand(3, 4, 9, 9)
    for _, block in residual_blocks(net)[:3]:  # identity, identity, then option A
        parts, out = block_parts(block, x)
        with torch.no_grad():
            expected = block(x.clone())
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(F.relu(parts.branch + parts.shortcut).detach(), expected)
        x = expected


def test_the_path_gradients_sum_to_the_true_gradient():
    """The unraveled view (Veit et al. Eq. 3-6), for the gradient: summing one path's gradient
    over all 2^n paths gives the ordinary backward pass."""
    net = _trained_like_net()
    images, labels = torch.randn(4, 1, 10, 10), torch.tensor([0, 1, 2, 3])
    parts, top, start = forward_parts(net, images, labels)
    n = len(parts)
    assert n == 6
    total = sum(path_gradient(parts, top, route) for route in product((False, True), repeat=n))

    x0 = start.clone().requires_grad_(True)
    loss = F.cross_entropy(net.forward_head(net.layer3(net.layer2(net.layer1(x0)))), labels,
                           reduction="sum")
    (expected,) = torch.autograd.grad(loss, x0)
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-6)
    # and one path alone is not the whole gradient
    assert not torch.allclose(path_gradient(parts, top, [True] * n), expected)


def test_forward_parts_wants_eval_mode_and_routes_per_block():
    net = _trained_like_net(depth=8)
    with pytest.raises(ValueError, match="expected the model in eval mode"):
        forward_parts(net.train(), torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    parts, top, _ = forward_parts(net.eval(), torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="expected one route per block \\(3\\), got 2"):
        path_gradient(parts, top, [True, False])


def test_sample_paths_enumerates_when_few_and_samples_k_blocks_otherwise():
    rng = random.Random(0)
    assert sample_paths(5, 0, 10, 2, rng) == [((), 0), ((), 1)]
    assert len(sample_paths(5, 1, 10, 2, rng)) == 10  # C(5, 1) x 2 batches = 10: all of them
    drawn = sample_paths(15, 7, 20, 2, rng)
    assert len(drawn) == 20 and {b for _, b in drawn} == {0, 1}
    assert all(len(set(s)) == 7 and all(0 <= i < 15 for i in s) for s, _ in drawn)


def test_effective_range_and_decay_factor():
    assert effective_range([0.02, 0.03, 0.5, 0.4, 0.05]) == (1, 3)
    assert effective_range([0.0, 1.0, 0.0]) == (1, 1)
    assert decay_factor([1.0, 0.5, 0.25, 0.125]) == pytest.approx(0.5)
    assert decay_factor([2.0, 2.0, 2.0]) == pytest.approx(1.0)


def test_length_ratio_and_its_sampling_error():
    # no decay: the gradient's lengths are the paths' lengths
    assert length_ratio([1.0] * 8) == pytest.approx(1.0)
    # geometric decay r per branch: the weights C(n, k) r^k are Binomial(n, r / (1 + r))
    assert length_ratio([0.5**k for k in range(11)]) == pytest.approx(2 * 0.5 / 1.5)
    mags = [0.5**k for k in range(7)]
    assert sampling_errors(mags, [0.0] * 7, [10] * 7) == (0.0, 0.0)
    r_se, f_se = sampling_errors(mags, [0.3 * m for m in mags], [10] * 7, draws=200)
    r_wide, f_wide = sampling_errors(mags, [0.3 * m for m in mags], [2] * 7, draws=200)
    assert 0 < r_se < r_wide and 0 < f_se < f_wide  # more measurements, less noise


def test_tiny_preset_end_to_end(tmp_path):
    result = run_experiment("paths", "tiny", data="synthetic:1x16x16:4:400", out=tmp_path,
                            quiet=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    m = saved["measured"]
    assert saved["verdict"] == result.finding.verdict
    for png in ("path_lengths.png", "gradient_per_path.png", "total_gradient.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
    n = m["blocks"]
    assert n == 6 and m["paths"] == 64 and m["path_length_counts"] == [1, 6, 15, 20, 15, 6, 1]
    assert sum(m["shares"]) == pytest.approx(1.0)
    assert all(v > 0 for v in m["magnitude"])
    # total = magnitude x C(n, k), shares its normalisation
    run = m["per_seed"][0]
    counts = m["path_length_counts"]
    assert run["total"] == pytest.approx([a * c for a, c in zip(run["magnitude"], counts,
                                                                strict=True)])
    # k = 0 and k = n are one path each: both batches measured; others: 4 samples
    assert run["measurements"] == [2, 4, 4, 4, 4, 4, 2]
    lo, hi = m["effective_range"]
    assert 0 <= lo <= hi <= n
    assert m["weighted_mean_length"] == pytest.approx(
        sum(k * v for k, v in enumerate(m["shares"])))
    assert m["length_ratio"] == pytest.approx(m["weighted_mean_length"] / (n / 2))
    # the verdict follows the documented thresholds
    claims = saved["claims"]
    if run["val_acc"][-1] < m["chance"] + TRAINED_MIN_MARGIN / 100:
        assert set(claims.values()) == {"inconclusive"} and saved["verdict"] == "inconclusive"
        return
    factor, ratio = m["decay_factor"], m["length_ratio"]
    f_se, r_se = m["decay_factor_se"], m["length_ratio_se"]
    assert f_se > 0 and r_se > 0 and m["se_from"] == "path sampling (one seed)"
    assert claims["gradient per path shrinks with its length"] == (
        "supported" if factor + 2 * f_se < DECAY_SUPPORTED else
        "not supported" if factor - 2 * f_se >= 1 else "inconclusive")
    assert claims["most gradient comes from short paths"] == (
        "supported" if ratio + 2 * r_se <= SHORT_SUPPORTED else
        "not supported" if ratio - 2 * r_se >= SHORT_REJECTED else "inconclusive")
    verdicts = set(claims.values())
    assert saved["verdict"] == (verdicts.pop() if len(verdicts) == 1 else "mixed")


def test_inconclusive_claims_get_power_estimates_and_decided_ones_none():
    from cnnzoo.experiments.paths import DECAY, SHORT, judge, power
    # factor 0.5 +- 0.05: decided; ratio 0.7 +- 0.06: 1.67 SE under 0.8, inconclusive.
    s = {"decay_factor": 0.5, "decay_factor_se": 0.05, "length_ratio": 0.7,
         "length_ratio_se": 0.06}
    claims = judge(s, trained=True)
    assert claims == {DECAY: "supported", SHORT: "inconclusive"}
    est = power(s, claims, True, seeds=2, samples=50, seconds_per_seed=100.0,
                seconds_per_sample=0.5)
    assert DECAY not in est
    assert est[SHORT]["unit"] == "seeds" and est[SHORT]["needed"] == 3  # 2 x (2 / 1.67)^2
    assert est[SHORT]["seconds"] == pytest.approx(300.0)
    # One seed: the SE is the path sampling's, so the units are samples per length.
    one = power(s, claims, True, seeds=1, samples=50, seconds_per_seed=100.0,
                seconds_per_sample=0.5)
    assert one[SHORT]["unit"] == "samples per length" and one[SHORT]["needed"] == 72
    # Between the two thresholds, more units do not decide it at the measured value.
    mid = {**s, "length_ratio": 0.85}
    est = power(mid, judge(mid, True), True, seeds=2, samples=50, seconds_per_seed=1.0,
                seconds_per_sample=1.0)
    assert est[SHORT]["needed"] is None and "between the thresholds" in est[SHORT]["text"]
    # An untrained net: both inconclusive, and more seeds are not the remedy.
    est = power(s, judge(s, False), False, seeds=2, samples=50, seconds_per_seed=1.0,
                seconds_per_sample=1.0)
    assert set(est) == {DECAY, SHORT} and all(e["needed"] is None for e in est.values())
