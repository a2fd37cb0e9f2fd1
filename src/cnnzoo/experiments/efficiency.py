"""Canziani et al. on the zoo: accuracy vs operations vs parameters, and do operations predict time?

Paper: Canziani, Paszke, Culurciello 2016, "An Analysis of Deep Neural Network Models for
Practical Applications", arXiv:1605.07678 (https://arxiv.org/abs/1605.07678).

Claim tested (the paper's finding 4): "the number of operations is a reliable estimate of the
inference time": across architectures, time per image is a linear function of the operations.

What is measured:
1. The zoo's ImageNet models (`models`) are counted (parameters, MACs per image at
   `image_size`) and timed on this machine by the profiler's own comparison
   (`cnnzoo.profile.compare.compare`, the code behind `cnnzoo compare`): median inference time
   per image at each of `batch_sizes`, eval mode, fp32, one warm-up run, then at least
   `repeats` timed runs (more, up to 10, until `min_time_s` seconds are timed). One model at
   a time, while `OtherLoad` measures the CPU share other processes take: a model timed while
   they took over 10% is timed again (up to 3 attempts, each after waiting up to a minute
   for them to go below 10%), because on 2 cores one busy
   neighbour slowed ResNet-50 from 63 to 850 ms per image in a trial here.
2. Per batch size: the least-squares line of ms/image on GMACs/image and its r²
   (`Comparison.fits`); the same r² with each model left out in turn (its minimum says whether
   one model, typically VGG-16 far to the right, makes the line); each model's achieved
   GMAC/s.
3. Accuracy vs operations vs parameters, after the paper's Figure 2: (a) published ImageNet
   top-1 (`cnnzoo.profile.published`: other people's numbers, never measured here) against
   MACs counted at the published evaluation crop, bubble area = parameters; (b) accuracy on the
   user's data: small zoo models trained here (`train_models`, test top-1, mean and std over
   `seeds`) and, with `runs`, the user's own runs (see `cnnzoo.train.runlog.read_accuracy_points`).
4. Accuracy density (top-1 per million parameters), the paper's accuracy per parameter.

Verdict, per batch size (thresholds `R2_SUPPORTED`, `R2_REJECTED`, `R2_LEAVE_ONE_OUT`):
- supported: r² >= 0.8 and every leave-one-out r² >= 0.5 (no single model makes the line);
- not supported: r² < 0.5;
- inconclusive: in between (a weak line, or a strong one that rests on one model).
Combined: the common verdict if every batch size agrees, else "mixed". Every fit is
"inconclusive" when some model's accepted timing still saw other processes above 10% of the
CPU (`OTHER_LOAD_MAX`): such numbers are not evidence either way. Outliers are reported,
not voted on: models whose achieved GMAC/s is below 1/2 or above 2x the median of the timed
models at that batch size (`OUTLIER_FACTOR`), i.e. operations alone misjudge their time by
more than 2x. On a CPU depthwise convolutions (EfficientNet) are the expected ones: few MACs
per byte moved, so memory traffic, not arithmetic, sets their time.
That is rule "point" (presets tiny, quick, standard): r² judged as a point value.

Rule "2se" (presets standard-2se and full; issue 15: a threshold cleared by 2 standard errors
over resamples), per batch size: the standard error of r² is a seeded bootstrap over models
(`bootstrap_r2`: draw the timed models with replacement, as many as were timed, refit the
line, take its r²; BOOTSTRAP_RESAMPLES = 2000 kept draws, seed = the run's seed; a draw with
fewer than 3 distinct models has no line to speak of and is skipped and drawn again; SE = the
sample sd of the kept r²; with 3 models or fewer there is no spread to draw, SE NaN:
inconclusive), and `base.cleared(r², R2_SUPPORTED, SE)` decides:
- supported: r² >= 0.8 + 2 SE;
- not supported: r² <= 0.8 - 2 SE;
- inconclusive: in between, with `common.power_estimate` in models (the SE shrinks about like
  1 / sqrt(models), an approximation: the models added would have to be like those timed) at
  the measured timing cost per model (timing wall time, every attempt, / models).
One threshold: R2_REJECTED (0.5) is not used, so the band [0.5, 0.8) of rule "point", where a
fit was inconclusive whatever its noise, disappears; an r² of 0.6 with a small SE is now "not
supported". The leave-one-out floor is replaced by the bootstrap, which subsumes it: each
model is absent from about 1 - 1/e = 37% of the resamples (present twice or more in 26%), so a
line that rests on one model (VGG far to the right) gives a wide spread of resampled r² and
fails 2 SE; the lowest leave-one-out r² is still reported. The other-processes guard stays: a
fit timed under more than 10% other load is inconclusive (power: time again on an idle
machine). Outliers are reported, not voted on, as under rule "point".

Deviations from the paper:
- Hardware: this machine's CPU in fp32 with PyTorch (the paper: an NVIDIA Jetson TX1 with
  Torch7 and cuDNN). Batch sizes: 1 and 16 (quick), 1, 16 and 64 (full).
- Models: the zoo's (no BN-NIN, ENet, Inception-v3/v4; DenseNet, SE-ResNet and EfficientNet
  postdate the paper). Operations are MACs from FlopCounterMode (convolutions, linear layers
  and matrix products; norms, activations, pooling count 0), not the paper's own count.
  GoogLeNet is timed as cnnzoo's default build (paper-faithful 5x5 branches; its auxiliary
  heads do not run at inference); its published point is torchvision's BatchNorm variant with
  that model's own parameter count (6.6 M, no auxiliary heads). Published points use the
  published parameter count where the source gives one, cnnzoo's count otherwise.
- Accuracy is published, not measured, on ImageNet; the measured panel is the user's data
  (default Fashion-MNIST, 28x28 grey images) with small models trained for a few epochs
  on a subset (quick: 3,000 images, 3 epochs), far from converged: it shows the shape of the
  trade-off at that budget, not the models' best accuracy.
- Quick preset: 11 models at 224x224, at least 3 timed runs each (medians of few runs).

Run time on the 2 CPU cores here: tiny a few seconds; quick 111 s measured (about 75 s of
timing, 35 s of training; docs/experiments/efficiency/finding.md), more when other processes
make it time a model again; full about 1 hour (estimate, not run): 17 models at batches 1, 16,
64 with at least 5 timed runs (~15 min) and 4 small models x 3 seeds x 10 epochs on 20,000
images (~45 min).

Standard preset (issue 15; committed before its first run): all 17 zoo models of the full
preset timed at 224 px, batch 1 and 16, 5 repeats of at least 0.5 s; the four small
networks trained on 8,000 images for 6 epochs, 2 seeds. Why: the timing claim was decided at
quick, but its r^2 rested on 11 models; the full list gives the linear fit (and its
leave-one-out check) more points across families, and the trained points get a spread over
seeds. Estimated ~15 min on 2 cores (timing needs a quiet machine). Measured: 405 s on a
2-thread AMD EPYC (docs/experiments/efficiency/standard/; 171 s of it timing the 17 models).

Standard-2se preset (issue 15; rule "2se", committed before its first run): the standard
preset unchanged (17 models at 224 px, batch 1 and 16, 5 repeats of at least 0.5 s; the four
small networks, 8,000 images, 6 epochs, 2 seeds), judged by rule "2se". Reasoning: the
bootstrap of the standard run's own timings (2000 resamples, seed 0) gives r² = 0.917 ± 0.038
at batch 1 (t = 3.1) and 0.918 ± 0.043 at batch 16 (t = 2.7): 17 models decide both at the
measured effect, and the same models keep standard-2se comparable with standard (the zoo has
more ImageNet builds, e.g. DenseNet-161, EfficientNet-B1..B7, SE-ResNet-18/34/152, VGG with BN,
for a rerun an inconclusive power estimate asks for); more repeats per model would narrow
each time, not the scatter across architectures that the SE measures. Estimated
~7 min on 2 cores, as the standard run (the bootstrap adds well under a second).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from cnnzoo.experiments._accuracy_points import (
    PublishedPoint,
    check_small_model,
    plot_accuracy_density,
    plot_accuracy_vs_macs,
    published_points,
    train_small_models,
)
from cnnzoo.experiments._margin_power import no_estimate
from cnnzoo.experiments._zoo_timing import Fit, ModelTiming, TimingAnalysis
from cnnzoo.experiments.base import (
    STANDARD_2SE,
    Context,
    Finding,
    cleared,
    combine_verdicts,
    experiment,
)
from cnnzoo.experiments.common import load_splits, pct, power_estimate
from cnnzoo.profile.compare import Comparison, compare
from cnnzoo.profile.plots import figure, label_points, mpl
from cnnzoo.profile.profiler import run_profile
from cnnzoo.profile.report import leave_one_out_r2, linear_fit
from cnnzoo.profile.timing import TimingOptions, measure_when_quiet
from cnnzoo.train.runlog import AccuracyPoint, read_accuracy_points

R2_SUPPORTED = 0.8  # r² at or above: operations predict time
R2_REJECTED = 0.5  # r² below: they do not
R2_LEAVE_ONE_OUT = 0.5  # a supported line must keep this r² without any single model
OUTLIER_FACTOR = 2.0  # achieved GMAC/s beyond median x/÷ this: an outlier
# Timings taken while other processes used more than this fraction of the machine's CPU time
# are not evidence either way (2 busy threads on 2 cores slowed ResNet-50 from 63 to 850 ms).
OTHER_LOAD_MAX = 0.10
TIMING_ATTEMPTS = 3  # a model timed during such a burst is timed again, up to this many times
IDLE_WAIT_S = 60.0  # before timing again, wait up to this long for the neighbour to finish

# `train_models`: any registry name, or one of `cnnzoo.models.narrow.NARROW_VARIANTS`.
PRESETS = {
    "tiny": {
        "models": ["resnet18", "resnet34", "efficientnet_b0"], "image_size": 32,
        "batch_sizes": [1, 2], "repeats": 1, "min_time_s": 0.0,
        "train_models": ["compact_resnet8_k1", "resnet20_w8"], "train_size": 200,
        "val_size": 100, "test_size": 100, "epochs": 1, "batch_size": 50, "lr": 0.05,
        "seeds": 1, "runs": "", "rule": "point",
    },
    "quick": {
        "models": ["alexnet", "vgg11", "vgg16", "googlenet", "resnet18", "resnet34", "resnet50",
                   "resnet101", "densenet121", "se_resnet50", "efficientnet_b0"],
        "image_size": 224, "batch_sizes": [1, 16], "repeats": 3, "min_time_s": 0.3,
        "train_models": ["compact_resnet8_k1", "resnet20_w8", "compact_resnet8", "resnet20"],
        "train_size": 3000, "val_size": 1000, "test_size": 2000, "epochs": 3,
        "batch_size": 128, "lr": 0.05, "seeds": 1, "runs": "", "rule": "point",
    },
    "standard": {"models": ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet", "resnet18",
                 "resnet34", "resnet50", "resnet101", "resnet152", "densenet121", "densenet169",
                 "densenet201", "se_resnet50", "se_resnet101", "efficientnet_b0"],
                 "image_size": 224, "batch_sizes": [1, 16], "repeats": 5, "min_time_s": 0.5,
                 "train_models": ["compact_resnet8_k1", "resnet20_w8", "compact_resnet8",
                 "resnet20"], "train_size": 8000, "val_size": 1000, "test_size": 5000, "epochs": 6,
                 "batch_size": 128, "lr": 0.05, "seeds": 2, "runs": "", "rule": "point"},
    # The standard preset's models, timing and training under rule "2se" (module docstring).
    STANDARD_2SE: {
        "models": ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet", "resnet18",
                   "resnet34", "resnet50", "resnet101", "resnet152", "densenet121",
                   "densenet169", "densenet201", "se_resnet50", "se_resnet101",
                   "efficientnet_b0"],
        "image_size": 224, "batch_sizes": [1, 16], "repeats": 5, "min_time_s": 0.5,
        "train_models": ["compact_resnet8_k1", "resnet20_w8", "compact_resnet8", "resnet20"],
        "train_size": 8000, "val_size": 1000, "test_size": 5000, "epochs": 6,
        "batch_size": 128, "lr": 0.05, "seeds": 2, "runs": "", "rule": "2se",
    },
    "full": {
        "models": ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet", "resnet18",
                   "resnet34", "resnet50", "resnet101", "resnet152", "densenet121",
                   "densenet169", "densenet201", "se_resnet50", "se_resnet101",
                   "efficientnet_b0"],
        "image_size": 224, "batch_sizes": [1, 16, 64], "repeats": 5, "min_time_s": 1.0,
        "train_models": ["compact_resnet8_k1", "resnet20_w8", "compact_resnet8", "resnet20"],
        "train_size": 20000, "val_size": 5000, "test_size": 10000, "epochs": 10,
        "batch_size": 128, "lr": 0.05, "seeds": 3, "runs": "", "rule": "2se",
    },
}
BOOTSTRAP_RESAMPLES = 2000  # resamples of the timed models for the SE of r² (rule "2se")
BOOTSTRAP_MIN_MODELS = 3  # a resample with fewer distinct models has no line to fit: skipped


@experiment(
    "efficiency",
    title="Operations, parameters, accuracy and time across the zoo",
    paper="Canziani, Paszke, Culurciello 2016, An Analysis of Deep Neural Network Models for "
          "Practical Applications, arXiv:1605.07678",
    claim="the number of operations is a reliable estimate of inference time (linear across "
          "architectures); accuracy, operations and parameters trade off as in their Figure 2",
    presets=PRESETS,
)
def run(ctx: Context) -> Finding:
    p = ctx.params
    if p["seeds"] < 1:
        raise ValueError(f"seeds: expected >= 1, got {p['seeds']}")
    splits = None
    if p["train_models"]:
        splits = load_splits(ctx, train_size=p["train_size"], val_size=p["val_size"],
                             test_size=p["test_size"])
        for name in p["train_models"]:  # fail fast, before minutes of timing
            check_small_model(name, splits, ctx.data)
    comparison, loads = _time_zoo(ctx)
    timing = _timing_analysis(comparison, loads, rule=p["rule"], seed=ctx.seed)
    published = published_points(comparison, p["image_size"])
    user = train_small_models(ctx, splits) if splits is not None else []
    run_notes: list[str] = []
    if p["runs"]:
        from_runs, run_notes = read_accuracy_points(p["runs"])
        user += from_runs
        ctx.log(f"runs: {len(from_runs)} accuracies read from {p['runs']!r}")

    plot_accuracy_vs_macs(ctx, published, user)
    _plot_latency_vs_macs(ctx, timing)
    _plot_throughput(ctx, timing)
    plot_accuracy_density(ctx, published, user)
    return _finding(ctx, comparison, timing, published, user, run_notes)


# ---- measure ------------------------------------------------------------------------------


def _time_zoo(ctx: Context) -> tuple[Comparison, dict[str, dict[str, Any]]]:
    """`cnnzoo compare`'s measurement, one model at a time (`measure_when_quiet`): a model
    timed while other processes took over OTHER_LOAD_MAX of the CPU is timed again (up to
    TIMING_ATTEMPTS times). Returns the comparison and, per model, the other processes'
    share during its accepted timing and the attempts it took."""
    p = ctx.params
    side = p["image_size"]
    shape = (3, side, side)
    options = TimingOptions(warmup=1, repeats=p["repeats"], max_repeats=max(10, p["repeats"]),
                            min_time_s=p["min_time_s"], train=False, time_train=False)
    for name in p["models"]:  # fail fast: names and shapes before minutes of timing
        run_profile(name, (1, *shape), timing=False)
    ctx.log(f"timing {len(p['models'])} models at 3x{side}x{side}, batches {p['batch_sizes']}")
    reports, loads, env, wall = [], {}, {}, 0.0
    for i, name in enumerate(p["models"]):
        def one_model(name: str = name) -> Comparison:
            nonlocal wall
            one = compare([name], image_size=shape, batch_sizes=p["batch_sizes"],
                          options=options)
            wall += one.wall_time_s  # every attempt's
            return one

        one, share, attempts = measure_when_quiet(
            one_model, max_load=OTHER_LOAD_MAX, attempts=TIMING_ATTEMPTS, wait_s=IDLE_WAIT_S,
            label=f"[{i + 1}/{len(p['models'])}] {name}", log=ctx.log)
        reports.append(one.reports[0])
        loads[name] = {"other_load": share, "attempts": attempts}
        env = one.env
    return Comparison(tuple(reports), tuple(p["batch_sizes"]), env=env, wall_time_s=wall), loads


def _timing_analysis(comparison: Comparison, loads: dict[str, dict[str, Any]], *,
                     rule: str = "point", seed: int = 0) -> TimingAnalysis:
    """Per model and batch size: GMACs, ms/image, GMAC/s, deviation; per batch size: the fit,
    judged by `r2_verdict` (rule "point") or `r2_verdict_2se` on `bootstrap_r2` (rule "2se")."""
    shares = [v["other_load"] for v in loads.values() if v["other_load"] is not None]
    other_load = max(shares) if shares else None  # the worst model's timing decides
    models = [ModelTiming(r.model, r.params, r.macs_per_image / 1e9, **loads[r.model])
              for r in comparison.reports]
    fits, boot = {}, {}
    for b, lf in comparison.fits().items():
        rows = {r["model"]: r for r in comparison.rows() if r["batch_size"] == b}
        x = [m.gmacs for m in models]
        y = [rows[m.model]["latency_per_image_ms"] for m in models]
        loo = leave_one_out_r2(x, y)
        # Under 4 models a line without one of them has 2 points: no robustness to speak of.
        worst = None if any(math.isnan(v) for v in loo) else min(range(len(loo)),
                                                                  key=lambda i: loo[i])
        loo_min = math.nan if worst is None else loo[worst]
        rates, median, outliers = throughput_deviation(x, y)
        for m, ms, rate, out in zip(models, y, rates, outliers, strict=True):
            m.ms_per_image[b] = ms
            m.gmac_per_s[b] = rate
            m.rate_vs_median[b] = rate / median
            m.outlier[b] = out
            m.fit_ratio[b] = ms / (lf.slope * m.gmacs + lf.intercept)
        if rule == "2se":
            boot[b] = bootstrap_r2(x, y, seed=seed)
            verdict, boot[b]["t"] = r2_verdict_2se(lf.r2, boot[b]["se"], other_load)
        else:
            verdict = r2_verdict(lf.r2, loo_min, other_load)
        fits[b] = Fit(lf.slope, lf.intercept, lf.r2, lf.n, loo_min,
                      None if worst is None else models[worst].model, median, verdict)
    return TimingAnalysis(models, fits, comparison.env, other_load, comparison.wall_time_s,
                          boot)


def bootstrap_r2(x: Sequence[float], y: Sequence[float], *,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The standard error of r² by a seeded bootstrap over models: draw len(x) models with
    replacement, refit the line, take its r²; a draw with fewer than BOOTSTRAP_MIN_MODELS
    distinct models (or no spread in x or y: no r²) is skipped and drawn again, up to
    10 x `resamples` draws. Returns {"se" (sample sd of the resampled r²; NaN under 2 kept),
    "mean", "resamples" (kept), "skipped", "seed"}. The same input and seed give the same SE.
    With BOOTSTRAP_MIN_MODELS models or fewer every kept draw is the original set again (no
    spread, an SE of 0 up to rounding): then nothing is drawn and the SE is NaN."""
    rng = random.Random(seed)
    n = len(x) if len(x) > BOOTSTRAP_MIN_MODELS else 0
    kept: list[float] = []
    skipped = 0
    while len(kept) < resamples and len(kept) + skipped < 10 * resamples and n:
        idx = [rng.randrange(n) for _ in range(n)]
        r2 = linear_fit([x[i] for i in idx], [y[i] for i in idx]).r2 if (
            len(set(idx)) >= BOOTSTRAP_MIN_MODELS) else math.nan
        if math.isfinite(r2):
            kept.append(r2)
        else:
            skipped += 1
    se = statistics.stdev(kept) if len(kept) > 1 else math.nan
    mean = statistics.fmean(kept) if kept else math.nan
    return {"se": se, "mean": mean, "resamples": len(kept), "skipped": skipped, "seed": seed}


