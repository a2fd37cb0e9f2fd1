"""DenseNet-BC vs ResNet: fewer parameters, feature reuse, more activation memory.

Huang, Liu, van der Maaten, Weinberger 2017, "Densely Connected Convolutional Networks",
arXiv:1608.06993 (https://arxiv.org/abs/1608.06993): Table 2 and Fig. 4 (DenseNet-BC reaches
a ResNet's accuracy with about a third of its parameters), Fig. 5 (feature reuse), and the
memory cost of concatenation the paper's implementation notes and its follow-up tech report
(Pleiss et al. 2017, arXiv:1707.06990) address.

Claim: concatenation reuses features with fewer parameters at a higher memory cost.
Measured: a small DenseNet-BC (`cnnzoo.models.densenet.DenseNet`, the paper's CIFAR layout:
3x3 stem of 2k maps, three dense blocks of (depth - 4) / 6 bottleneck layers, compression
0.5) and a CIFAR ResNet (`CifarResNet`, He et al.'s 6n + 2 layout at `resnet_width`) trained
with the same data, epochs, optimizer and schedule; parameters, MACs and activation memory per
image from `cnnzoo.profile` (eval-mode peak of live activations, and the bytes autograd saves
for backward in a train-mode forward, both at batch 1); and Fig. 5's heatmap.

Verdicts (thresholds fixed before measuring):
1. "fewer parameters at comparable or better accuracy": with t = `common.margin`(ResNet,
   DenseNet + 1 point), the ResNet's lead beyond the 1-point tolerance in standard errors
   (Welch t over seeds with a 0.5-point floor on the standard error): supported when
   params(DenseNet) < params(ResNet) and t <= -2 (the DenseNet is less than 1 point below by
   2 standard errors; with the floor, at least as accurate as the ResNet); not supported when
   params(DenseNet) >= params(ResNet) or t >= 2 (more than 1 point below by 2 standard
   errors); otherwise inconclusive. (Until issue 15: supported whenever the mean gap was at
   most 1 point, a point estimate.)
2. "higher activation memory per image": supported when the DenseNet's eval peak and its
   saved-for-backward bytes are both >= 1.1x the ResNet's; not supported when both are
   <= 1x; otherwise mixed. (Counts, not timings: no noise.)
3. "later layers reuse early features": Fig. 5's heatmap per dense block: for target layer l
   (its first conv, the 1x1 bottleneck) and source s (0 = the block's input, s = the
   output of layer s), the mean absolute weight of l's filters over the input channels that
   come from s, each target's row divided by its maximum; the transition (blocks 1, 2) and
   the classifier (block 3) are the last targets, as in the paper. Kaiming init gives every
   cell ~1 before training (the reuse score below is ~0.97 there), so the trained map's level
   says little by itself: it is judged against its own initialisation, the control. For each
   target l of the later half of the block (l > n/2) the reuse shift is how much training
   changed its cells from the earlier sources (s < n/2, the block input included) minus how
   much it changed those from the later sources (n/2 <= s < l): mean(trained - initial) over
   the first minus over the second. The row-max normalisation moves every cell alike, and
   cancels; a shift < 0 is training moving later layers' weight from early features to
   recent ones, > 0 towards early ones. Per block, over the later targets of every seed's
   network: t = mean shift / its standard error (floored at REUSE_SE_FLOOR); supported when
   t >= 2, not supported when t <= -2, otherwise inconclusive (a map that training left as it
   was shifts by 0: inconclusive). The blocks together by `combine_verdicts`
   (`reuse_verdict`). Reported besides, not judged: the reuse score (the mean normalised
   weight of the later targets on the earlier sources) and the mean |trained - initial| over
   all cells. (Until issue 15: supported when the map moved >= 0.05 on average and the reuse
   score was >= 0.3 in every block, which the initial map itself clears.)
The overall verdict is the claims' common verdict when they agree, else "mixed".

Deviations from the paper:
- Fashion-MNIST subsets (28x28, 1 channel) instead of CIFAR/SVHN; a few epochs instead of
  300; SGD with momentum 0.9, weight decay 5e-4 and a cosine schedule at lr 0.1 (the paper:
  Nesterov, 1e-4, lr divided by 10 at 50% and 75%); no dropout, no augmentation.
- DenseNet-BC depth 40 (6 layers per block) instead of 100-250, so a run fits a CPU; the
  ResNet is ResNet-20 (He et al.'s smallest CIFAR ResNet), ~1.5x the DenseNet's parameters,
  the "similar size" pairing the paper makes in Fig. 4 (right) between DenseNet-BC and ResNets.
- Activation memory is counted for this implementation (torch.cat of every dense layer's
  input: memory quadratic in the block's depth); the memory-efficient shared-buffer variant
  of Pleiss et al. is not implemented in cnnzoo.

Presets: `tiny` is the plumbing test (synthetic data, seconds); `quick` took 147 s on the 2
cores here (docs/experiments/dense-vs-residual: 4,000 training images, 5 epochs, one seed; a
1-epoch trial took 26 s per DenseNet epoch and 5.5 s per ResNet epoch); `full` (55,000
training images, 40 epochs, batch 64, the paper's Table 2 pair DenseNet-BC-100 (k=12, 0.77M
params) vs ResNet-110 (1.7M), 3 seeds): estimated ~60 hours on 2 cores (the quick run's
per-image times scaled by MACs: ~26 ms per DenseNet-BC-100 image, ~8 ms per ResNet-110 image,
2.2M images each per seed); not run here.

Standard preset (issue 15; committed before its first run): DenseNet-BC-40 (k = 12) against
ResNet-20 (width 16) as in quick, 5,000 training images for 8 epochs, 3 seeds, test on 5,000
images. Why: claim 1 compares accuracies and needs the spread over seeds; claim 3 judges how
training moves the reuse map from its own initialisation, and the quick run's 5 epochs moved
it by under 0.03 per cell: 8 epochs on 1.25x the images give the weights more steps to move,
and 3 seeds give every block's shift a standard error over networks. Estimated ~16 min on 2
cores (3 x 8 epochs x (26 + 5.5) s per 4,000-image epoch pair, scaled to 5,000 images).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnzoo.experiments._margin_power import margin_power
from cnnzoo.experiments.base import Context, Finding, combine_verdicts, experiment, pyplot
from cnnzoo.experiments.common import Splits, accuracy, fit, load_splits, margin, mean_std, pct
from cnnzoo.models.densenet import DenseBlock, DenseNet
from cnnzoo.models.resnet_cifar import CifarResNet
from cnnzoo.profile import profile

ACC_TOLERANCE = 0.01  # claim 1: at most 1 point below the ResNet
MEMORY_RATIO = 1.1  # claim 2: >= 1.1x the ResNet's activation bytes
# claim 3: the floor on the reuse shift's standard error, in units of normalised weight (the
# init's own sampling noise per cell is ~0.025 for 12-channel sources); with one later target
# and one seed there is no spread, and a shift must exceed 2 x 0.005.
REUSE_SE_FLOOR = 0.005


def densenet_bc(depth: int, growth_rate: int, *, in_chans: int, num_classes: int) -> DenseNet:
    """The paper's CIFAR DenseNet-BC: three blocks of (depth - 4) / 6 bottleneck layers, a
    3x3 stem of 2k maps, compression 0.5 (depth 100, k 12 = `densenet_bc100`)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"dense_depth: expected 6n + 4 with n >= 1 (40, 100, ...), got {depth}")
    n = (depth - 4) // 6
    return DenseNet(growth_rate, (n, n, n), 2 * growth_rate, small_input=True,
                    in_chans=in_chans, num_classes=num_classes)


