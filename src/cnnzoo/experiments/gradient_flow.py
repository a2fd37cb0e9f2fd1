"""Gradient flow: through depth in plain vs residual nets, and signal scale under three inits.

Claims (the course's): gradients vanish with depth in plain nets and not through shortcuts
(He et al. 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385, §1, §4.1);
He initialisation keeps the signal's scale in ReLU nets, Xavier and PyTorch's default shrink it
(He et al. 2015, "Delving Deep into Rectifiers", arXiv:1502.01852, §2.2; Glorot & Bengio 2010,
"Understanding the difficulty of training deep feedforward neural networks", AISTATS).

Part (a), gradients through depth. `CifarResNet` plain and residual twins at each depth
(default 20, 56, 110; width `base_width`) get one fixed batch of held-out images; the loss's
gradient is measured per conv layer, in forward order: the weight gradient's L2 norm, and
the norm of the backpropagated gradient, d loss / d (conv output). Four settings:
BN nets (the paper's) at initialisation and after `steps` SGD steps (momentum 0.9, weight
decay 1e-4, batch `batch_size`, constant lr `lr`: the paper's 0.1 per 128 images scaled
linearly in quick, Goyal et al. 2017, arXiv:1706.02677; half of it in full, as the paper
warmed its 110-layer net up at 0.01), and nets without BN (norm replaced by
identity) at initialisation with PyTorch's default conv init and with He init. The
measurements run in float64 on a copy, so a gradient of 1e-40 is a number, not an underflow.

Per net, the attenuation A = |g(first conv)| / |g(last conv)|; per family and setting the
depth trend T = A(deepest) / A(shallowest), which cancels the structural factors (first and
last layers have the same shapes at every depth). The verdict uses the backpropagated
gradient, the quantity that vanishes (Glorot & Bengio §4.2.2 show the weight gradient can
stay level while it does: the forward signal shrinks as the backward one grows); the weight
gradient's A and T are reported beside it.
- "plain nets: the gradient vanishes with depth" (per setting): supported when T < 0.01
  (100x more attenuation at the deepest than at the shallowest net), not supported when
  T >= 0.1, inconclusive in between.
- "shortcuts: no vanishing": supported when the residual T >= 0.1 in every setting, not
  supported when any is < 0.01, inconclusive otherwise.

Part (b), signal scale. A plain stack of `act_depth` 3x3 convs (`act_width` channels, zero
padding 1, no bias, ReLU between, no BN) on a batch of the images; std of every conv's output
under He (kaiming normal, ReLU gain, fan_in and fan_out), Xavier (normal, gain 1) and PyTorch's
default (kaiming uniform, a = sqrt(5)); `act_seeds` weight draws. Per init: the std ratio
last / first layer (geometric mean over draws), the per-layer factor f = ratio^(1/(L-1)), the
R² of a straight-line fit of log std against depth (geometric decay is a straight line), and
the theory: Var(y_l) = fan_in Var(w) Var(y_(l-1)) / 2 through ReLU, so f = 1 for He,
1/sqrt(2) for Xavier (Var(w) = 1/fan_in when fan_in = fan_out), 1/sqrt(6) for the default
(Var(w) = 1/(3 fan_in)), times sqrt of the mean fraction of kernel taps inside the image
(zero padding drops the others; 0.953 at 28x28).
- "He keeps the scale": supported when |f - 1| <= 0.05 for both He modes, not supported
  when either is off by more than 0.1, inconclusive in between.
- "Xavier / default shrink it geometrically, as theory says": supported when both have f
  within 10% of the padded theory and R² >= 0.95; not supported otherwise.
Overall (`combine_verdicts`): the common verdict of all claims, otherwise "mixed".
These are rule "point" (presets tiny, quick, standard): point estimates against bands.

Rule "2se" (presets standard-2se and full; issue 15: a threshold cleared by 2 standard errors
over seeds or draws, `base.cleared`). Each case's statistic is computed per seed (per weight
draw in part (b)); its mean is judged against ONE threshold, the edge the claim is about, with
the standard error of the mean over seeds (sd / sqrt(n); one seed gives no SE and decides
nothing): "supported" when the mean lies beyond the edge on the claimed side by >= 2 SE, "not
supported" when it lies >= 2 SE on the other side, "inconclusive" in between, with
`common.power_estimate` (seeds or draws needed at the measured effect, and their measured
cost). The bands of rule "point" disappear: each claim has one threshold.
- plain nets, per setting: per seed, log10 T (deepest over shallowest attenuation of the
  backpropagated gradient, `seed_log_trends`); edge log10 VANISH = -2, the claim is "below".
- residual nets: the same per-seed log10 T in each of the four settings; edge log10 HEALTHY =
  -1, the claim is "above"; `every_case` over the settings (supported when all are, not
  supported when any is).
- He keeps the scale: per draw f = (last / first)^(1/(L-1)); |mean f - 1| below 0.05 by 2 SE,
  for both He modes (`every_case`).
- Xavier / default as theory says: per draw, |mean f / padded theory - 1| below 0.1 by 2 SE,
  and the per-draw log-linear R² (each draw's own fit, not the fit of the mean profile) above
  0.95 by 2 SE, for both inits (`every_case` over the four cases).
The no-BN settings are measured on `nobn_seeds` seeds (seeds 0..nobn_seeds-1; the first
`seeds` of them are the seeds of the BN settings, whose nets are the same draws), since they
need no training; the BN settings on `seeds`.

Deviations: Fashion-MNIST (28x28x1) by default, width 8 in quick (the paper's 16 in full), a
few hundred steps rather than a full run; the no-BN nets are only measured at initialisation
(training them is not what the claim is about); the conv stack has no bias so that the
init's gain alone sets the scale (PyTorch's default conv bias would add a floor).

Run time on 2 CPU cores: tiny ~6 s; quick 152 s measured (docs/experiments/gradient-flow/,
with other jobs on the machine; ~1.5 min expected idle, two thirds of it training the
110-layer nets); full (width 16, 500 steps of 128, 3 seeds, 50-layer stack
of width 128, 10 draws) about 3 h, dominated by training the six BN nets (64,000 images
each, ~2.5x the width-8 cost per image).

Standard preset (issue 15; committed before its first run): the quick preset's nets and
training (depths 20/56/110 at width 8, 200 steps of 16), with 3 seeds instead of 1, a
128-image gradient batch instead of 64 and 10 draws of the activation stack instead of 6.
Why: the claims are about trends with depth of quantities that vary from one initialisation
to the next; the quick run left "no BN with He init" inconclusive on one seed; 3 seeds give
each trend a spread, and the larger probe batch halves the sampling noise of each layer's
gradient norm. Estimated ~5 min on 2 cores (3x the quick run's training part).
Measured: 238 s on a 2-thread Xeon (docs/experiments/gradient-flow/standard/), 76 s a seed.

Standard-2se preset (issue 15; rule "2se", committed before its first run): the standard
preset's nets, training, probe batch and 10 activation draws, 3 seeds for the BN settings and
40 for the two no-BN settings. Scale and reasoning: on the standard run every claim but one
clears its edge by far more than 2 SE on its 3 seeds (BN after training: log10 T = -4.49 ±
0.36, 6.9 SE below -2; BN at init, 6.47 ± 0.19, far above; residual trends >= 16 SE above -1;
He |f - 1| = 0.020 ± 0.006, 5 SE inside 0.05; Xavier / default within 1.2% of theory, R² 0.998
± 0.0004), so 3 seeds of the trained nets stay. "No BN with He init" had per-seed log10 T =
(-1.45, -2.49, -1.45): -1.79 ± 0.35, t = 0.59 against -2, and `power_estimate` puts ~35 seeds
at that effect; 35 seeds of everything would be ~45 min (76 s each), but a no-BN seed is two
untrained settings, ~16 s on the 2 cores here (measured: 0.5-2.6 s per net profile), so
40 no-BN seeds cost ~10 min and give t ~ 0.59 x sqrt(40 / 3) = 2.2 if the effect is what 3
seeds showed; if it is smaller, the run reports it inconclusive with its power estimate.
Estimated ~14 min on 2 cores (the standard run's 4 min plus 37 no-BN seeds).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnzoo.experiments._gradients import (
    INITS,
    activation_stds,
    attenuation,
    depth_trend,
    geo_mean,
    gradient_profile,
    log_linear_fit,
    valid_tap_fraction,
)
from cnnzoo.experiments._margin_power import band_power, no_estimate
from cnnzoo.experiments.base import (
    STANDARD_2SE,
    Context,
    Finding,
    cleared,
    combine_verdicts,
    every_case,
    experiment,
    pyplot,
)
from cnnzoo.experiments.common import (
    Splits,
    fit,
    load_splits,
    mean_std,
    normalized_batch,
    power_estimate,
)
from cnnzoo.models.resnet_cifar import CifarResNet

VANISH = 0.01  # T below this: the gradient vanishes with depth
HEALTHY = 0.1  # T at or above this: it does not
HE_TOLERANCE = (0.05, 0.1)  # |f - 1| for "keeps the scale" / "does not"
THEORY_TOLERANCE = 0.1  # relative error of f against the padded theory
GEOMETRIC_R2 = 0.95

# Per-layer std factor through conv + ReLU, without padding (see the module docstring).
THEORY = {"he-fan-in": 1.0, "he-fan-out": 1.0, "xavier": 1 / math.sqrt(2),
          "pytorch-default": 1 / math.sqrt(6)}
SETTINGS = {  # name: (BN, conv init, trained)
    "bn-init": ("BN at initialisation", True, "he", False),
    "bn-trained": ("BN after training", True, "he", True),
    "nobn-default-init": ("no BN with PyTorch default init", False, "pytorch-default", False),
    "nobn-he-init": ("no BN with He init", False, "he", False),
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"depths": [8, 14], "base_width": 4, "grad_batch": 32, "steps": 4, "batch_size": 16,
             "lr": 0.0125, "act_depth": 10, "act_width": 16, "act_batch": 4, "act_seeds": 2,
             "seeds": 1, "nobn_seeds": 1, "rule": "point"},
    "quick": {"depths": [20, 56, 110], "base_width": 8, "grad_batch": 64, "steps": 200,
              "batch_size": 16, "lr": 0.0125, "act_depth": 40, "act_width": 64, "act_batch": 16,
              "act_seeds": 6, "seeds": 1, "nobn_seeds": 1, "rule": "point"},
    "standard": {"depths": [20, 56, 110], "base_width": 8, "grad_batch": 128, "steps": 200,
                 "batch_size": 16, "lr": 0.0125, "act_depth": 40, "act_width": 64, "act_batch": 16,
                 "act_seeds": 10, "seeds": 3, "nobn_seeds": 3, "rule": "point"},
    # The standard preset's nets and training; 40 seeds for the two no-BN settings (measured
    # at initialisation only, ~16 s a seed here against ~76 s for a seed of all four settings):
    # the standard run's "no BN with He init" sat 0.59 SE from its edge on 3 seeds, which
    # power_estimate puts at ~35 seeds. See the module docstring's "Standard-2se preset".
    STANDARD_2SE: {"depths": [20, 56, 110], "base_width": 8, "grad_batch": 128, "steps": 200,
                   "batch_size": 16, "lr": 0.0125, "act_depth": 40, "act_width": 64,
                   "act_batch": 16, "act_seeds": 10, "seeds": 3, "nobn_seeds": 40, "rule": "2se"},
    "full": {"depths": [20, 56, 110], "base_width": 16, "grad_batch": 128, "steps": 500,
             "batch_size": 128, "lr": 0.05, "act_depth": 50, "act_width": 128,
             "act_batch": 32, "act_seeds": 10, "seeds": 3, "nobn_seeds": 3, "rule": "2se"},
}


# ---- the experiment: measure, verdict, finding, plots ------------------------------------


@experiment(
    "gradient-flow",
    title="Gradient flow through depth, and signal scale under He / Xavier / default init",
    paper="He et al. 2015, Deep Residual Learning, arXiv:1512.03385; He et al. 2015, Delving "
          "Deep into Rectifiers, arXiv:1502.01852; Glorot & Bengio 2010",
    claim="Gradients vanish with depth in plain nets and not through shortcuts; He "
          "initialisation keeps the signal scale in ReLU nets.",
    presets=PRESETS,
)
def run(ctx: Context) -> Finding:
    p = ctx.params
    depths = p["depths"]
    if (not isinstance(depths, list) or len(depths) < 2
            or not all(isinstance(d, int) and d >= 8 and (d - 2) % 6 == 0 for d in depths)):
        raise ValueError(f"parameter depths: expected two or more depths 6n + 2, e.g. "
                         f"[20, 56, 110]; got {depths!r}")
    depths = sorted(depths)
    if not 1 <= p["seeds"] <= p["nobn_seeds"]:
        raise ValueError(f"parameters seeds, nobn_seeds: expected 1 <= seeds <= nobn_seeds, got "
                         f"{p['seeds']}, {p['nobn_seeds']}")
    train_size = p["steps"] * p["batch_size"]
    # The fixed batch is the held-out split; nothing here reads the test split.
    splits = load_splits(ctx, train_size=train_size, val_size=p["grad_batch"], test_size=1)
    x, y = normalized_batch(splits.val, p["grad_batch"], seed=ctx.seed)
    g = measure_gradients(ctx, splits, x, y, depths)
    started = time.perf_counter()
    a = measure_activations(ctx, x, splits.image_size)
    seconds_per_draw = (time.perf_counter() - started) / p["act_seeds"]
    if p["rule"] == "2se":
        claims, power, stats = judge_2se(g, a, seconds_per_draw)
    else:
        claims = claim_verdicts(g, a)
        power, stats = claim_power(claims, g, g.seconds["seed"]), None
    plot_profiles(ctx, g.profiles, depths, "output_grad", "backprop_gradient.png",
                  "|d loss / d conv output| per layer")
    plot_profiles(ctx, g.profiles, depths, "weight_grad", "weight_gradient.png",
                  "|d loss / d conv weight| per layer")
    plot_trends(ctx, g.summary, depths)
    plot_activations(ctx, a.stacks, a.summary, p["act_depth"], p["act_width"])
    result = finding(ctx, g, a, claims, splits.image_size)
    result.measured["power"] = power
    result.measured["seconds_per_seed"] = g.seconds["seed"]
    if stats is not None:
        result.measured["seconds_per_nobn_seed"] = g.seconds["nobn_seed"]
        result.measured["seconds_per_draw"] = seconds_per_draw
        result.measured["two_se"] = stats
        result.details.extend(two_se_details(stats))
    result.details.extend(f"Power ({claim}): {est['text']}." for claim, est in power.items())
    return result


# ---- measure ------------------------------------------------------------------------------


def build_net(depth: int, shortcut: bool, bn: bool, init: str, width: int, in_chans: int,
              num_classes: int) -> nn.Module:
    model = CifarResNet(depth, shortcut=shortcut, base_width=width, in_chans=in_chans,
                        num_classes=num_classes,
                        norm_layer=nn.BatchNorm2d if bn else nn.Identity)
    if init == "pytorch-default":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
    return model


@dataclass
class Gradients:
    """Part (a): every gradient profile, and their per-setting summary for results.json.

    Attributes:
        depths: the depths, increasing.
        profiles: setting -> family -> depth -> one `gradient_profile` per seed.
        val_acc: family -> depth -> validation accuracy per seed after `steps` (BN nets).
        summary: setting -> family -> attenuations per depth, their trend T and the losses.
        seconds: measured cost of one "seed" (all four settings) and of one "nobn_seed" (the
            two no-BN settings alone), for the power estimates.
    """

    depths: list[int]
    profiles: dict[str, dict[str, dict[int, list[dict[str, Any]]]]]
    val_acc: dict[str, dict[int, list[float]]]
    summary: dict[str, dict[str, dict[str, Any]]]
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Activations:
    """Part (b): conv-output stds per init and draw, and their per-init summary.

    Attributes:
        pad: mean fraction of 3x3 taps inside the image (`valid_tap_fraction`).
        stacks: init -> one list of per-layer stds per weight draw.
        summary: init -> ratio last/first, per-layer factor, fit and theory.
    """

    pad: float
    stacks: dict[str, list[list[float]]]
    summary: dict[str, dict[str, float]]


def measure_gradients(ctx: Context, splits: Splits, x: torch.Tensor, y: torch.Tensor,
                      depths: list[int]) -> Gradients:
    """Part (a): profiles of the plain and residual twins in every setting for `seeds` seeds,
    and in the two no-BN settings (at initialisation, no training) for `nobn_seeds` seeds.
    Each net is built right after `torch.manual_seed(seed)`, so seed i's nets are the same
    whatever the number of seeds."""
    p = ctx.params
    profiles: dict[str, dict[str, dict[int, list]]] = {
        s: {"plain": {d: [] for d in depths}, "residual": {d: [] for d in depths}}
        for s in SETTINGS}
    val_acc: dict[str, dict[int, list[float]]] = {"plain": {d: [] for d in depths},
                                                  "residual": {d: [] for d in depths}}
    nobn_s = 0.0  # seconds spent on the no-BN settings, over every seed
    started = time.perf_counter()
    for i in range(p["nobn_seeds"]):
        seed = ctx.seed + i
        full_seed = i < p["seeds"]  # all four settings; later seeds only the no-BN ones
        for family, shortcut in (("plain", False), ("residual", True)):
            for depth in depths:
                for setting, (_, bn, init, trained) in SETTINGS.items():
                    if trained or (bn and not full_seed):
                        continue  # trained: measured from the BN net below
                    t0 = time.perf_counter()
                    torch.manual_seed(seed)
                    model = build_net(depth, shortcut, bn, init, p["base_width"],
                                      splits.in_chans, splits.num_classes)
                    profiles[setting][family][depth].append(gradient_profile(model, x, y))
                    if not bn:
                        nobn_s += time.perf_counter() - t0
                    if bn:
                        model, rows = fit(ctx, model, splits, epochs=1, seed=seed,
                                          batch_size=p["batch_size"], lr=p["lr"], momentum=0.9,
                                          weight_decay=1e-4, schedule="constant")
                        val_acc[family][depth].append(rows[-1]["val_acc"])
                        profiles["bn-trained"][family][depth].append(
                            gradient_profile(model, x, y))
                shown = [s for s in SETTINGS if full_seed or not SETTINGS[s][1]]
                atts = [attenuation(profiles[s][family][depth][-1]["output_grad"])
                        for s in shown]
                ctx.log(f"seed {seed} {family}-{depth}: backprop gradient first/last conv "
                        + ", ".join(f"{s} {a:.3g}" for s, a in zip(shown, atts, strict=True)))
    total = time.perf_counter() - started
    # A full seed's cost: everything but the no-BN-only seeds' share of the no-BN time.
    extra = p["nobn_seeds"] - p["seeds"]
    seconds = {"seed": (total - nobn_s * extra / p["nobn_seeds"]) / p["seeds"],
               "nobn_seed": nobn_s / p["nobn_seeds"]}
    summary: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        summary[setting] = {}
        for family in ("plain", "residual"):
            entry: dict[str, Any] = {}
            for kind in ("output_grad", "weight_grad"):
                att = {d: geo_mean([attenuation(r[kind]) for r in profiles[setting][family][d]])
                       for d in depths}
                entry[f"{kind}_attenuation"] = {str(d): a for d, a in att.items()}
                entry[f"{kind}_trend"] = depth_trend(att)
            entry["loss"] = {str(d): [r["loss"] for r in profiles[setting][family][d]]
                             for d in depths}
            summary[setting][family] = entry
    return Gradients(depths, profiles, val_acc, summary, seconds)


def measure_activations(ctx: Context, x: torch.Tensor, image_size: tuple[int, int]
                        ) -> Activations:
    """Part (b): activation std through a plain ReLU stack, under every init."""
    p = ctx.params
    xa = x[:p["act_batch"]]
    pad = valid_tap_fraction(*image_size)
    stacks: dict[str, list[list[float]]] = {init: [] for init in INITS}
    act: dict[str, dict[str, float]] = {}
    for init in INITS:
        for j in range(p["act_seeds"]):
            torch.manual_seed(ctx.seed + j)  # the same draws for every init (up to the scale)
            stacks[init].append(activation_stds(xa, p["act_depth"], p["act_width"], init))
        ratio = geo_mean([s[-1] / s[0] for s in stacks[init]])
        mean_log = [math.exp(sum(math.log(s[k]) for s in stacks[init]) / len(stacks[init]))
                    for k in range(p["act_depth"])]
        fitted, r2 = log_linear_fit(mean_log)
        act[init] = {"ratio_last_first": ratio, "per_layer_factor":
                     ratio ** (1 / (p["act_depth"] - 1)), "fitted_factor": fitted, "r2": r2,
                     "theory_factor": THEORY[init],
                     "theory_factor_padded": THEORY[init] * math.sqrt(pad),
                     "theory_ratio_padded": (THEORY[init] * math.sqrt(pad))
                     ** (p["act_depth"] - 1)}
        ctx.log(f"{init}: std last/first {ratio:.3g}, per layer {act[init]['per_layer_factor']:.4f}"
                f" (theory {THEORY[init]:.4f}, padded {act[init]['theory_factor_padded']:.4f})")
    return Activations(pad, stacks, act)


# ---- verdict ------------------------------------------------------------------------------


def vanish_verdict(trend: float) -> str:
    if trend < VANISH:
        return "supported"
    return "not supported" if trend >= HEALTHY else "inconclusive"


def claim_verdicts(g: Gradients, a: Activations) -> dict[str, str]:
    """Every claim's verdict, by the module docstring's rules."""
    claims: dict[str, str] = {}
    for setting, (label, *_rest) in SETTINGS.items():
        trend = g.summary[setting]["plain"]["output_grad_trend"]
        claims[f"plain nets, {label}: the gradient vanishes with depth"] = vanish_verdict(trend)
    residual_trends = [g.summary[s]["residual"]["output_grad_trend"] for s in SETTINGS]
    if all(t >= HEALTHY for t in residual_trends):
        claims["residual nets: no vanishing with depth, in every setting"] = "supported"
    elif any(t < VANISH for t in residual_trends):
        claims["residual nets: no vanishing with depth, in every setting"] = "not supported"
    else:
        claims["residual nets: no vanishing with depth, in every setting"] = "inconclusive"
    act = a.summary
    he_off = max(abs(act[i]["per_layer_factor"] - 1) for i in ("he-fan-in", "he-fan-out"))
    claims["He init keeps the signal scale (plain ReLU stack, no BN)"] = (
        "supported" if he_off <= HE_TOLERANCE[0] else
        "not supported" if he_off > HE_TOLERANCE[1] else "inconclusive")
    shrink_ok = all(
        abs(act[i]["per_layer_factor"] / act[i]["theory_factor_padded"] - 1) <= THEORY_TOLERANCE
        and act[i]["r2"] >= GEOMETRIC_R2 for i in ("xavier", "pytorch-default"))
    claims["Xavier and PyTorch-default init shrink it geometrically, as theory predicts"] = (
        "supported" if shrink_ok else "not supported")
    return claims


def seed_log_trends(g: Gradients, setting: str, family: str) -> list[float]:
    """log10 of each seed's depth trend T (deepest over shallowest attenuation of the
    backpropagated gradient): their mean is log10 of the judged T (a geometric mean)."""
    rows = g.profiles[setting][family]
    lo, hi = g.depths[0], g.depths[-1]
    return [math.log10(attenuation(d["output_grad"]) / attenuation(s["output_grad"]))
            for s, d in zip(rows[lo], rows[hi], strict=True)]


def claim_power(claims: dict[str, str], g: Gradients, seconds_per_seed: float
                ) -> dict[str, Any]:
    """claim -> `band_power` for the inconclusive gradient claims: each is judged on the
    point estimate T against the band [VANISH, HEALTHY), on a log10 scale here."""
    power: dict[str, Any] = {}
    band = (math.log10(VANISH), math.log10(HEALTHY))
    for setting, (label, *_rest) in SETTINGS.items():
        claim = f"plain nets, {label}: the gradient vanishes with depth"
        if claims.get(claim) == "inconclusive":
            logs = seed_log_trends(g, setting, "plain")
            power[claim] = band_power(sum(logs) / len(logs), band, logs,
                                      seconds_per_unit=seconds_per_seed,
                                      what="log10 T (plain nets)")
    claim = "residual nets: no vanishing with depth, in every setting"
    if claims.get(claim) == "inconclusive":
        # The claim fails on its smallest trend: the setting whose T is nearest VANISH.
        setting = min(SETTINGS, key=lambda s: g.summary[s]["residual"]["output_grad_trend"])
        logs = seed_log_trends(g, setting, "residual")
        power[claim] = band_power(sum(logs) / len(logs), band, logs,
                                  seconds_per_unit=seconds_per_seed,
                                  what=f"log10 T (residual, {SETTINGS[setting][0]})")
    return power


# ---- verdict under rule "2se" (the standard-2se preset) ------------------------------------

PLAIN_CLAIM = "plain nets, {}: the gradient vanishes with depth"
RESIDUAL_CLAIM = "residual nets: no vanishing with depth, in every setting"
HE_CLAIM = "He init keeps the signal scale (plain ReLU stack, no BN)"
SHRINK_CLAIM = "Xavier and PyTorch-default init shrink it geometrically, as theory predicts"


def se_case(values: list[float], threshold: float, *, above: bool, seconds_per_unit: float,
            unit: str = "seeds", centre: float | None = None) -> dict[str, Any]:
    """One case under rule "2se": the mean of `values` (one per seed or draw), or its distance
    |mean - centre| when `centre` is given, against `threshold` by `base.cleared` with the
    standard error of the mean over the values (sd / sqrt(n); 0 for one value, which decides
    nothing). An inconclusive case carries `common.power_estimate` in `unit`s at
    `seconds_per_unit` each."""
    mean, sd = mean_std(values)
    n = len(values)
    se = sd / math.sqrt(n) if n > 1 else 0.0
    estimate = mean if centre is None else abs(mean - centre)
    verdict, t = cleared(estimate, threshold, se, above=above)
    case = {"estimate": estimate, "mean": mean, "se": se, "n": n, "threshold": threshold,
            "above": above, "t": t, "verdict": verdict}
    if verdict == "inconclusive":
        case["power"] = (power_estimate(t, n, seconds_per_unit=seconds_per_unit, unit=unit)
                         if math.isfinite(t) else
                         no_estimate(f"{n} {unit} give no standard error: use at least 2", n,
                                     unit))
    return case


def vanish_case(logs: list[float], seconds_per_seed: float) -> dict[str, Any]:
    """"The gradient vanishes": the mean per-seed log10 T below log10 VANISH by 2 SE
    (supported), or above it by 2 SE (not supported)."""
    return se_case(logs, math.log10(VANISH), above=False, seconds_per_unit=seconds_per_seed)


def healthy_case(logs: list[float], seconds_per_seed: float) -> dict[str, Any]:
    """"No vanishing": the mean per-seed log10 T above log10 HEALTHY by 2 SE (supported), or
    below it by 2 SE (not supported)."""
    return se_case(logs, math.log10(HEALTHY), above=True, seconds_per_unit=seconds_per_seed)


def draw_factors(stacks: list[list[float]]) -> list[float]:
    """Each weight draw's per-layer std factor (last / first)^(1 / (L - 1))."""
    return [(s[-1] / s[0]) ** (1 / (len(s) - 1)) for s in stacks]