def throughput_deviation(gmacs: Sequence[float], ms_per_image: Sequence[float]
                         ) -> tuple[list[float], float, list[bool]]:
    """Achieved GMAC/s per model, their median, and whether each is an outlier (beyond
    OUTLIER_FACTOR times the median, either way)."""
    rates = [g / (ms / 1000) for g, ms in zip(gmacs, ms_per_image, strict=True)]
    median = statistics.median(rates)
    return rates, median, [not 1 / OUTLIER_FACTOR <= r / median <= OUTLIER_FACTOR
                           for r in rates]


# ---- verdict ------------------------------------------------------------------------------


def r2_verdict(r2: float, leave_one_out_min: float, other_load: float | None = None) -> str:
    """The verdict of one batch size's fit under the module's thresholds.

    Args:
        r2: r² of the line of time per image on operations.
        leave_one_out_min: the smallest r² with one model left out (NaN: too few models).
        other_load: fraction of the machine's CPU time other processes used while timing
            (None: unknown); above OTHER_LOAD_MAX the timings are not trusted.
    """
    if not math.isfinite(r2) or (other_load is not None and other_load > OTHER_LOAD_MAX):
        return "inconclusive"
    if r2 < R2_REJECTED:
        return "not supported"
    if r2 >= R2_SUPPORTED and leave_one_out_min >= R2_LEAVE_ONE_OUT:
        return "supported"
    return "inconclusive"