def _block_targets(model: DenseNet) -> list[tuple[DenseBlock, list[torch.Tensor], str]]:
    """Per dense block: the block, the 2-d weights of its targets (each layer's 1x1 conv,
    then the transition conv or, after the last block, the classifier) and that last
    target's label."""
    children = list(model.features.named_children())
    result = []
    for i, (_, module) in enumerate(children):
        if not isinstance(module, DenseBlock):
            continue
        weights = [layer.conv1.weight.detach().flatten(1) for layer in module.values()]
        following = children[i + 1][1] if i + 1 < len(children) else None
        if following is not None and hasattr(following, "conv"):
            weights.append(following.conv.weight.detach().flatten(1))
            label = "T"  # transition
        elif isinstance(model.classifier, nn.Linear):
            weights.append(model.classifier.weight.detach())
            label = "C"  # classifier
        else:
            label = ""
        result.append((module, weights, label))
    return result


def reuse_heatmaps(model: DenseNet) -> list[dict[str, Any]]:
    """Fig. 5 for each dense block: `cells[l][s]` = mean |weight| of target l's filters over
    the channels from source s (0 = block input, s = layer s), divided by the row's maximum;
    NaN where s >= l (no connection). Rows are the n layers then the transition/classifier."""
    maps = []
    for block, weights, last in _block_targets(model):
        layers = list(block.values())
        n = len(layers)
        c0 = layers[0].conv1.in_channels
        k = layers[0].conv2.out_channels
        bounds = [(0, c0)] + [(c0 + (s - 1) * k, c0 + s * k) for s in range(1, n + 1)]
        cells = []
        for w in weights:
            sources = [w[:, a:b].abs().mean().item() for a, b in bounds if b <= w.shape[1]]
            top = max(sources)
            row = [v / top for v in sources] + [float("nan")] * (n + 1 - len(sources))
            cells.append(row)
        maps.append({"cells": cells, "n": n, "last_target": last})
    return maps


