"""Experiment `effective-receptive-field`: effective vs theoretical receptive fields.

Luo, Li, Urtasun, Zemel 2016, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NIPS 2016, arXiv:1701.04128 (https://arxiv.org/abs/1701.04128).
Claims: depth enlarges the receptive field; the effective receptive field (ERF: the input
pixels that actually move a unit) is Gaussian-like and much smaller than the theoretical one,
growing like sqrt(depth) while the theoretical field grows linearly, so it occupies a
shrinking fraction of it; training (and, here, deformable offsets) changes its size and shape.

What is measured. Three families of CIFAR ResNets (`CifarResNet`, depth 6n + 2, width
`width`): plain (no shortcuts), residual, and deformable (the residual net with its last
`deform_layers` 3x3 convs deformable, zero-initialised offsets, built by
`cnnzoo.models.resnet_cifar.make_deformable`). For each, the ERF heatmap is Luo et al.'s:
the gradient of the centre unit of the final feature map (summed over its channels) with
respect to the input, |grad| summed over input channels and averaged over `erf_images`
inputs. The inputs are mosaics of Fashion-MNIST test images (28 x 28 tiles at a random phase
filling an `erf_size` square), so they are larger than the theoretical field of every net yet
look like the training data at its scale; Luo et al. use random noise at init. Batch norm
runs in eval mode; at init its statistics are first estimated on those inputs (one pass,
no weight change). Every depth in `depths` is measured at init; `train_depths` also after
`epochs` epochs of training on 28 x 28 images. The theoretical field is
`cnnzoo.receptive_field(model, input_shape).features`.

Numbers per heatmap (normalised to unit mass, around the unit's centre pixel):
- r95: radius of the disc holding 95% of the gradient mass (its standard error by
  bootstrap over images); ERF size 2 r95, and its ratio to the theoretical side;
- a least-squares 2-D Gaussian (axis-aligned, centred on the unit: sigma_y, sigma_x, R^2)
  beside the best centred uniform square (R^2): "Gaussian-like" is R^2_gauss >= 0.9 and
  above R^2_square. Both R^2 discount the pixel noise of averaging a finite number of images
  (the per-pixel variance of the mean, estimated from the per-image maps), which would
  otherwise cap them below 1 whatever the shape;
- per-image spread: the coefficient of variation over images of each image's own
  second-moment radius (an input-dependent field varies more).

Verdict (explicit thresholds):
- depth enlarges the RF: the theoretical field grows with depth, and r95 at init grows at
  every depth step with r95(deepest) >= 1.2 r95(shallowest); per family (plain, residual).
- the ERF is much smaller than the theoretical field: 2 r95 / theoretical side < 0.5 at the
  deepest depth and smaller than at the shallowest, per family.
- ERF ~ sqrt(depth): the exponent of a power fit r95 ~ RF^a against the theoretical field
  size at init lies in [0.3, 0.7], per family. Luo et al.'s statement is ERF ~ sqrt(n) for n
  layers where the RF ~ n; here the RF is exactly linear in the blocks per stage n (28 n - 3
  px for depth 6 n + 2), so the exponent against the RF is the one to compare with 1/2 (the
  exponent against depth, which the stem's constant distorts, is reported beside it, and the
  plot fits a sqrt(depth) + b).
- Gaussian-like: at least 3/4 of all heatmaps meet the Gaussian test above.
- training changes the ERF, and deformable offsets change it (trained deformable vs trained
  residual): |relative change of r95| >= 10% and |difference| >= 3 standard errors (the
  spread over `seeds` seeds and the bootstrap over images); per family / per train depth.
- per claim: every family/depth alike gives that verdict, otherwise mixed; a single seed
  gives no training noise, so its changes can only be inconclusive or not supported.
- overall: `combine_verdicts` (base.py): every claim alike gives that verdict, otherwise mixed.

Deviations from the paper: ResNets with batch norm and strides instead of Luo et al.'s
uniform/random stacks of stride-1 convs; mosaic images instead of noise; CIFAR-style nets of
width 8 trained for a few epochs on Fashion-MNIST instead of CIFAR-10/CamVid to convergence;
ERF size by mass radius (Luo et al. use a 2-sigma region of a Gaussian fit).

Run time (2 CPU cores, AMD EPYC): tiny a few seconds; quick 133 s measured (init ERFs of
depths 8-32, 3 families x 2 seeds trained at depth 20 on 5,000 images x 3 epochs); full
about 40 minutes, extrapolated, not run (depths 8-56 at 252 x 252, width 16, 3 seeds trained
at depths 8, 20, 32 on 20,000 images x 8 epochs).

Standard preset (issue 15; committed before its first run): ERFs at depths 8-44 (width 8),
networks trained at depths 8, 20 and 32, 3 seeds, 5 epochs on 5,000 images, 96 mosaic
canvases of 140 px. Why: "training changes the ERF" was mixed on one trained depth and 2
seeds; three trained depths and 3 seeds give each change a spread over networks, and the
extra depth (44) extends the sqrt(depth) fit. Estimated ~10 min on 2 cores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cnnzoo.data import normalize
from cnnzoo.experiments._erf_maps import (
    EDGE,
    build,
    calibrate_bn,
    draw_heatmap,
    erf_heatmaps,
    heatmap_stats,
    mosaic,
    power_fit,
    sqrt_fit,
    theoretical_field,
)
from cnnzoo.experiments._margin_power import floored_power
from cnnzoo.experiments.base import Context, Finding, combine_verdicts, experiment, pyplot
from cnnzoo.experiments.common import Splits, fit, load_splits, mean_std, pct

FAMILIES = ("plain", "residual", "deformable")
GAUSS_R2 = 0.9
RATIO = 0.5  # 2 r95 / theoretical side below this is "much smaller"
GROWTH = 1.2  # r95 at the deepest depth / at the shallowest
EXPONENT = (0.3, 0.7)  # sqrt(depth) growth: the power-fit exponent lies here
CHANGE = 0.10  # relative change of r95 that counts as a change...
Z = 3.0  # ...when it is also this many standard errors

PRESETS = {
    "tiny": dict(depths=[8, 14], train_depths=[8], width=4, deform_layers=2, seeds=2,
                 train_size=200, val_size=50, epochs=1, batch_size=50, lr=0.05,
                 erf_images=4, erf_size=56, bootstrap=20),
    "quick": dict(depths=[8, 14, 20, 32], train_depths=[20], width=8, deform_layers=3, seeds=2,
                  train_size=5000, val_size=1000, epochs=3, batch_size=128, lr=0.1,
                  erf_images=64, erf_size=140, bootstrap=200),
    "standard": {"depths": [8, 14, 20, 32, 44], "train_depths": [8, 20, 32], "width": 8,
                 "deform_layers": 3, "seeds": 3, "train_size": 5000, "val_size": 1000, "epochs": 5,
                 "batch_size": 128, "lr": 0.1, "erf_images": 96, "erf_size": 140,
                 "bootstrap": 200},
    "full": dict(depths=[8, 14, 20, 32, 44, 56], train_depths=[8, 20, 32], width=16,
                 deform_layers=3, seeds=3, train_size=20000, val_size=2000, epochs=8,
                 batch_size=128, lr=0.1, erf_images=128, erf_size=252, bootstrap=200),
}


# ---- the experiment: measure, verdict, finding, plots ------------------------------------


@experiment(
    "effective-receptive-field",
    title="Effective receptive fields: Gaussian, smaller than the theoretical field",
    paper="Luo et al. 2016, Understanding the Effective Receptive Field in Deep Convolutional "
          "Neural Networks, arXiv:1701.04128",
    claim="Depth enlarges the receptive field; the effective field is Gaussian-like, much "
          "smaller than the theoretical one and grows like sqrt(depth); training and deformable "
          "offsets change it.",
    presets=PRESETS,
    aliases=("receptive-field",),  # the old name (before issue 16): `cnnzoo experiment` takes it
)
def run(ctx: Context) -> Finding:
    p = ctx.params
    if any(d not in p["depths"] for d in p["train_depths"]):
        raise ValueError(f"train_depths {p['train_depths']}: each must be one of depths "
                         f"{p['depths']}")
    splits = load_splits(ctx, train_size=p["train_size"], val_size=p["val_size"])
    g = torch.Generator().manual_seed(ctx.seed + 7)
    canvases = mosaic(splits.test.images, p["erf_images"], p["erf_size"], g)
    x = normalize(canvases.float(), splits.train.mean, splits.train.std)

    m = measure(ctx, splits, x)
    v = judge(p, m)
    result = finding(ctx, m, v)
    _plot_heatmaps(ctx, p, m.theory, m.stats)
    _plot_depth_row(ctx, p, m.theory, m.stats)
    _plot_radius(ctx, p, m.theory, m.stats)
    return result


# ---- measure ------------------------------------------------------------------------------


def gaussian_like(stats: dict[str, Any]) -> bool:
    g, sq = stats["gauss"]["r2"], stats["square"]["r2"]
    return math.isfinite(g) and g >= GAUSS_R2 and not g <= sq


@dataclass
class Erfs:
    """What `measure` found.

    Attributes:
        theory: depth -> the theoretical field: rf and jump (px), the centre unit's centre in
            the input (px), input_dependent, clipped (the field is wider than the input).
        stats: state ("init", "trained") -> family -> depth -> `heatmap_stats` per seed.
        accs: family -> train depth -> validation accuracy per seed after training.
    """

    theory: dict[int, dict[str, Any]]
    stats: dict[str, dict[str, dict[int, list[dict[str, Any]]]]]
    accs: dict[str, dict[int, list[float]]]
    seconds_per_seed: float = math.nan  # measured: every family and depth of one seed


def measure(ctx: Context, splits: Splits, x: torch.Tensor) -> Erfs:
    """Theoretical fields per depth, then the ERF of every family, depth and seed at init and,
    at the train depths, after training."""
    p = ctx.params
    side = p["erf_size"]
    c = splits.in_chans
    theory: dict[int, dict[str, Any]] = {}
    for depth in p["depths"]:
        theory[depth] = theoretical_field(build("residual", depth, p["width"],
                                                p["deform_layers"], c, 10, 0), c, side)
        if theory[depth]["clipped"]:
            ctx.log(f"depth {depth}: theoretical field {theory[depth]['rf']} px exceeds the "
                    f"{side} px input")

    # stats[state][family][depth] -> one dict per seed
    stats: dict[str, dict[str, dict[int, list[dict]]]] = {
        s: {f: {} for f in FAMILIES} for s in ("init", "trained")}
    accs: dict[str, dict[int, list[float]]] = {f: {} for f in FAMILIES}
    start = time.perf_counter()
    for i in range(p["seeds"]):
        seed = ctx.seed + i
        for family in FAMILIES:
            # The deformable net at init is the residual net (zero offsets): measured only
            # where it is also trained.
            for depth in p["train_depths"] if family == "deformable" else p["depths"]:
                t = theory[depth]
                model = build(family, depth, p["width"], p["deform_layers"], c,
                              splits.num_classes, seed)
                calibrate_bn(model, x)
                st = heatmap_stats(erf_heatmaps(model, x), t["centre"], t["rf"], p["bootstrap"],
                                   seed)
                stats["init"][family].setdefault(depth, []).append(st)
                if depth not in p["train_depths"]:
                    continue
                model = build(family, depth, p["width"], p["deform_layers"], c,
                              splits.num_classes, seed)
                model, rows = fit(ctx, model, splits, epochs=p["epochs"], seed=seed,
                                  batch_size=p["batch_size"], lr=p["lr"])
                accs[family].setdefault(depth, []).append(rows[-1]["val_acc"])
                st_t = heatmap_stats(erf_heatmaps(model, x), t["centre"], t["rf"],
                                     p["bootstrap"], seed)
                stats["trained"][family].setdefault(depth, []).append(st_t)
                ctx.log(f"seed {seed} {family}-{depth}: r95 init {st['r95']:.1f} px, trained "
                        f"{st_t['r95']:.1f} px (theoretical {t['rf']} px), val "
                        f"{pct(rows[-1]['val_acc'])}")
            ctx.log(f"seed {seed} {family}: init r95 " + ", ".join(
                f"{d}: {runs[-1]['r95']:.1f}" for d, runs in stats["init"][family].items()))

    return Erfs(theory, stats, accs, (time.perf_counter() - start) / p["seeds"])


# ---- verdict ------------------------------------------------------------------------------


def change_verdict(a: list[dict], b: list[dict]) -> tuple[str, float, float]:
    """Is r95 of b (one stats dict per seed) different from a's? -> (verdict, relative change,
    z). SE: the spread over seeds plus the bootstrap SE; one seed cannot be supported."""
    ra, rb = [s["r95"] for s in a], [s["r95"] for s in b]
    ma, sa = mean_std(ra)
    mb, sb = mean_std(rb)
    boot = sum(s["r95_se"] ** 2 for s in a) / len(a) ** 2 + sum(
        s["r95_se"] ** 2 for s in b) / len(b) ** 2
    se = math.sqrt(sa**2 / len(ra) + sb**2 / len(rb) + boot)
    rel = (mb - ma) / ma
    z = abs(mb - ma) / se if se > 0 else math.inf
    if abs(rel) < CHANGE:
        return "not supported", rel, z
    if z >= Z and min(len(ra), len(rb)) > 1:
        return "supported", rel, z
    return "inconclusive", rel, z


@dataclass
class Verdicts:
    """What `judge` concluded: the claims, and the numbers behind them.

    Attributes:
        claims: claim -> verdict.
        per: family (plain, residual) -> grows, smaller, and the power/sqrt fits of r95.
        gauss_share: the share of all heatmaps that are Gaussian-like.
        training, deform: case -> (verdict, relative change, z) of `change_verdict`.
    """

    claims: dict[str, str]
    per: dict[str, dict[str, Any]]
    gauss_share: float
    training: dict[str, tuple[str, float, float]]
    deform: dict[str, tuple[str, float, float]]
    power: dict[str, dict[str, Any]] = field(default_factory=dict)


def judge(p: dict[str, Any], m: Erfs) -> Verdicts:
    """Every claim's verdict, by the module docstring's rules."""
    depths = p["depths"]
    theory, stats = m.theory, m.stats
    init = stats["init"]
    claims: dict[str, str] = {}
    per: dict[str, dict[str, Any]] = {}
    rfs = [theory[d]["rf"] for d in depths]
    for family in ("plain", "residual"):
        r = [mean_of(init[family][d], "r95") for d in depths]
        ratio = [mean_of(init[family][d], "ratio") for d in depths]
        per[family] = {
            "grows": all(b > a for a, b in zip(r, r[1:], strict=False)) and r[-1] >= GROWTH * r[0],
            "smaller": ratio[-1] < RATIO and ratio[-1] < ratio[0],
            # Luo et al.: ERF ~ sqrt(n) where the theoretical RF ~ n. Here the RF is linear in
            # the blocks per stage (28 n - 3 px for 6 n + 2 layers), so the exponent against
            # the RF is the one to compare with 1/2; the one against depth is reported too.
            "vs_rf": power_fit(rfs, r) if len(depths) > 2 else None,
            "vs_depth": power_fit(depths, r) if len(depths) > 2 else None,
            "sqrt": sqrt_fit(depths, r) if len(depths) > 2 else None,
        }
    theory_grows = all(theory[b]["rf"] > theory[a]["rf"] for a, b in zip(depths, depths[1:],
                                                                         strict=False))
    yes = lambda ok: "supported" if ok else "not supported"  # noqa: E731
    claims["depth enlarges the RF (theoretical and effective)"] = combine_verdicts(
        [yes(theory_grows and per[f]["grows"]) for f in per])
    claims["the ERF is much smaller than the theoretical RF"] = combine_verdicts(
        [yes(per[f]["smaller"]) for f in per])
    claims["the ERF grows like sqrt(depth)"] = combine_verdicts(
        [yes(per[f]["vs_rf"] is not None and EXPONENT[0] <= per[f]["vs_rf"]["exponent"]
             <= EXPONENT[1]) for f in per])
    every = [s for state in stats.values() for fam in state.values() for runs in fam.values()
             for s in runs]
    gauss_share = sum(gaussian_like(s) for s in every) / len(every)
    claims["the ERF is Gaussian-like"] = yes(gauss_share >= 0.75)
    training = {f"{f}-{d}": change_verdict(init[f][d], stats["trained"][f][d])
                for f in FAMILIES for d in p["train_depths"]}
    claims["training changes the ERF"] = combine_verdicts([v for v, _, _ in training.values()])
    deform = {f"{d}": change_verdict(stats["trained"]["residual"][d],
                                     stats["trained"]["deformable"][d])
              for d in p["train_depths"]}
    claims["deformable offsets change the ERF (trained)"] = combine_verdicts(
        [v for v, _, _ in deform.values()])
    power = {claim: change_power(cases, p["seeds"], m.seconds_per_seed)
             for claim, cases in (("training changes the ERF", training),
                                  ("deformable offsets change the ERF (trained)", deform))
             if claims[claim] in ("inconclusive", "mixed")}
    return Verdicts(claims, per, gauss_share, training, deform,
                    {c: e for c, e in power.items() if e})


def change_power(cases: dict[str, tuple[str, float, float]], seeds: int,
                 seconds_per_seed: float) -> dict[str, Any]:
    """Seeds that would decide each inconclusive case of `change_verdict` at its measured
    change: t is its z against Z standard errors; the SE (seed spread plus the bootstrap's
    mean-of-seeds term) shrinks like 1 / sqrt(seeds). With one seed there is no seed spread
    yet, so the estimate is a lower bound."""
    return {case: floored_power(z, seeds, seconds_per_unit=seconds_per_seed, z=Z)
            for case, (verdict, _, z) in cases.items() if verdict == "inconclusive"}


# ---- finding ------------------------------------------------------------------------------


def mean_of(runs: list[dict], key: str) -> float:
    return mean_std([r[key] for r in runs])[0]


def finding(ctx: Context, m: Erfs, v: Verdicts) -> Finding:
    """results.json's numbers and finding.md's text."""
    p, theory, stats, accs = ctx.params, m.theory, m.stats, m.accs
    claims, per, gauss_share, training, deform = (v.claims, v.per, v.gauss_share, v.training,
                                                  v.deform)
    depths = p["depths"]
    lo, hi = depths[0], depths[-1]
    init = stats["init"]
    rfs = [theory[d]["rf"] for d in depths]

    def cell(runs: list[dict]) -> dict[str, Any]:
        out = {k: mean_std([r[k] for r in runs]) for k in ("r95", "r50", "ratio",
                                                          "per_image_radius_cv")}
        out = {k: [round(m, 4), round(s, 4)] for k, (m, s) in out.items()}
        out["r95_bootstrap_se"] = round(mean_of(runs, "r95_se"), 4)
        out["edge_mass"] = round(mean_of(runs, "edge_mass"), 4)
        for fit_name in ("gauss", "square"):
            out[fit_name] = {k: round(mean_std([r[fit_name][k] for r in runs])[0], 4)
                             for k in runs[0][fit_name]}
        out["gaussian_like"] = sum(gaussian_like(r) for r in runs) / len(runs)
        return out

    measured = {
        "theoretical": {str(d): {"rf_px": t["rf"], "jump_px": t["jump"],
                                 "centre_px": list(t["centre"]), "clipped": t["clipped"]}
                        for d, t in theory.items()},
        "erf": {state: {f: {str(d): cell(runs) for d, runs in fam.items()}
                        for f, fam in st.items()} for state, st in stats.items()},
        "fits": {f: {k: per[f][k] for k in ("vs_rf", "vs_depth", "sqrt")} for f in per},
        "theoretical_vs_depth": power_fit(depths, rfs) if len(depths) > 2 else None,
        "gaussian_share": gauss_share,
        "training_change": {k: {"verdict": v, "relative": round(r, 4), "z": round(z, 2)}
                            for k, (v, r, z) in training.items()},
        "deformable_vs_residual": {k: {"verdict": v, "relative": round(r, 4), "z": round(z, 2)}
                                   for k, (v, r, z) in deform.items()},
        "val_acc": {f: {str(d): v for d, v in a.items()} for f, a in accs.items()},
        "seconds_per_seed": m.seconds_per_seed,
        "power": v.power,
    }

    def r95(state: str, f: str, d: int) -> str:
        m, s = mean_std([r["r95"] for r in stats[state][f][d]])
        return f"{m:.1f}" + (f" ± {s:.1f}" if len(stats[state][f][d]) > 1 else "")

    fit_txt = ", ".join(f"{f} {per[f]['vs_rf']['exponent']:.2f} (vs depth "
                        f"{per[f]['vs_depth']['exponent']:.2f})" for f in per if per[f]["vs_rf"])
    train_txt = "; ".join(
        f"{f}-{d} {r95('init', f, d)} -> {r95('trained', f, d)} px "
        f"({100 * training[f'{f}-{d}'][1]:+.0f}%, z {training[f'{f}-{d}'][2]:.1f})"
        for f in FAMILIES for d in p["train_depths"])
    summary = (
        f"ERF radius r95 (95% of the |gradient| mass) at init, depth {lo} -> {hi}: plain "
        f"{r95('init', 'plain', lo)} -> {r95('init', 'plain', hi)} px, residual "
        f"{r95('init', 'residual', lo)} -> {r95('init', 'residual', hi)} px, while the "
        f"theoretical field grows {theory[lo]['rf']} -> {theory[hi]['rf']} px; ERF size 2 r95 / "
        f"theoretical side at depth {hi}: plain {mean_of(init['plain'][hi], 'ratio'):.2f}, "
        f"residual {mean_of(init['residual'][hi], 'ratio'):.2f} (threshold < {RATIO}); power "
        f"fit exponent of r95 vs the theoretical RF size: {fit_txt} (sqrt growth: within "
        f"{list(EXPONENT)}). "
        f"{100 * gauss_share:.0f}% of heatmaps are Gaussian-like (Gaussian R^2 >= {GAUSS_R2} "
        f"and above a uniform square's; threshold 75%). Training ({p['epochs']} epochs, "
        f"{p['seeds']} seed(s)): {train_txt}; trained deformable vs residual: " + "; ".join(
            f"depth {d} {100 * r:+.0f}% (z {z:.1f})" for d, (_, r, z) in deform.items())
        + f". A change counts at >= {100 * CHANGE:.0f}% and >= {Z:g} standard errors "
        f"(seed spread and bootstrap over {p['erf_images']} mosaic images).")
    cut = [f"{state} {f}-{d} ({100 * mean_of(runs, 'edge_mass'):.1f}%)"
           for state, st in stats.items() for f, fam in st.items() for d, runs in fam.items()
           if mean_of(runs, "edge_mass") > 0.01]
    details = [f"inputs: {p['erf_images']} mosaics of {p['erf_size']}x{p['erf_size']} px from "
               "Fashion-MNIST test images; the unit: centre of the final feature map",
               "the deformable net at init computes exactly the residual net (zero offsets); "
               "its theoretical field is the nominal grid, flagged input-dependent"]
    if cut:
        details.append(f"more than 1% of the gradient mass lies within {EDGE} px of the "
                       f"canvas border for {', '.join(cut)}: the field reaches past the input, "
                       "so its r95 is a lower bound")
    details += [f"Power ({claim}, {case} inconclusive): {e['text']}."
                for claim, cases in v.power.items() for case, e in cases.items()]
    ratios = ", ".join(f"{f} {mean_of(init[f][hi], 'ratio'):.2f}" for f in per)
    changes = ", ".join(f"{k} {100 * r:+.0f}%" for k, (_, r, _) in training.items())
    return Finding(
        combine_verdicts(claims.values()), summary, measured, claims=claims, details=details,
        paper=("Luo et al. (Fig. 1-2, §2-3): the ERF is Gaussian, grows as O(sqrt(n)) with n "
               "layers (exponent 1/2) while the theoretical RF grows as O(n), so it occupies a "
               "fraction shrinking as O(1/sqrt(n)); training enlarges it (before vs after "
               f"training, CIFAR-10 and CamVid). Ours: exponent vs the RF {fit_txt or 'n/a'}; "
               f"2 r95 / theoretical side at depth {hi}: {ratios}; Gaussian-like "
               f"{100 * gauss_share:.0f}% of heatmaps; r95 change with training: {changes}."))


# ---- plots --------------------------------------------------------------------------------


def _plot_heatmaps(ctx: Context, p: dict, theory: dict, stats: dict) -> None:
    plt = pyplot()
    rows = [(f, d) for d in p["train_depths"] for f in FAMILIES]
    fig, axes = plt.subplots(len(rows), 2, figsize=(5, 2.5 * len(rows)), squeeze=False)
    for k, (f, d) in enumerate(rows):
        for j, state in enumerate(("init", "trained")):
            run0 = stats[state][f][d][0]
            draw_heatmap(axes[k, j], run0["heat"], theory[d], run0["r95"],
                  f"{f}-{d} {state}: r95 {run0['r95']:.1f} px")
    fig.suptitle("ERF (|d centre unit / d input|, mean over images; dashed: theoretical RF, "
                 "circle: 95% mass)", fontsize=8)
    fig.tight_layout()
    ctx.save_plot(fig, "erf_heatmaps.png", dpi=90)


def _plot_depth_row(ctx: Context, p: dict, theory: dict, stats: dict) -> None:
    plt = pyplot()
    fams = ("plain", "residual")
    fig, axes = plt.subplots(len(fams), len(p["depths"]), squeeze=False,
                             figsize=(2.2 * len(p["depths"]), 2.4 * len(fams)))
    for i, f in enumerate(fams):
        for j, d in enumerate(p["depths"]):
            run0 = stats["init"][f][d][0]
            draw_heatmap(axes[i, j], run0["heat"], theory[d], run0["r95"],
                  f"{f}-{d} init: r95 {run0['r95']:.1f}, RF {theory[d]['rf']}")
    fig.suptitle("ERF at initialisation by depth (dashed: theoretical RF; circle: 95% mass)",
                 fontsize=9)
    fig.tight_layout(h_pad=1.5)
    ctx.save_plot(fig, "erf_by_depth.png", dpi=90)


def _plot_radius(ctx: Context, p: dict, theory: dict, stats: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    depths = p["depths"]
    grid = np.linspace(min(depths), max(depths), 100)
    for f, color in (("plain", "tab:blue"), ("residual", "tab:orange"),
                     ("deformable", "tab:red")):
        if f != "deformable":
            r = [mean_std([s["r95"] for s in stats["init"][f][d]]) for d in depths]
            ax.errorbar(depths, [m for m, _ in r], yerr=[s for _, s in r], marker="o",
                        color=color, label=f"{f}, init")
            if len(depths) > 2:
                fit = sqrt_fit(depths, [m for m, _ in r])
                ax.plot(grid, fit["a"] * np.sqrt(grid) + fit["b"], ":", color=color,
                        label=f"{fit['a']:.1f} sqrt(depth) {fit['b']:+.1f} (R² {fit['r2']:.3f})")
        tr = [(d, mean_of(stats["trained"][f][d], "r95")) for d in p["train_depths"]]
        ax.plot(*zip(*tr, strict=True), "s", color=color, mfc="none", ms=9,
                label=f"{f}, trained")
    ax.plot(depths, [theory[d]["rf"] / 2 for d in depths], "k--",
            label="theoretical RF / 2 (half-side)")
    ax.set_xlabel("depth (weighted layers, 6n + 2)")
    ax.set_ylabel("radius (px)")
    ax.set_title("ERF radius r95 (95% of the gradient mass) vs depth")
    ax.legend(fontsize=7)
    ctx.save_plot(fig, "erf_radius.png")