def r2_verdict_2se(r2: float, se: float, other_load: float | None = None) -> tuple[str, float]:
    """Rule "2se" for one batch size's fit: `base.cleared(r2, R2_SUPPORTED, se)` -> (verdict,
    t): supported when r² >= R2_SUPPORTED + 2 SE, not supported when r² <= R2_SUPPORTED - 2 SE,
    inconclusive between (one threshold: R2_REJECTED and the leave-one-out floor are not used,
    see the module docstring). Timings taken under other processes' load are not evidence:
    inconclusive, t NaN."""
    if other_load is not None and other_load > OTHER_LOAD_MAX:
        return "inconclusive", math.nan
    return cleared(r2, R2_SUPPORTED, se)


def fits_power_2se(timing: TimingAnalysis) -> dict[str, dict[str, Any]]:
    """Rule "2se": claim -> power estimate for each inconclusive fit. Under other processes'
    load, `fit_power`'s "time again on an idle machine"; otherwise `common.power_estimate` in
    models (the bootstrap SE of r² shrinks about like 1 / sqrt(models)) at the measured timing
    cost per model (every attempt's wall time / models)."""
    power = {}
    for b, f in timing.fits.items():
        if f.verdict != "inconclusive":
            continue
        load = timing.other_load
        if load is not None and load > OTHER_LOAD_MAX:
            power[claim_of(b)] = fit_power(f, load, timing.wall_time_s)
            continue
        t = timing.bootstrap[b]["t"]
        if not math.isfinite(t):
            power[claim_of(b)] = no_estimate(
                f"{f.n} models give the bootstrap no spread (an SE needs at least "
                f"{BOOTSTRAP_MIN_MODELS + 1}): time more models", f.n, unit="models")
            continue
        power[claim_of(b)] = power_estimate(t, f.n, unit="models",
                                            seconds_per_unit=timing.wall_time_s / max(f.n, 1))
    return power