def reuse_score(heatmap: dict[str, Any]) -> float:
    """Mean normalised weight the later half of the layers (l > n/2) give to the earlier
    sources (s < n/2, the block input included); the transition/classifier row excluded."""
    n = heatmap["n"]
    values = [heatmap["cells"][t - 1][s] for t in range(n // 2 + 1, n + 1)
              for s in range(0, (n + 1) // 2)]
    return sum(values) / len(values)


def heatmap_change(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Mean |a - b| over the connected cells of two heatmaps of the same block."""
    pairs = zip(a["cells"], b["cells"], strict=True)
    diffs = [abs(x - y) for ra, rb in pairs for x, y in zip(ra, rb, strict=True)
             if x == x and y == y]  # skip NaN
    return sum(diffs) / len(diffs)


def reuse_shifts(trained: dict[str, Any], initial: dict[str, Any]) -> list[float]:
    """Per later target l (n/2 < l <= n) of one block: mean(trained - initial) over its cells
    from the earlier sources (s < n/2) minus that over the later ones (n/2 <= s < l); empty
    when the block has no later source (n = 1)."""
    n, split = trained["n"], (trained["n"] + 1) // 2
    shifts = []
    for t in range(n // 2 + 1, n + 1):
        d = [a - b for a, b in zip(trained["cells"][t - 1][:t], initial["cells"][t - 1][:t],
                                   strict=True)]
        early, late = d[:split], d[split:]
        if early and late:
            shifts.append(sum(early) / len(early) - sum(late) / len(late))
    return shifts


def reuse_verdict(trained: list[list[dict[str, Any]]], initial: list[list[dict[str, Any]]]
                  ) -> tuple[str, list[dict[str, Any]]]:
    """Claim 3, by the module docstring's rule, from every seed's trained and initial maps
    (`trained[seed][block]`): per block the mean reuse shift over the later targets of all
    seeds, its standard error, t and verdict; and the blocks' combined verdict."""
    blocks = []
    for b in range(len(trained[0])):
        shifts = [x for maps, maps0 in zip(trained, initial, strict=True)
                  for x in reuse_shifts(maps[b], maps0[b])]
        mean, std = mean_std(shifts) if shifts else (0.0, 0.0)
        se = std / math.sqrt(len(shifts)) if len(shifts) > 1 else 0.0
        t = mean / max(se, REUSE_SE_FLOOR)
        verdict = ("inconclusive" if not shifts else "supported" if t >= 2
                   else "not supported" if t <= -2 else "inconclusive")
        blocks.append({"shift": mean, "se": se, "t": t, "targets": len(shifts),
                       "verdict": verdict})
    return combine_verdicts(b["verdict"] for b in blocks), blocks


def accuracy_margin(acc_d: list[float], acc_r: list[float]) -> float:
    """Claim 1's t: how many standard errors the ResNet leads the DenseNet by beyond the
    1-point tolerance (`common.margin` of ResNet against DenseNet + ACC_TOLERANCE)."""
    return margin(acc_r, [a + ACC_TOLERANCE for a in acc_d])


def claim_power(claims: dict[str, str], acc_d: list[float], acc_r: list[float],
                shifts: list[dict[str, Any]], *, seconds_per_seed: float) -> dict[str, Any]:
    """claim -> power estimate for the inconclusive claims 1 and 3 (`margin_power`). Claim 1
    is inconclusive when |`accuracy_margin`| < 2: its t is that margin, its difference the
    ResNet's lead minus the 1-point tolerance. Claim 3 is inconclusive when every
    block is: one estimate per block (its targets grow in proportion to the seeds, so seeds
    are the unit), the claim's "needed" the largest (None if any block's is)."""
    power: dict[str, Any] = {}
    n = min(len(acc_d), len(acc_r))
    acc_claim, reuse_claim = ("fewer parameters at comparable or better accuracy",
                              "later layers reuse early features")
    if claims.get(acc_claim) == "inconclusive":
        power[acc_claim] = margin_power(mean_std(acc_r)[0] - mean_std(acc_d)[0] - ACC_TOLERANCE,
                                        accuracy_margin(acc_d, acc_r), n,
                                        seconds_per_unit=seconds_per_seed)
    if claims.get(reuse_claim) == "inconclusive" and shifts:
        blocks = [margin_power(s["shift"], s["t"], n, seconds_per_unit=seconds_per_seed,
                               floor=REUSE_SE_FLOOR) for s in shifts]
        needed = [b["needed"] for b in blocks]
        total = None if None in needed else max(needed)
        power[reuse_claim] = {
            "t": [b["t"] for b in blocks], "n": n, "unit": "seeds", "needed": total,
            "seconds": None if total is None else total * seconds_per_seed, "blocks": blocks,
            "text": "; ".join(f"block {i + 1}: {b['text']}" for i, b in enumerate(blocks))}
    return power


PRESETS = {
    "tiny": dict(seeds=1, train_size=200, val_size=100, test_size=100, batch_size=50, epochs=1,
                 lr=0.1, dense_depth=16, growth_rate=4, resnet_depth=8, resnet_width=4),
    "quick": dict(seeds=1, train_size=4000, val_size=1000, test_size=5000, batch_size=128,
                  epochs=5, lr=0.1, dense_depth=40, growth_rate=12, resnet_depth=20,
                  resnet_width=16),
    "standard": {"seeds": 3, "train_size": 5000, "val_size": 1000, "test_size": 5000,
                 "batch_size": 128, "epochs": 8, "lr": 0.1, "dense_depth": 40, "growth_rate": 12,
                 "resnet_depth": 20, "resnet_width": 16},
    "full": dict(seeds=3, train_size=55000, val_size=5000, test_size=10000, batch_size=64,
                 epochs=40, lr=0.1, dense_depth=100, growth_rate=12, resnet_depth=110,
                 resnet_width=16),
}


@experiment(
    "dense-vs-residual",
    title="DenseNet-BC vs ResNet: parameters, memory and feature reuse",
    paper="Huang et al. 2017, Densely Connected Convolutional Networks, arXiv:1608.06993",
    claim="concatenation reuses features with fewer parameters at a higher memory cost",
    presets=PRESETS,
)
def run(ctx: Context) -> Finding:
    p = ctx.params
    splits = load_splits(ctx, train_size=p["train_size"], val_size=p["val_size"],
                         test_size=p["test_size"])
    shape = (1, splits.in_chans, *splits.image_size)
    builders = {
        "densenet": lambda: densenet_bc(p["dense_depth"], p["growth_rate"],
                                        in_chans=splits.in_chans,
                                        num_classes=splits.num_classes),
        "resnet": lambda: CifarResNet(p["resnet_depth"], base_width=p["resnet_width"],
                                      in_chans=splits.in_chans, num_classes=splits.num_classes),
    }
    nets: dict[str, Any] = {}
    for key, build in builders.items():
        report = profile(build(), shape)
        nets[key] = {"params": report.params, "macs": report.macs,
                     "activation_bytes": report.activation_bytes,
                     "activation_bytes_train": report.activation_bytes_train, "runs": []}
        ctx.log(f"{key}: {report.params:,} params, {report.macs / 1e6:.1f}M MACs, "
                f"activations {report.activation_bytes / 1e6:.2f} MB eval, "
                f"{(report.activation_bytes_train or 0) / 1e6:.2f} MB saved for backward")
    trained_maps: list[list[dict[str, Any]]] = []  # per seed, per block
    initial_maps: list[list[dict[str, Any]]] = []
    for i in range(p["seeds"]):
        for key, build in builders.items():
            torch.manual_seed(ctx.seed + i)
            model = build()
            if key == "densenet":
                before = reuse_heatmaps(model)
            model, rows = _train(ctx, model, splits, ctx.seed + i)
            nets[key]["runs"].append({
                "test_acc": accuracy(model, splits.test),
                "val_acc": [r["val_acc"] for r in rows],
                "train_loss": [r["train_loss"] for r in rows],
                "train_s": sum(r["epoch_time_s"] for r in rows)})
            if key == "densenet":  # Fig. 5 plotted from the first seed's network
                trained_maps.append(reuse_heatmaps(model))
                initial_maps.append(before)
            ctx.log(f"{key} seed {ctx.seed + i}: test {pct(nets[key]['runs'][-1]['test_acc'])}")
    return _finding(ctx, splits, nets, trained_maps, initial_maps)


def _train(ctx: Context, model: nn.Module, splits: Splits, seed: int):
    p = ctx.params
    # channels_last: faster convolutions on CPU for both nets.
    return fit(ctx, model, splits, epochs=p["epochs"], seed=seed, batch_size=p["batch_size"],
               lr=p["lr"], schedule="cosine", channels_last=True)


def _finding(ctx: Context, splits: Splits, nets: dict[str, Any],
             trained_maps: list[list[dict[str, Any]]],
             initial_maps: list[list[dict[str, Any]]]) -> Finding:
    p = ctx.params
    heatmaps, initial = trained_maps[0], initial_maps[0]
    dense, res = nets["densenet"], nets["resnet"]
    claims: dict[str, str] = {}

    acc_d = [r["test_acc"] for r in dense["runs"]]
    acc_r = [r["test_acc"] for r in res["runs"]]
    gap = mean_std(acc_r)[0] - mean_std(acc_d)[0]
    fewer = dense["params"] < res["params"]
    t_acc = accuracy_margin(acc_d, acc_r)
    if not fewer or t_acc >= 2:
        claims["fewer parameters at comparable or better accuracy"] = "not supported"
    elif t_acc <= -2:
        claims["fewer parameters at comparable or better accuracy"] = "supported"
    else:
        claims["fewer parameters at comparable or better accuracy"] = "inconclusive"

    eval_ratio = dense["activation_bytes"] / res["activation_bytes"]
    train_ratio = None
    if dense["activation_bytes_train"] and res["activation_bytes_train"]:
        train_ratio = dense["activation_bytes_train"] / res["activation_bytes_train"]
    ratios = [eval_ratio] + ([train_ratio] if train_ratio is not None else [])
    claims["higher activation memory per image"] = (
        "supported" if min(ratios) >= MEMORY_RATIO
        else "not supported" if max(ratios) <= 1.0 else "mixed")

    scores = [reuse_score(h) for h in heatmaps]
    moved = [heatmap_change(h, h0) for h, h0 in zip(heatmaps, initial, strict=True)]
    scores_init = [reuse_score(h) for h in initial]
    claims["later layers reuse early features"], shifts = reuse_verdict(trained_maps,
                                                                        initial_maps)

    verdict = combine_verdicts(claims.values())
    _plots(ctx, nets, heatmaps)
    # One more seed trains both nets again.
    seconds_per_seed = sum(mean_std([r["train_s"] for r in nets[k]["runs"]])[0] for k in nets)
    power = claim_power(claims, acc_d, acc_r, shifts, seconds_per_seed=seconds_per_seed)

    dname = f"DenseNet-BC-{p['dense_depth']} (k={p['growth_rate']})"
    rname = f"ResNet-{p['resnet_depth']} (width {p['resnet_width']})"
    a_d, a_r = mean_std(acc_d)[0], mean_std(acc_r)[0]
    train_text = (f"{train_ratio:.1f}x the bytes saved for backward" if train_ratio is not None
                  else "no train-mode count")
    summary = (
        f"{dname} has {dense['params']:,} parameters and {dense['macs'] / 1e6:.1f}M MACs per "
        f"{splits.image_size[0]}x{splits.image_size[1]} image, {rname} {res['params']:,} and "
        f"{res['macs'] / 1e6:.1f}M ({dense['params'] / res['params']:.2f}x the parameters, "
        f"{dense['macs'] / res['macs']:.2f}x the MACs). Trained the same way ({p['epochs']} "
        f"epochs on {p['train_size']:,} images, {p['seeds']} seed(s)) they reached "
        f"{pct(a_d)} and {pct(a_r)} test accuracy (DenseNet {100 * -gap:+.2f} points; comparable "
        f"= less than 1 point below by 2 standard errors, t {t_acc:+.2f}). Per image the "
        f"DenseNet needs {eval_ratio:.1f}x the ResNet's eval-mode activation peak and "
        f"{train_text} (threshold {MEMORY_RATIO:g}x). In Fig. 5's "
        f"heatmap the later half of each block's layers give the earlier sources "
        + ", ".join(f"{s:.2f}" for s in scores)
        + f" of their strongest source's weight on average (blocks 1-{len(scores)}), "
        + ", ".join(f"{s:.2f}" for s in scores_init)
        + " at initialisation (the trained maps moved by "
        + ", ".join(f"{m:.3f}" for m in moved)
        + " per cell). Judged against that initialisation, training shifted the later "
        "layers' weight towards the early sources, relative to the recent ones, by "
        + ", ".join(f"{s['shift']:+.3f} (t {s['t']:+.1f})" for s in shifts)
        + " (|t| >= 2 decides: > 0 supports reuse, < 0 contradicts it)."
    )
    details = [
        f"{dname}: {dense['params']:,} params, {dense['macs']:,} MACs, activations "
        f"{dense['activation_bytes']:,} B eval peak, {dense['activation_bytes_train']} B saved "
        "for backward (batch 1, cnnzoo.profile).",
        f"{rname}: {res['params']:,} params, {res['macs']:,} MACs, activations "
        f"{res['activation_bytes']:,} B eval peak, {res['activation_bytes_train']} B saved for "
        "backward.",
        f"Training: SGD momentum 0.9, lr {p['lr']}, cosine, weight decay 5e-4, batch "
        f"{p['batch_size']}, no augmentation; the same seed and data order for both nets.",
        "Heatmap: rows are targets (the n dense layers' 1x1 convs, then the transition 'T' or "
        "the classifier 'C'), columns sources (0 = block input); each row divided by its max. "
        "Like every row, the classifier's uses the weights alone, not the BatchNorm scales "
        "(norm5, norm1) applied to its inputs before them.",
        *(f"Block {b + 1}: the transition/classifier gives the block input "
          f"{h['cells'][-1][0]:.2f} and the last layer's maps {h['cells'][-1][h['n']]:.2f}."
          for b, h in enumerate(heatmaps)),
    ] + [f"Power ({claim}): {est['text']}." for claim, est in power.items()]
    measured = {
        "densenet": dense, "resnet": res,
        "params_ratio": dense["params"] / res["params"],
        "macs_ratio": dense["macs"] / res["macs"],
        "activation_ratio_eval": eval_ratio, "activation_ratio_train": train_ratio,
        "accuracy_gap_resnet_minus_densenet": gap, "accuracy_margin": t_acc,
        "reuse_scores": scores, "reuse_scores_init": scores_init, "heatmap_moved": moved,
        "reuse_shift": shifts,
        "heatmaps": heatmaps,
        "seconds_per_seed": seconds_per_seed, "power": power,
    }
    paper = (
        "Table 2 (C10+): DenseNet-BC (L=100, k=12) 0.8M params, 4.51% error vs ResNet-110 "
        "1.7M, 6.41%; Fig. 4 (right): DenseNet-BC matches a ResNet's error with about a third of "
        f"the parameters. Ours on {ctx.data}: {dname} {dense['params'] / 1e6:.2f}M params, "
        f"{pct(1 - a_d)} test error vs {rname} {res['params'] / 1e6:.2f}M, {pct(1 - a_r)} "
        f"({dense['params'] / res['params']:.2f}x the parameters). Fig. 5: layers spread "
        "weight over many sources of their block, the transitions too, and the classifier "
        "concentrates on the last maps."
    )
    return Finding(verdict, summary, measured, paper=paper, details=details, claims=claims)


def _plots(ctx: Context, nets: dict[str, Any], heatmaps: list[dict[str, Any]]) -> None:
    plt = pyplot()

    p = ctx.params
    names = {"densenet": f"DenseNet-BC-{p['dense_depth']}",
             "resnet": f"ResNet-{p['resnet_depth']}"}
    colors = {"densenet": "tab:orange", "resnet": "tab:blue"}

    fig, axes = plt.subplots(1, 5, figsize=(14, 3.2), layout="constrained")
    for key, name in names.items():
        curves = [r["val_acc"] for r in nets[key]["runs"]]
        mean = [sum(c) / len(c) for c in zip(*curves, strict=True)]
        test = mean_std([r["test_acc"] for r in nets[key]["runs"]])[0]
        axes[0].plot(range(1, len(mean) + 1), mean, marker="o", color=colors[key],
                     label=f"{name} (test {pct(test)})")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("validation accuracy")
    axes[0].set_title("accuracy, same budget", fontsize=9)
    axes[0].legend(fontsize=7)
    bars = (("params", "parameters (thousands)", 1e3),
            ("macs", "MACs per image (millions)", 1e6),
            ("activation_bytes", "activations, eval peak (MB/image)", 1e6),
            ("activation_bytes_train", "saved for backward (MB/image)", 1e6))
    for ax, (field, title, scale) in zip(axes[1:], bars, strict=True):
        values = [(nets[k][field] or 0) / scale for k in names]
        ax.bar(list(names.values()), values, color=[colors[k] for k in names])
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:,.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.15)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("DenseNet-BC vs ResNet, counted by cnnzoo.profile and trained on the same "
                 "budget", fontsize=10)
    ctx.save_plot(fig, "comparison.png")

    fig, axes = plt.subplots(1, len(heatmaps), figsize=(3.4 * len(heatmaps) + 1, 3.4),
                             squeeze=False, layout="constrained")
    image = None
    for b, (ax, h) in enumerate(zip(axes[0], heatmaps, strict=True)):
        cells = np.array(h["cells"], dtype=float).T  # rows: sources, columns: targets
        image = ax.imshow(np.ma.masked_invalid(cells), origin="lower", cmap="viridis",
                          vmin=0, vmax=1)
        targets = [str(t) for t in range(1, h["n"] + 1)] + (
            [h["last_target"]] if h["last_target"] else [])
        ax.set_xticks(range(len(targets)), targets, fontsize=7)
        ax.set_yticks(range(h["n"] + 1), [str(s) for s in range(h["n"] + 1)], fontsize=7)
        ax.set_xlabel("target layer (l)")
        if b == 0:
            ax.set_ylabel("source layer (s), 0 = block input")
        ax.set_title(f"dense block {b + 1}", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.8,
                     label="mean |weight|, / row max")
    fig.suptitle(f"Feature reuse in {names['densenet']} (paper Fig. 5)", fontsize=10)
    ctx.save_plot(fig, "reuse_heatmap.png")
