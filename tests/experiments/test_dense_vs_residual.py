"""The dense-vs-residual experiment: the Fig. 5 heatmap reads the right channels, the
DenseNet-BC builder, and the tiny preset end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cnnzoo.experiments import run_experiment
from cnnzoo.experiments.dense_vs_residual import (
    MEMORY_RATIO,
    densenet_bc,
    heatmap_change,
    reuse_heatmaps,
    reuse_score,
)
from cnnzoo.models import create_model


def test_densenet_bc_builder_matches_the_registered_bc100():
    ours = densenet_bc(100, 12, in_chans=3, num_classes=10)
    registered = create_model("densenet_bc100", num_classes=10)
    assert [tuple(v.shape) for v in ours.state_dict().values()] == [
        tuple(v.shape) for v in registered.state_dict().values()]
    with pytest.raises(ValueError, match="dense_depth: expected 6n \\+ 4"):
        densenet_bc(41, 12, in_chans=1, num_classes=10)


def test_heatmap_reads_each_source_channels():
    # Every weight from source s gets |w| = s + 1: each row is then (s + 1) / (row max).
    model = densenet_bc(22, 2, in_chans=1, num_classes=3)  # 3 layers per block, k = 2, c0 = 4
    with torch.no_grad():
        for block_name in ("denseblock1", "denseblock2", "denseblock3"):
            block = getattr(model.features, block_name)
            c0 = block.denselayer1.conv1.in_channels
            for layer in block.values():
                w = layer.conv1.weight
                for c in range(w.shape[1]):
                    source = 0 if c < c0 else (c - c0) // 2 + 1
                    w[:, c] = -(source + 1) if c % 2 else source + 1
        model.features.transition1.conv.weight.fill_(1.0)
    maps = reuse_heatmaps(model)
    assert len(maps) == 3 and [m["last_target"] for m in maps] == ["T", "T", "C"]
    first = maps[0]
    assert first["n"] == 3 and len(first["cells"]) == 4  # 3 layers + the transition
    for l, row in enumerate(first["cells"][:3], start=1):
        assert row[:l] == pytest.approx([(s + 1) / l for s in range(l)])
        assert all(math.isnan(v) for v in row[l:])  # no connection from later layers
    assert first["cells"][3] == pytest.approx([1.0] * 4)  # the uniform transition
    # Later half (l = 2, 3) on the earlier sources (s = 0, 1): (1/2 + 2/2 + 1/3 + 2/3) / 4.
    assert reuse_score(first) == pytest.approx(0.625)
    assert heatmap_change(first, first) == 0.0


def test_tiny_preset_end_to_end(tmp_path):
    result = run_experiment("dense-vs-residual", "tiny", data="synthetic:1x28x28:10:400",
                            out=tmp_path, quiet=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in ("comparison.png", "reuse_heatmap.png", "finding.md"):
        assert (tmp_path / name).stat().st_size > 0
    m, p = saved["measured"], saved["params"]
    dense, res = m["densenet"], m["resnet"]
    for net in (dense, res):
        assert net["params"] > 0 and net["macs"] > 0
        assert all(len(r["val_acc"]) == p["epochs"] for r in net["runs"])
        assert len(net["runs"]) == p["seeds"]
    assert m["params_ratio"] == pytest.approx(dense["params"] / res["params"])
    # Concatenation keeps every earlier map alive: more activation memory than the ResNet.
    assert dense["activation_bytes"] > res["activation_bytes"]
    assert dense["activation_bytes_train"] > res["activation_bytes_train"]
    n = (p["dense_depth"] - 4) // 6
    for h in m["heatmaps"]:
        assert len(h["cells"]) == n + 1
        assert all(max(v for v in row if v == v) == pytest.approx(1.0) for row in h["cells"])
    claims = saved["claims"]
    ratios = [m["activation_ratio_eval"], m["activation_ratio_train"]]
    assert (claims["higher activation memory per image"] == "supported") == (
        min(ratios) >= MEMORY_RATIO)
    if dense["params"] >= res["params"]:
        assert claims["fewer parameters at comparable or better accuracy"] == "not supported"
    overall = set(claims.values())
    assert saved["verdict"] == (overall.pop() if len(overall) == 1 else "mixed")
    assert result.finding.verdict == saved["verdict"]