def claim_of(batch: int) -> str:
    return f"operations predict time, batch {batch}"


def fits_power(fits: dict[int, Fit], other_load: float | None, timing_wall_s: float
               ) -> dict[str, dict[str, Any]]:
    """`fit_power` for each inconclusive fit, keyed by its claim; decided fits get none."""
    return {claim_of(b): fit_power(f, other_load, timing_wall_s) for b, f in fits.items()
            if f.verdict == "inconclusive"}


def fit_power(f: Fit, other_load: float | None, timing_wall_s: float) -> dict[str, Any]:
    """What would decide an inconclusive fit. The rule is on r² and the leave-one-out r²,
    point values with no standard error: r² across architectures is not a mean over units,
    so more timed runs or models do not move it toward a threshold at a known rate and no
    number of units can be computed ("needed" None). A fit made inconclusive by other
    processes' load is decided by timing again on an idle machine: `timing_wall_s`."""
    if other_load is not None and other_load > OTHER_LOAD_MAX:
        return {"t": None, "n": f.n, "unit": "models", "needed": None,
                "seconds": timing_wall_s,
                "text": (f"other processes took {other_load:.0%} of the CPU while timing (limit "
                         f"{OTHER_LOAD_MAX:.0%}): timing the {f.n} models again on an idle "
                         f"machine (~{timing_wall_s / 60:.0f} min here) would decide it")}
    why = ("fewer than 4 models, so no leave-one-out r² can clear "
           f"{R2_LEAVE_ONE_OUT}: time at least 4 models" if math.isnan(f.leave_one_out_min_r2)
           else f"r² {f.r2:.3f} (supported >= {R2_SUPPORTED}, rejected < {R2_REJECTED}), lowest "
                f"leave-one-out r² {f.leave_one_out_min_r2:.3f} (needs >= {R2_LEAVE_ONE_OUT})")
    return {"t": None, "n": f.n, "unit": "models", "needed": None, "seconds": None,
            "text": (f"no power estimate: {why}; the rule is on point values of r² with no "
                     "standard error, and r² across architectures does not converge with more "
                     "timed runs or models at a known rate")}