def judge_2se(g: Gradients, a: Activations, seconds_per_draw: float
              ) -> tuple[dict[str, str], dict[str, Any], dict[str, dict[str, Any]]]:
    """Every claim under rule "2se" (module docstring): -> (claim -> verdict, claim -> power
    for the inconclusive claims, claim -> case -> `se_case`). A claim with several cases is
    `every_case` of theirs."""
    stats: dict[str, dict[str, dict[str, Any]]] = {}
    residual: dict[str, dict[str, Any]] = {}
    for setting, (label, bn, *_rest) in SETTINGS.items():
        cost = g.seconds["seed"] if bn else g.seconds["nobn_seed"]  # a no-BN seed is cheaper
        stats[PLAIN_CLAIM.format(label)] = {
            setting: vanish_case(seed_log_trends(g, setting, "plain"), cost)}
        residual[setting] = healthy_case(seed_log_trends(g, setting, "residual"), cost)
    stats[RESIDUAL_CLAIM] = residual
    stats[HE_CLAIM] = {
        init: se_case(draw_factors(a.stacks[init]), HE_TOLERANCE[0], above=False, centre=1.0,
                      seconds_per_unit=seconds_per_draw, unit="draws")
        for init in ("he-fan-in", "he-fan-out")}
    shrink: dict[str, dict[str, Any]] = {}
    for init in ("xavier", "pytorch-default"):
        theory = a.summary[init]["theory_factor_padded"]
        shrink[f"{init} factor / theory"] = se_case(
            [f / theory for f in draw_factors(a.stacks[init])], THEORY_TOLERANCE, above=False,
            centre=1.0, seconds_per_unit=seconds_per_draw, unit="draws")
        shrink[f"{init} R²"] = se_case(
            [log_linear_fit(s)[1] for s in a.stacks[init]], GEOMETRIC_R2, above=True,
            seconds_per_unit=seconds_per_draw, unit="draws")
    stats[SHRINK_CLAIM] = shrink
    return verdicts_and_power(stats) + (stats,)


