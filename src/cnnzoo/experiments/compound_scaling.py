"""`compound-scaling`: scaling one dimension saturates; scaling all three together pays more.

Tan, Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
arXiv:1905.11946 (https://arxiv.org/abs/1905.11946). Claims: scaling up a baseline's width,
depth or resolution alone improves accuracy, but the gain saturates as the network grows
(Fig. 3: each single-dimension curve flattens near 80% top-1); balancing the three (compound
scaling, depth alpha^phi, width beta^phi, resolution gamma^phi with alpha = 1.2, beta = 1.1,
gamma = 1.15) gives better accuracy for the same FLOPS (Fig. 4 for width at several depth /
resolution settings; Fig. 8: up to 2.5 points over single-dimension scaling of B0).

What is measured. A tiny B0: `EfficientNet` with B0's stage table (Table 1), its stem, MBConv
blocks with SE, at width `base_width`, depth `base_depth` and input side `base_resolution`.
Compound variants take phi in `phis` (each step multiplies the FLOPS by about 2). At each
compound variant's MACs (counted by `cnnzoo.profile`), the single-dimension variants are
chosen to match: the width multiplier, the depth multiplier (both on a grid of steps of
2^(1/8), ~9%) and the input side (integer pixels) whose MACs are closest to the compound's on
a log scale. So every method has the baseline plus one point per budget. Each variant trains
from scratch with the same recipe, data and batch order; test accuracy is measured at the
variant's resolution.

Resolution. Fashion-MNIST is 28x28; a larger resolution is the same image upsampled
bilinearly (antialias off) to the side, batch by batch, in training (the `image_size` option
of `cnnzoo.train`, which resizes after normalisation) and in testing (the same resize of the
normalised test batch). Upsampling adds no detail: resolution scaling here buys larger feature
maps for the same content, not finer content as on ImageNet.

How the verdicts are computed (thresholds fixed here, before any run):
- "each single dimension saturates": per dimension, the accuracy gain per doubling of MACs of
  the first segment (baseline -> first budget) minus that of the last segment; its standard
  error comes from the points' spreads over seeds, floored as `common.margin` floors a single
  seed (0.5 points per point). A drop of >= 2 standard errors: that dimension saturates; a rise
  of >= 2: it does not; otherwise inconclusive. The claim is supported when all three
  saturate, not supported when none does and one does not, mixed when they disagree,
  inconclusive otherwise.
- "compound is best for the MACs": at the largest budget, `common.margin(compound, best
  single)`, where the best single-dimension variant is the one with the highest validation
  accuracy (picked on validation, compared on test): >= 2 supported, <= -2 not supported,
  otherwise inconclusive (one seed: a 1-point gap is needed).
The overall verdict is the claims' common verdict when they agree and "mixed" otherwise.

Deviations from the paper: a network ~1/500 of B0's MACs (width 0.25, depth 0.3 at 28x28)
trained for a few epochs on a Fashion-MNIST subset with SGD and cosine decay, no dropout or
stochastic depth (the paper: ImageNet, RMSProp, 350 epochs, AutoAugment, dropout growing with
the model), and the last norm of each residual block initialised at zero so that added blocks
start as the identity (see `build`); budgets up to ~3.5x the baseline's MACs in the quick
preset (paper Fig. 3: up to ~8x); the stem keeps B0's stride 2, so 28x28 ends at 1x1; channel
counts round to multiples of 8 (B0's rule), so the smallest layers of the tiny baseline are
wider than 0.25x and width steps are coarse; depth can only add whole blocks
(ceil(repeats x d)) and the side changes the MACs in steps (every stride-2 conv rounds up), so
the matched MACs are within ~10-30% of the compound's, not equal (each is plotted at its own
count); one seed in the quick preset.

Run time: tiny ~15 s; quick (9 networks, 4,000 images, 3 epochs, 5,000 test images, one
seed): 197 s in the documented run on 2 cores (a 1-epoch trial on 6,000 images took 156 s,
of which the 30-block depth-only network took 41 s); full (three budgets, 13 networks, 30,000
images, 12 epochs, 2 seeds) estimated at ~6 hours on 2 cores from the trial's cost per image
(not run).

Standard preset (issue 15; committed before its first run): the B0-layout baseline at
width 0.25, depth 0.3, 28 px, scaled to compound phi = 1 and 2 (each single dimension matched
to the compound's MACs), 5,000 training images for 8 epochs, 2 seeds, test on 10,000 images.
Why: in the quick run (3 epochs, one seed) width and depth scaling never beat the baseline,
so nothing could saturate: the nets were undertrained; 8 epochs bring them nearer their
plateau, where the accuracy gain per doubling of MACs is what Tan & Le's Fig. 3 plots, and a
second seed measures the spread. Estimated ~24 min on 2 cores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnzoo.data.augment import resize
from cnnzoo.experiments._margin_power import floored_power, margin_floor_binds, no_estimate
from cnnzoo.experiments._scaling_plan import Variant, build, plan
from cnnzoo.experiments.base import Context, Finding, combine_verdicts, experiment, pyplot
from cnnzoo.experiments.common import (
    SE_FLOOR,
    Splits,
    accuracy,
    fit,
    load_splits,
    margin,
    mean_std,
    pct,
)
from cnnzoo.models.efficientnet import CompoundScaling
from cnnzoo.profile import profile

METHODS = ("width", "depth", "resolution", "compound")
MARGIN = 2.0  # standard errors, as common.margin
FLOOR = SE_FLOOR  # the standard error floor of one accuracy (0.5 points): common.margin's
PAPER_FIG8_GAIN = 2.5  # points: compound over single-dimension scaling of B0, at most
SATURATES = "each single dimension saturates"
COMPOUND_BEST = "compound is best for the MACs"

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"base_width": 0.25, "base_depth": 0.2, "base_resolution": 16, "phis": [1.0, 2.0],
             "train_size": 80, "val_size": 40, "test_size": 80, "epochs": 1, "batch_size": 40,
             "lr": 0.05, "seeds": 1},
    "quick": {"base_width": 0.25, "base_depth": 0.3, "base_resolution": 28, "phis": [1.0, 2.0],
              "train_size": 4000, "val_size": 1000, "test_size": 5000, "epochs": 3,
              "batch_size": 64, "lr": 0.05, "seeds": 1},
    "standard": {"base_width": 0.25, "base_depth": 0.3, "base_resolution": 28, "phis": [1.0, 2.0],
                 "train_size": 5000, "val_size": 1000, "test_size": 10000, "epochs": 8,
                 "batch_size": 64, "lr": 0.05, "seeds": 2},
    "full": {"base_width": 0.25, "base_depth": 0.3, "base_resolution": 28,
             "phis": [1.0, 2.0, 3.0], "train_size": 30000, "val_size": 5000,
             "test_size": 10000, "epochs": 12, "batch_size": 64, "lr": 0.05, "seeds": 2},
}


# ---- the experiment: measure, verdict, finding, plots ------------------------------------


@experiment(
    "compound-scaling",
    title="Compound scaling: width, depth, resolution alone vs together",
    paper="Tan & Le 2019, EfficientNet: Rethinking Model Scaling for Convolutional Neural "
          "Networks, arXiv:1905.11946 (Fig. 3, 4 and 8)",
    claim="Scaling width, depth or resolution alone saturates; compound scaling gives the best "
          "accuracy for the MACs.",
    presets=PRESETS,
)
def run(ctx: Context) -> Finding:
    p = ctx.params
    if not p["phis"] or any(b <= a for a, b in zip(p["phis"], p["phis"][1:], strict=False)) \
            or p["phis"][0] <= 0:
        raise ValueError(f"phis: expected increasing positive compound coefficients, e.g. "
                         f"[1.0, 2.0], got {p['phis']}")
    if p["seeds"] < 1:
        raise ValueError(f"seeds: expected >= 1, got {p['seeds']}")
    base = CompoundScaling(p["base_width"], p["base_depth"], p["base_resolution"])
    splits = load_splits(ctx, train_size=p["train_size"], val_size=p["val_size"],
                         test_size=p["test_size"])
    in_chans, classes = splits.in_chans, splits.num_classes

    counts: dict[CompoundScaling, tuple[int, int]] = {}

    def params_macs(s: CompoundScaling) -> tuple[int, int]:
        if s not in counts:
            report = profile(build(s, in_chans=in_chans, num_classes=classes),
                             (1, in_chans, s.resolution, s.resolution))
            counts[s] = report.params, report.macs
        return counts[s]

    variants = plan(base, p["phis"], lambda s: params_macs(s)[1])
    ctx.log(f"{len(variants)} networks, {len(counts)} MAC counts searched")
    results = []
    for v in variants:
        results.append(_train_variant(ctx, v, splits, *params_macs(v.scaling)))
    verdicts = judge(p, results)
    _plot_curves(ctx, verdicts.curve)
    _plot_dimensions(ctx, verdicts.curve, verdicts.base)
    return finding(ctx, splits, results, verdicts)


# ---- measure -----------------------------------------------------------------------------


@dataclass
class Trained:
    variant: Variant
    params: int
    macs: int
    test_acc: list[float]
    val_acc: list[float]
    epoch_time_s: list[float]


def _train_variant(ctx: Context, v: Variant, splits: Splits, params: int,
                   macs: int) -> Trained:
    p = ctx.params
    side = v.scaling.resolution
    native = tuple(splits.image_size) == (side, side)
    out = Trained(v, params, macs, [], [], [])
    for i in range(p["seeds"]):
        seed = ctx.seed + i
        torch.manual_seed(seed)
        model = build(v.scaling, in_chans=splits.in_chans, num_classes=splits.num_classes)
        model, rows = fit(ctx, model, splits, epochs=p["epochs"], seed=seed,
                          batch_size=p["batch_size"], lr=p["lr"], momentum=0.9,
                          weight_decay=5e-4, schedule="cosine",
                          image_size=None if native else side)
        out.test_acc.append(accuracy(model, splits.test,
                                     transform=None if native else lambda x: resize(x, side)))
        out.val_acc.append(float(rows[-1]["val_acc"]))
        out.epoch_time_s.append(float(np.mean([r["epoch_time_s"] for r in rows])))
    s = v.scaling
    ctx.log(f"{v.method} step {v.step}: w {s.width_mult:.3f} d {s.depth_mult:.3f} r "
            f"{s.resolution}, {macs / 1e6:.2f}M MACs, test {pct(float(np.mean(out.test_acc)))}")
    return out


# ---- verdict -----------------------------------------------------------------------------


def gain_drop(points: Sequence[tuple[float, list[float]]]) -> tuple[float, float, list[float]]:
    """How much the accuracy gain per doubling of MACs falls from the first segment to the
    last of a curve.

    Args:
        points: (MACs, accuracies over seeds) in increasing MACs, at least three.

    Returns:
        (drop, standard error, gains): drop = first gain - last gain in accuracy per doubling
        (positive: the curve flattens); the standard error propagates each point's standard
        error of the mean (floored at FLOOR, as `common.margin`); gains per segment.
    """
    if len(points) < 3:
        raise ValueError(f"gain_drop: expected at least 3 points, got {len(points)}")
    macs = [m for m, _ in points]
    if any(b <= a for a, b in zip(macs, macs[1:], strict=False)):
        raise ValueError(f"gain_drop: MACs must increase, got {macs}")
    means = [mean_std(a)[0] for _, a in points]
    ses = [max(mean_std(a)[1] / math.sqrt(len(a)), FLOOR) if len(a) > 1 else FLOOR
           for _, a in points]
    spans = [math.log2(b / a) for a, b in zip(macs, macs[1:], strict=False)]
    gains = [(means[i + 1] - means[i]) / spans[i] for i in range(len(spans))]
    se = math.sqrt(sum((c * s) ** 2 for c, s in zip(_drop_coefs(macs), ses, strict=True)))
    return gains[0] - gains[-1], se, gains


def _drop_coefs(macs: Sequence[float]) -> list[float]:
    """drop = (a1 - a0)/first - (a_n-1 - a_n-2)/last: each accuracy's coefficient, for the
    variance of a linear combination of independent means."""
    spans = [math.log2(b / a) for a, b in zip(macs, macs[1:], strict=False)]
    first, last, n = spans[0], spans[-1], len(macs)
    coef = [0.0] * n
    coef[0] -= 1 / first
    coef[1] += 1 / first
    coef[n - 1] -= 1 / last
    coef[n - 2] += 1 / last
    return coef


def drop_floor_binds(points: Sequence[tuple[float, list[float]]]) -> tuple[bool, float]:
    """Whether the FLOOR, not the seeds' spread, sets `gain_drop`'s standard error, and the
    standard error the floor alone gives (the least any number of seeds can reach).

    The floor binds when the unfloored standard error (0 with one seed) is at most the
    floor-only one: then more seeds leave the standard error at least that large.
    """
    coef = _drop_coefs([m for m, _ in points])
    raw = math.sqrt(sum((c * (mean_std(a)[1] / math.sqrt(len(a)) if len(a) > 1 else 0.0)) ** 2
                        for c, (_, a) in zip(coef, points, strict=True)))
    floor_only = FLOOR * math.sqrt(sum(c * c for c in coef))
    return raw <= floor_only, floor_only


def seconds_per_seed(p: dict[str, Any], results: Sequence[Trained]) -> float:
    """Training time of one seed of every network, from the measured epoch times."""
    return float(sum(np.mean(r.epoch_time_s) for r in results)) * p["epochs"]


def power(p: dict[str, Any], results: Sequence[Trained], curve: dict[str, list[Trained]],
          saturation: dict[str, dict[str, Any]], top: dict[str, Any],
          claims: dict[str, str]) -> dict[str, Any]:
    """Power estimates (`_margin_power.floored_power`, over seeds) for the claims left
    inconclusive or mixed: per inconclusive dimension for saturation, the top budget's margin
    for compound-is-best."""
    n, sps = p["seeds"], seconds_per_seed(p, results)
    out: dict[str, Any] = {}
    if claims[SATURATES] in ("inconclusive", "mixed"):
        cases = {}
        for m, s in saturation.items():
            if s["verdict"] != "inconclusive":
                continue
            if "t" not in s:
                cases[m] = no_estimate(f"{s['reason']}; needs at least two budgets (phis) "
                                       f"with increasing MACs", n)
                continue
            pts = [(r.macs, r.test_acc) for r in curve[m]]
            binds, floor_se = drop_floor_binds(pts)
            cases[m] = floored_power(
                s["t"], n, seconds_per_unit=sps, floor_binds=binds,
                floor_note=f"at best |t| = {abs(s['drop']) / floor_se:.2f}")
        if cases:  # a mixed claim with no inconclusive dimension has nothing to estimate
            out[SATURATES] = cases
    if claims[COMPOUND_BEST] == "inconclusive":
        comp = curve["compound"][-1]
        best = curve[top["best_single"]][-1]
        out[COMPOUND_BEST] = floored_power(
            top["margin"], n, seconds_per_unit=sps,
            floor_binds=margin_floor_binds(comp.test_acc, best.test_acc))
    return out


def three_way(t: float) -> str:
    return "supported" if t >= MARGIN else "not supported" if t <= -MARGIN else "inconclusive"


@dataclass
class Verdicts:
    """What `judge` concluded and the numbers behind it (saved as they are in results.json):
    `curve` holds, per method, the baseline then its variants in budget order; `no_gain`, the
    dimensions that never beat the baseline by the noise floor."""

    base: Trained
    curve: dict[str, list[Trained]]
    saturation: dict[str, dict[str, Any]]
    per_budget: list[dict[str, Any]]
    no_gain: list[str]
    claims: dict[str, str]
    power: dict[str, Any]


def judge(p: dict[str, Any], results: list[Trained]) -> Verdicts:
    """Both claims' verdicts, by the module docstring's rules."""
    base = next(r for r in results if r.variant.method == "baseline")
    steps = len(p["phis"])
    curve = {m: [base] + sorted((r for r in results if r.variant.method == m),
                                key=lambda r: r.variant.step) for m in METHODS}

    # Claim 1: each single dimension saturates.
    saturation = {}
    for m in ("width", "depth", "resolution"):
        pts = curve[m]
        if steps < 2:
            saturation[m] = {"verdict": "inconclusive", "reason": "fewer than 3 points"}
            continue
        if any(b.macs <= a.macs for a, b in zip(pts, pts[1:], strict=False)):
            saturation[m] = {"verdict": "inconclusive",
                             "reason": "MACs do not increase along the curve"}
            continue
        drop, se, gains = gain_drop([(r.macs, r.test_acc) for r in pts])
        saturation[m] = {"verdict": three_way(drop / se), "drop": drop, "se": se,
                         "t": drop / se, "gains_per_doubling": gains}
    dims = [s["verdict"] for s in saturation.values()]
    if all(d == "supported" for d in dims):
        sat_claim = "supported"
    elif "not supported" in dims:
        sat_claim = "mixed" if "supported" in dims else "not supported"
    else:
        sat_claim = "inconclusive"

    # Claim 2: compound is best at the largest budget (best single picked on validation).
    per_budget = []
    for step in range(1, steps + 1):
        comp = curve["compound"][step]
        singles = [curve[m][step] for m in ("width", "depth", "resolution")]
        best = max(singles, key=lambda r: mean_std(r.val_acc)[0])
        t = margin(comp.test_acc, best.test_acc)
        per_budget.append({
            "step": step, "phi": p["phis"][step - 1], "compound_macs": comp.macs,
            "compound_test_acc": mean_std(comp.test_acc)[0], "best_single": best.variant.method,
            "best_single_macs": best.macs, "best_single_test_acc": mean_std(best.test_acc)[0],
            "best_single_by_test": max(singles, key=lambda r: mean_std(r.test_acc)[0]
                                       ).variant.method,
            "margin": t, "verdict": three_way(t),
            # compound against each single dimension at this budget (margin, MACs ratio)
            "vs": {r.variant.method: {
                "points": 100 * (mean_std(comp.test_acc)[0] - mean_std(r.test_acc)[0]),
                "margin": margin(comp.test_acc, r.test_acc),
                "macs_ratio": r.macs / comp.macs} for r in singles}})
    top = per_budget[-1]
    # A dimension whose best point never beats the baseline by the noise floor (2 x 0.5
    # points) shows no gain to saturate: the claim is about gains that shrink.
    no_gain = [m for m in ("width", "depth", "resolution")
               if max(mean_std(r.test_acc)[0] for r in curve[m][1:])
               - mean_std(base.test_acc)[0] < MARGIN * FLOOR]
    best_claim = top["verdict"]
    claims = {SATURATES: sat_claim, COMPOUND_BEST: best_claim}
    return Verdicts(base, curve, saturation, per_budget, no_gain, claims,
                    power(p, results, curve, saturation, top, claims))


# ---- finding -----------------------------------------------------------------------------


def finding(ctx: Context, splits: Splits, results: list[Trained], verdicts: Verdicts
            ) -> Finding:
    """results.json's numbers and finding.md's text."""
    v = verdicts
    p, base, curve, saturation, per_budget, no_gain = (
        ctx.params, v.base, v.curve, v.saturation, v.per_budget, v.no_gain)
    steps = len(p["phis"])
    top = per_budget[-1]
    seeds_note = (f"{p['seeds']} seeds, mean" if p["seeds"] > 1
                  else "one seed, so differences under ~1 point are noise")
    sat_text = "; ".join(
        f"{m} " + (f"gain per doubling {100 * s['gains_per_doubling'][0]:+.2f} -> "
                   f"{100 * s['gains_per_doubling'][-1]:+.2f} points ({s['verdict']}, "
                   f"t {s['t']:+.1f})" if "t" in s else f"{s['verdict']} ({s['reason']})")
        for m, s in saturation.items())
    summary = (
        f"A B0-layout network at width {p['base_width']}, depth {p['base_depth']}, "
        f"{p['base_resolution']} px ({base.macs / 1e6:.2f}M MACs) scaled to {steps} MAC "
        f"budget(s) (compound phi = {', '.join(str(x) for x in p['phis'])}; each "
        f"single dimension matched to the compound's MACs), trained on {len(splits.train)} "
        f"{ctx.data} images for {p['epochs']} epochs ({seeds_note}). Saturation (accuracy "
        f"gain per doubling of MACs, first segment -> last; a drop of >= {MARGIN:.0f} "
        f"standard errors counts): {sat_text}. At the largest budget "
        f"({top['compound_macs'] / 1e6:.2f}M MACs) compound reaches "
        f"{pct(top['compound_test_acc'])} vs {pct(top['best_single_test_acc'])} for "
        f"{top['best_single']}-only, the best single dimension on validation "
        f"({top['best_single_macs'] / 1e6:.2f}M MACs): margin {top['margin']:+.2f} standard "
        f"errors (>= {MARGIN:.0f} counts as better, <= -{MARGIN:.0f} as worse); compound "
        "minus each single dimension there: " + ", ".join(
            f"{m} {v['points']:+.2f} points (margin {v['margin']:+.1f})"
            for m, v in top["vs"].items()) + "."
        + (f" No gain to saturate: {' and '.join(no_gain)} scaling never beat the baseline by "
           f"{100 * MARGIN * FLOOR:.0f} point or more at this training budget." if no_gain
           else "")
    )
    details = [
        f"{m}: " + ", ".join(
            f"{_label(r.variant)} {r.macs / 1e6:.2f}M MACs {pct(mean_std(r.test_acc)[0])}"
            for r in curve[m]) for m in METHODS]
    details += [
        "Per budget, compound vs the best single dimension on validation (and the margin "
        "against each, with its MACs relative to the compound's): " + "; ".join(
            f"phi {b['phi']}: {pct(b['compound_test_acc'])} vs {b['best_single']} "
            f"{pct(b['best_single_test_acc'])} (margin {b['margin']:+.2f}, {b['verdict']}; "
            "vs each: " + ", ".join(f"{m} {v['points']:+.2f} points, margin {v['margin']:+.1f}, "
                                    f"MACs {v['macs_ratio']:.2f}x" for m, v in b["vs"].items())
            + ")"
            for b in per_budget) + ".",
        "Training time per epoch (s, this CPU; MACs do not predict it: depthwise convs and "
        "many small layers cost more per MAC than larger maps): " + ", ".join(
            f"{r.variant.method}{r.variant.step} {np.mean(r.epoch_time_s):.1f}"
            for r in results) + ".",
    ]
    details += _power_lines(v.power)
    drops = ", ".join(f"{m} {100 * s['drop']:+.2f}" for m, s in saturation.items() if "drop" in s)
    paper = (
        f"Paper Fig. 3 (ImageNet): width, depth and resolution scaling of B0 each flatten near "
        f"80% top-1; ours, gain per doubling first -> last segment falls by {drops or 'n/a'} "
        f"points. Paper Fig. 8 / Table 3: compound scaling beats every single dimension at the "
        f"same FLOPS, by up to {PAPER_FIG8_GAIN} points for B0 (1.4 for scaled MobileNetV1); "
        f"ours at {top['compound_macs'] / 1e6:.2f}M MACs: compound "
        f"{100 * (top['compound_test_acc'] - top['best_single_test_acc']):+.2f} points over the "
        f"best single dimension ({top['best_single']})."
    )
    measured = {
        "base": _scaling_dict(base.variant.scaling),
        "networks": [{"method": r.variant.method, "step": r.variant.step,
                      "factor": r.variant.factor, **_scaling_dict(r.variant.scaling),
                      "params": r.params, "macs": r.macs,
                      "macs_ratio": r.macs / base.macs, "test_acc": r.test_acc,
                      "test_acc_mean": mean_std(r.test_acc)[0], "val_acc": r.val_acc,
                      "epoch_time_s": r.epoch_time_s} for r in results],
        "saturation": saturation,
        "per_budget": per_budget,
        "no_gain": no_gain,
        "power": v.power,
    }
    return Finding(combine_verdicts(verdicts.claims.values()), summary, measured, paper=paper,
                   details=details, claims=verdicts.claims)


def _power_lines(power_: dict[str, Any]) -> list[str]:
    """One details line per inconclusive claim (per inconclusive case for saturation)."""
    lines = []
    for claim, est in power_.items():
        if "text" in est:
            lines.append(f"Power ({claim}, inconclusive): {est['text']}.")
        else:
            lines += [f"Power ({claim}, {case} inconclusive): {e['text']}."
                      for case, e in est.items()]
    return lines


def _scaling_dict(s: CompoundScaling) -> dict[str, Any]:
    return {"width_mult": s.width_mult, "depth_mult": s.depth_mult, "resolution": s.resolution}


def _label(v: Variant) -> str:
    s = v.scaling
    if v.method == "baseline":
        return "baseline"
    if v.method == "compound":
        return f"phi={v.factor:g}"
    value = {"width": s.width_mult, "depth": s.depth_mult, "resolution": s.resolution}[v.method]
    return f"{v.method[0]}={value:.3g}"


# ---- plots -------------------------------------------------------------------------------


COLORS = {"width": "tab:blue", "depth": "tab:green", "resolution": "tab:purple",
          "compound": "tab:red"}


def _plot_curves(ctx: Context, curve: dict[str, list[Trained]]) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in METHODS:
        pts = curve[m]
        x = [r.macs / 1e6 for r in pts]
        y = [100 * mean_std(r.test_acc)[0] for r in pts]
        err = [100 * mean_std(r.test_acc)[1] for r in pts]
        ax.errorbar(x, y, yerr=err if any(err) else None, marker="o", ms=5, capsize=3,
                    color=COLORS[m], lw=2.2 if m == "compound" else 1.4,
                    label=f"{m} scaling" if m != "compound" else "compound scaling")
        for r, xi, yi in zip(pts[1:], x[1:], y[1:], strict=True):
            ax.annotate(_label(r.variant), (xi, yi), fontsize=7, color=COLORS[m],
                        xytext=(4, -9), textcoords="offset points")
    base = curve["width"][0]
    ax.plot([base.macs / 1e6], [100 * mean_std(base.test_acc)[0]], "k*", ms=12,
            label="baseline", zorder=5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("MACs per image (millions, log2 scale; cnnzoo.profile)")
    ax.set_ylabel("test accuracy (%)")
    n = ctx.params["seeds"]
    ax.set_title(f"Accuracy vs MACs by scaling method ({n} seed{'s' if n > 1 else ''}; "
                 f"cf. paper Fig. 8)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    ctx.save_plot(fig, "accuracy_vs_macs.png")


def _plot_dimensions(ctx: Context, curve: dict[str, list[Trained]], base: Trained) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for ax, m in zip(axes, ("width", "depth", "resolution"), strict=True):
        pts = curve[m]
        key = {"width": "width_mult", "depth": "depth_mult", "resolution": "resolution"}[m]
        x = [getattr(r.variant.scaling, key) for r in pts]
        y = [100 * mean_std(r.test_acc)[0] for r in pts]
        ax.plot(x, y, "o-", color=COLORS[m])
        for r, xi, yi in zip(pts, x, y, strict=True):
            ax.annotate(f"{r.macs / base.macs:.1f}x MACs", (xi, yi), fontsize=7,
                        xytext=(3, 4), textcoords="offset points")
        ax.set_xlabel({"width": "width multiplier w", "depth": "depth multiplier d",
                       "resolution": "input side r (px, upsampled)"}[m])
        ax.set_title(f"{m} only", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle("Scaling one dimension of the baseline (cf. paper Fig. 3)", fontsize=10)
    fig.tight_layout()
    ctx.save_plot(fig, "single_dimensions.png")