# ---- finding ------------------------------------------------------------------------------


def _finding(ctx: Context, comparison: Comparison, timing: TimingAnalysis,
             published: list[PublishedPoint], user: list[AccuracyPoint],
             run_notes: list[str]) -> Finding:
    fits = timing.fits
    claims = {claim_of(b): f.verdict for b, f in fits.items()}
    verdict = combine_verdicts(f.verdict for f in fits.values())
    env = timing.env
    fit_text = "; ".join(
        f"batch {b}: r² = {f.r2:.3f} ({f.slope_ms_per_gmac:.1f} ms/GMAC + "
        f"{f.intercept_ms:.1f} ms), " + (
            f"lowest leave-one-out r² {f.leave_one_out_min_r2:.3f} without "
            f"{f.leave_one_out_min_model}" if f.leave_one_out_min_model else
            "no leave-one-out r² (fewer than 4 models)")
        + (f", bootstrap SE of r² {timing.bootstrap[b]['se']:.3f} "
           f"(t = {timing.bootstrap[b]['t']:.2f} against {R2_SUPPORTED})"
           if b in timing.bootstrap else "") for b, f in fits.items())
    outliers = []
    for b, f in fits.items():
        names = [f"{m.model} ({m.gmac_per_s[b]:.1f} GMAC/s, {m.rate_vs_median[b]:.2f}x the "
                 "median)" for m in timing.models if m.outlier[b]]
        outliers.append(f"batch {b} (median {f.median_gmac_per_s:.1f} GMAC/s): "
                        + (", ".join(names) if names else "none"))
    side = ctx.params["image_size"]
    load = timing.other_load
    retimed = sum(m.attempts > 1 for m in timing.models)
    load_text = ("other processes' share of the CPU while timing was not measured (no /proc)"
                 if load is None else
                 f"other processes used at most {load:.0%} of the CPU time while a model was "
                 f"timed" + (f", {retimed} model(s) timed again after a busier attempt"
                             if retimed else "")
                 + (f"; above the {OTHER_LOAD_MAX:.0%} limit the timings are not evidence "
                    f"either way, rerun on an idle machine" if load > OTHER_LOAD_MAX else ""))
    summary = (
        f"{len(comparison.reports)} zoo models timed at 3x{side}x{side} on {env['device_name']} "
        f"({env['threads']} threads, fp32; {load_text}): {fit_text}. "
        + rule_text(ctx.params["rule"]) + " Models whose achieved GMAC/s is beyond "
        f"{OUTLIER_FACTOR:g}x (either way) of the median, where operations alone misjudge "
        f"time by more than {OUTLIER_FACTOR:g}x: "
        + "; ".join(outliers) + ".")
    details = [
        f"{m.model}: {m.params / 1e6:.2f} M params, {m.gmacs:.3f} GMACs, "
        + ", ".join(f"batch {b}: {m.ms_per_image[b]:.1f} ms/image, "
                    f"{m.gmac_per_s[b]:.1f} GMAC/s, {m.fit_ratio[b]:.2f}x the line"
                    for b in fits) for m in timing.models]
    if user:
        best = max(user, key=lambda u: u.accuracy)
        cheapest = min(user, key=lambda u: u.macs)
        details.append(
            "Accuracy on the user's data: " + "; ".join(
                f"{u.model} on {u.data}: {pct(u.accuracy)}"
                + (f" ± {pct(u.accuracy_std)}" if u.accuracy_std else "")
                + f" ({u.source}, {u.params / 1e3:.0f}k params, {u.macs / 1e6:.2f} MMACs, "
                  f"{u.epochs} epochs)" for u in user)
            + f". Most accurate: {best.model}; cheapest: {cheapest.model} "
              f"({pct(cheapest.accuracy)} at {cheapest.macs / best.macs:.2f}x its MACs).")
    details += [f"runs not read: {n}" for n in run_notes]
    details += [f"Published figure for {q.model}: {q.note}." for q in published if q.note]
    power = (fits_power_2se(timing) if ctx.params["rule"] == "2se" else
             fits_power(fits, load, timing.wall_time_s))
    details += [f"Power ({claim}, inconclusive): {e['text']}." for claim, e in power.items()]
    paper = (
        "Canziani et al. (Fig. 1-2, NVIDIA Jetson TX1): inference time is linear in the "
        "operation count across architectures (\"operations are a reliable estimate of the "
        "inference time\"), and top-1 vs operations (bubble = parameters) shows VGG by far the "
        "most expensive in operations and parameters for its accuracy. Ours, on a CPU: the "
        "line's r² is " + ", ".join(f"{f.r2:.3f} at batch {b}" for b, f in fits.items())
        + "; the top-1 vs operations figure is redrawn with the published top-1 of the zoo's "
        "models.")
    measured = _measured(side, comparison, timing, published, user)
    measured["power"] = power
    if timing.bootstrap:
        measured["bootstrap_r2"] = {str(b): v for b, v in timing.bootstrap.items()}
    return Finding(verdict, summary, measured, paper=paper, details=details, claims=claims)