def verdicts_and_power(stats: dict[str, dict[str, dict[str, Any]]]
                       ) -> tuple[dict[str, str], dict[str, Any]]:
    """claim -> `every_case` of its cases; claim -> {"cases": case -> power estimate, "text"}
    for each inconclusive claim (its undecided cases, each with its own cost)."""
    claims = {c: every_case(case["verdict"] for case in cases.values())
              for c, cases in stats.items()}
    power = {}
    for c, cases in stats.items():
        if claims[c] == "inconclusive":
            undecided = {k: case["power"] for k, case in cases.items() if "power" in case}
            power[c] = {"cases": undecided,
                        "text": "; ".join(f"{k}: {e['text']}" for k, e in undecided.items())}
    return claims, power


def two_se_details(stats: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """finding.md lines: each case's estimate, SE, threshold, t and verdict."""
    return [f"{claim} (2 SE rule): " + "; ".join(
        f"{k}: {c['estimate']:.4g} ± {c['se']:.3g} (SE, n = {c['n']}) "
        f"{'above' if c['above'] else 'below'} {c['threshold']:.4g}? t = {c['t']:.2f}, "
        f"{c['verdict']}" for k, c in cases.items()) for claim, cases in stats.items()]


def rules_text(rule: str) -> str:
    """The rules sentence of the summary, for the preset's rule."""
    if rule == "2se":
        return (f"Rules (2 SE over seeds or draws, one threshold each): the gradient vanishes "
                f"when the mean per-seed log10 T lies below log10 {VANISH:g} by 2 SE (not when "
                f"above it by 2 SE); no vanishing when it lies above log10 {HEALTHY:g} by 2 SE; "
                f"He keeps the scale when |mean f - 1| lies below {HE_TOLERANCE[0]:g} by 2 SE; "
                f"Xavier/default match theory when |mean f / theory - 1| lies below "
                f"{THEORY_TOLERANCE:g} and the mean per-draw R² above {GEOMETRIC_R2:g}, by 2 SE.")
    return (f"Rules: the gradient vanishes when T < {VANISH:g}, not when T >= {HEALTHY:g}; He "
            f"keeps the scale when |f - 1| <= {HE_TOLERANCE[0]:g}; Xavier/default match theory "
            f"within {100 * THEORY_TOLERANCE:.0f}% with a log-linear R² >= {GEOMETRIC_R2:g}.")


# ---- finding ------------------------------------------------------------------------------


def finding(ctx: Context, g: Gradients, a: Activations, claims: dict[str, str],
            image_size: tuple[int, int]) -> Finding:
    """results.json's numbers and finding.md's text from both parts and their verdicts."""
    p, depths, grad_summary, act, pad = ctx.params, g.depths, g.summary, a.summary, a.pad
    measured = {
        "depths": depths, "settings": {s: v[0] for s, v in SETTINGS.items()},
        "gradients": {s: {f: {str(d): g.profiles[s][f][d] for d in depths}
                          for f in g.profiles[s]} for s in SETTINGS},
        "gradient_summary": grad_summary,
        "val_acc_after_training": {f: {str(d): v for d, v in g.val_acc[f].items()}
                                   for f in g.val_acc},
        "steps": p["steps"], "valid_tap_fraction": pad,
        "activation_std": a.stacks, "activation_summary": act,
        "thresholds": {"vanish_T": VANISH, "healthy_T": HEALTHY, "he_tolerance": HE_TOLERANCE,
                       "theory_tolerance": THEORY_TOLERANCE, "geometric_r2": GEOMETRIC_R2},
    }
    lo, hi = depths[0], depths[-1]

    def trends(family: str) -> str:
        return "; ".join(f"{SETTINGS[s][0]}: {grad_summary[s][family]['output_grad_trend']:.3g}"
                         for s in SETTINGS)


    summary = (
        f"(a) From {lo} to {hi} layers, the backpropagated gradient's first-conv / last-conv "
        f"ratio changes by T = ({trends('plain')}) in plain nets and T = "
        f"({trends('residual')}) in residual nets ({p['steps']} steps of training). "
        f"(b) In a {p['act_depth']}-layer plain ReLU conv stack the output std changes per "
        "layer by " + ", ".join(f"x{act[i]['per_layer_factor']:.3f} under {i} (theory "
                                 f"{act[i]['theory_factor_padded']:.3f})" for i in INITS)
        + ". " + rules_text(p["rule"])
    )
    details = [
        f"{SETTINGS[s][0]}: attenuation first/last (backprop gradient) "
        + "; ".join(f"{f} " + ", ".join(
            f"{d}: {grad_summary[s][f]['output_grad_attenuation'][str(d)]:.3g}" for d in depths)
            for f in ("plain", "residual"))
        + "; weight-gradient trend T: plain "
        f"{grad_summary[s]['plain']['weight_grad_trend']:.3g}, residual "
        f"{grad_summary[s]['residual']['weight_grad_trend']:.3g}" for s in SETTINGS
    ] + [
        f"Validation accuracy after {p['steps']} steps (BN nets): " + ", ".join(
            f"{f}-{d} {100 * sum(v) / len(v):.1f}%" for f in g.val_acc
            for d, v in g.val_acc[f].items()),
        f"Zero padding keeps {100 * pad:.1f}% of the 3x3 taps at {image_size[0]}x"
        f"{image_size[1]} on average, so the padded theory multiplies each factor by "
        f"{math.sqrt(pad):.4f}.",
    ]
    paper = (
        "He et al. 2015 (arXiv:1512.03385, §4.1) argue the plain nets' degradation is "
        "\"unlikely to be caused by vanishing gradients\": trained with BN, their "
        "backpropagated gradients \"exhibit healthy norms\"; our BN nets are the test of that "
        "statement. He et al. 2015 (arXiv:1502.01852, §2.2): with Var(w) = 2/n the signal "
        "keeps its scale through ReLU layers, while a 1/n init (Xavier's, for equal fan in "
        "and out) halves the variance per layer; their 30-layer plain net trains with it and "
        "stalls with Xavier's."
    )
    return Finding(combine_verdicts(claims.values()), summary, measured, paper=paper,
                   details=details, claims=claims)


# ---- plots --------------------------------------------------------------------------------


def plot_profiles(ctx: Context, profiles: dict, depths: list[int], kind: str, filename: str,
                  what: str) -> None:
    """Rows: settings; columns: plain / residual; one line per depth (first seed), log y."""
    plt = pyplot()
    fig, axes = plt.subplots(len(SETTINGS), 2, figsize=(8.5, 2.1 * len(SETTINGS)))
    for row, (setting, (label, *_rest)) in enumerate(SETTINGS.items()):
        for col, family in enumerate(("plain", "residual")):
            ax = axes[row][col]
            for depth in depths:
                norms = profiles[setting][family][depth][0][kind]
                ax.semilogy(range(1, len(norms) + 1), [max(v, 1e-300) for v in norms],
                            label=f"{family}-{depth}")
            ax.set_title(f"{family}, {label}", fontsize=9)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.legend(fontsize=7)
            if row == len(SETTINGS) - 1:
                ax.set_xlabel("conv layer (forward order)")
        axes[row][0].set_ylabel("gradient L2 norm")
    fig.suptitle(f"{what}, one fixed batch")
    fig.tight_layout()
    ctx.save_plot(fig, filename, dpi=90)  # eight panels of zigzags: keeps the PNG < 200 KB


def plot_trends(ctx: Context, summary: dict, depths: list[int]) -> None:
    """First / last attenuation against depth, per setting and family, for both measures."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind, title in ((axes[0], "output_grad", "backpropagated gradient"),
                            (axes[1], "weight_grad", "weight gradient")):
        for k, (setting, (label, *_rest)) in enumerate(SETTINGS.items()):
            colour = f"C{k}"
            for family, style in (("plain", "-o"), ("residual", "--s")):
                att = summary[setting][family][f"{kind}_attenuation"]
                ax.semilogy(depths, [max(att[str(d)], 1e-300) for d in depths], style,
                            color=colour, label=f"{family}, {label}")
        ax.set_xlabel("depth (layers)")
        ax.set_ylabel("|g first conv| / |g last conv|")
        ax.set_title(title)
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Gradient attenuation from the last conv to the first, against depth")
    fig.tight_layout()
    ctx.save_plot(fig, "attenuation_vs_depth.png")


def plot_activations(ctx: Context, stacks: dict[str, list[list[float]]], act: dict,
                     depth: int, width: int) -> None:
    """Conv-output std per layer (geometric mean over draws) with the padded theory."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    layers = list(range(1, depth + 1))
    for k, init in enumerate(INITS):
        runs = stacks[init]
        mean = [math.exp(sum(math.log(s[i]) for s in runs) / len(runs)) for i in range(depth)]
        ax.semilogy(layers, mean, color=f"C{k}", lw=2,
                    label=f"{init}: x{act[init]['per_layer_factor']:.3f}/layer")
        theory = [mean[0] * act[init]["theory_factor_padded"] ** i for i in range(depth)]
        ax.semilogy(layers, theory, ":", color=f"C{k}", lw=1)
    ax.set_xlabel("conv layer")
    ax.set_ylabel("std of conv output")
    ax.set_title(f"{depth}-layer plain ReLU conv stack ({width} channels, no BN); dotted: theory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ctx.save_plot(fig, "activation_std.png")