def rule_text(rule: str) -> str:
    """The summary's rule sentence for the preset's rule."""
    busy = (f"any fit timed while other processes used over {OTHER_LOAD_MAX:.0%} of the CPU; "
            "batch sizes that disagree give 'mixed'.")
    if rule == "2se":
        return (f"Rule (2 SE): r² at least 2 bootstrap standard errors (over models, "
                f"{BOOTSTRAP_RESAMPLES} resamples) above {R2_SUPPORTED} supports the claim, at "
                f"least 2 below it rejects it, anything between is inconclusive, and so is "
                + busy)
    return (f"Rule: r² >= {R2_SUPPORTED} with every leave-one-out r² >= {R2_LEAVE_ONE_OUT} "
            f"supports the claim, r² < {R2_REJECTED} rejects it, anything between is "
            f"inconclusive, and so is " + busy)


def _measured(side: int, comparison: Comparison, timing: TimingAnalysis,
              published: list[PublishedPoint], user: list[AccuracyPoint]) -> dict[str, Any]:
    """results.json's `measured`: the dataclasses as JSON (string keys, null for NaN)."""
    env = timing.env
    return {
        "image_size": [3, side, side],
        "batch_sizes": list(comparison.batch_sizes),
        "timing_method": {k: env.get(k) for k in (
            "device", "device_name", "threads", "dtype", "torch_version", "warmup",
            "min_repeats", "max_repeats", "min_time_s", "statistic")},
        "timing_wall_s": timing.wall_time_s,
        "other_load_while_timing": timing.other_load,  # the largest of the models' "other_load"
        "thresholds": {"r2_supported": R2_SUPPORTED, "r2_rejected": R2_REJECTED,
                       "r2_leave_one_out": R2_LEAVE_ONE_OUT, "outlier_factor": OUTLIER_FACTOR,
                       "other_load_max": OTHER_LOAD_MAX},
        # JSON has no NaN: a missing leave-one-out r² is null.
        "fits": {str(b): {k: None if isinstance(v, float) and math.isnan(v) else v
                          for k, v in asdict(f).items()} for b, f in timing.fits.items()},
        # JSON keys are strings: the per-batch dicts are keyed "1", "16", ...
        "models": [{k: {str(b): x for b, x in v.items()} if isinstance(v, dict) else v
                    for k, v in asdict(m).items()} for m in timing.models],
        "published": [asdict(q) for q in published],
        "accuracy_points": [asdict(u) for u in user],
    }


# ---- plots --------------------------------------------------------------------------------
# Drawn with the comparison report's own helpers (`cnnzoo.profile.plots`: the Agg canvas, no
# pyplot state), whose label placement keeps crowded names (ResNet-50 / SE-ResNet-50) readable.
# Figure 2's accuracy panels are drawn beside their points, in _accuracy_points.py.


def _hardware(timing: TimingAnalysis) -> str:
    env = timing.env
    return f"{env.get('device_name')}, {env.get('threads')} threads, fp32"


def _plot_latency_vs_macs(ctx: Context, timing: TimingAnalysis) -> None:
    fits = timing.fits
    if not fits:
        return
    fig, axes = figure(len(fits), width=6.0, height=5.0)
    for ax, (b, f) in zip(axes, fits.items(), strict=True):
        pts = [(m.gmacs, m.ms_per_image[b], m.model, m.outlier[b]) for m in timing.models]
        for out in (False, True):
            sel = [q for q in pts if q[3] == out]
            ax.scatter([q[0] for q in sel], [q[1] for q in sel], s=40,
                       color="tab:red" if out else "tab:blue",
                       label=(f"outlier: GMAC/s beyond {OUTLIER_FACTOR:g}x the median" if out
                              else "model") if sel else None)
        xmax = max(q[0] for q in pts) * 1.05
        ax.plot([0, xmax], [f.intercept_ms, f.intercept_ms + f.slope_ms_per_gmac * xmax],
                color="black", lw=1,
                label=f"{f.slope_ms_per_gmac:.1f} ms/GMAC + {f.intercept_ms:.1f} ms, "
                      f"r² = {f.r2:.3f}\nlowest leave-one-out r² = "
                      f"{f.leave_one_out_min_r2:.3f}")
        label_points(ax, [(q[0], q[1], q[2]) for q in pts], fontsize=7)
        ax.set_xlabel("GMACs per image")
        ax.set_ylabel(f"inference time per image at batch {b} (ms, median)")
        ax.set_title(f"Batch {b}: {f.verdict}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Do operations predict inference time? {_hardware(timing)}", fontsize=11)
    ctx.save_plot(fig, "latency_vs_macs.png")


def _plot_throughput(ctx: Context, timing: TimingAnalysis) -> None:
    fits = timing.fits
    if not fits:
        return
    models = sorted(timing.models, key=lambda m: m.gmacs)
    fig, (ax,) = figure(1, width=8.0, height=0.35 * len(models) * len(fits) + 1.8)
    height = 0.8 / len(fits)
    for j, (b, f) in enumerate(fits.items()):
        color = mpl().colormaps["viridis"](j / max(1, len(fits) - 1) * 0.8)
        ys = [i + (j - (len(fits) - 1) / 2) * height for i in range(len(models))]
        rates = [m.gmac_per_s[b] for m in models]
        bars = ax.barh(ys, rates, height=height, color=color, label=f"batch {b}")
        for bar, m in zip(bars, models, strict=True):
            if m.outlier[b]:
                bar.set_hatch("//")
                bar.set_edgecolor("tab:red")
        med = f.median_gmac_per_s
        ax.axvline(med, color=color, ls="-", lw=1)
        for bound in (med / OUTLIER_FACTOR, med * OUTLIER_FACTOR):
            ax.axvline(bound, color=color, ls=":", lw=1)
    ax.set_yticks(range(len(models)), [f"{m.model} ({m.gmacs:.2f})" for m in models],
                  fontsize=8)
    ax.set_xlabel("achieved GMAC/s (GMACs per image / median time per image)")
    ax.set_title(f"Where operations misjudge time: achieved GMAC/s per model (GMACs)\n"
                 f"solid: median, dotted: median /{OUTLIER_FACTOR:g} and x{OUTLIER_FACTOR:g}; "
                 f"hatched: outliers. {_hardware(timing)}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ctx.save_plot(fig, "throughput.png")
