"""`paths`: how much gradient the paths of each length carry in a trained ResNet (Veit et al.).

Veit, Wilber, Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks", arXiv:1605.06431 (https://arxiv.org/abs/1605.06431), §3 (the unraveled view) and
§5, Fig. 6.

Claim: a ResNet of n blocks is a collection of 2^n paths whose lengths (blocks whose residual
branch the path goes through) follow Binomial(n, 1/2); in a trained ResNet the gradient a path
carries shrinks quickly with its length, so most of the gradient comes from paths much shorter
than the typical n/2: the "effective" paths are short.

What is measured:
- (a) the path-length distribution: C(n, k) of the 2^n paths have length k (exact);
- (b) on a trained CIFAR ResNet (`CifarResNet`), the paper's sampling method: one forward pass
  of a batch of training images (eval mode, so BatchNorm uses its running statistics and
  every image's gradient is its own), then, for each length k, backward passes in which k
  randomly chosen blocks pass the gradient through their residual branch only and the other
  n - k through their shortcut only. That is the gradient of exactly one path of length k.
  Its magnitude is the L2 norm of d(cross-entropy)/d(input of the first block), per image,
  averaged over the images and over `samples` (path, batch) draws per length (all of them when
  there are fewer). Every block's ReLU after the addition keeps its forward mask on both routes:
  that is how the sum of all 2^n path gradients equals the true gradient (tested).
- total gradient per length: magnitude x C(n, k) (Fig. 6b), normalised to shares; the
  effective path lengths are the central 90% of that total (from the length where the
  cumulative share reaches 5% to the one where it reaches 95%), and the gradient-weighted mean
  path length L = sum_k k * share(k).

Verdict (claims, from the seed-mean numbers and their standard error SE: over the seeds when
there are several, else from the path sampling alone, by redrawing each length's mean magnitude
from a normal with its standard error, 1,000 times; a single seed cannot show how much the
training run moves the numbers, so treat a one-seed verdict near a threshold with care):
- "gradient per path shrinks with its length": the per-block factor exp(b) of a least-squares
  fit log(magnitude) = a + b k is below DECAY_SUPPORTED (0.9) by more than 2 SE: supported;
  at or above 1 by more than 2 SE: not supported; otherwise inconclusive;
- "most gradient comes from short paths": the ratio L / (n/2) (n/2 = the mean and median path
  length) is below SHORT_SUPPORTED (0.8) by more than 2 SE: supported; above SHORT_REJECTED
  (0.95) by more than 2 SE: not supported; otherwise inconclusive.
The verdict is the claims' common verdict, "mixed" when they differ; both are "inconclusive"
when the net ends less than TRAINED_MIN_MARGIN (20) points above chance on validation (it is
then not the trained network the claim is about). The Binomial counts are
arithmetic, not a measurement, so they are not a claim (`path_length_counts` is tested against
an enumeration of the 2^n subsets).

Deviations from the paper: the paper measures a ResNet-110 (n = 54 blocks, width 16) trained
on CIFAR-10 with 1,000 samples per length; the quick preset uses ResNet-32 (n = 15) at width
8, 5 epochs on 8,000 Fashion-MNIST images, 2 batches of 128 training images and 50 samples
per length. The paper does not say where it measures the gradient or in which BatchNorm mode:
here it is at the first block's input, with BatchNorm in eval mode. The full preset keeps the
paper's depth (ResNet-110, width 8, 20 epochs on 55,000 images, 200 samples per length over 4
batches, 3 seeds); it is estimated, not run, at about 6 hours on the 2-core CPU here (per
seed ~1.5 h of training and ~0.3 h for the ~300,000 routed backward passes through a block).
The quick preset took 91 s here (2-core AMD EPYC, 2 torch threads): ~48 s training, ~42 s
for the 664 sampled (path, batch) pairs (4,980 backward passes through a residual branch).

Standard preset (issue 15; committed before its first run): ResNet-56 (n = 27 blocks, width
8) trained 8 epochs on 8,000 images, 2 seeds, 100 sampled paths per length over 2 batches of
128. Why: "most gradient comes from short paths" is a statement about depth (Veit et al.
measure a 54-block ResNet-110); the quick ResNet-32 (15 blocks) sat at a ratio of 0.79
against the 0.8 threshold; 27 blocks give the binomial length distribution room to separate
short from typical paths, and 2 seeds plus twice the sampled paths give the ratio a spread
over networks. Estimated ~10 min on 2 cores.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F

from cnnzoo.experiments._margin_power import floored_power, no_estimate
from cnnzoo.experiments._veit import BlockParts, block_parts, residual_blocks, train_cifar_net
from cnnzoo.experiments.base import Context, Finding, combine_verdicts, experiment, pyplot
from cnnzoo.experiments.common import load_splits, mean_std, normalized_batch
from cnnzoo.models.resnet_cifar import CifarResNet

DECAY_SUPPORTED = 0.9  # per-block gradient factor below which gradient clearly decays
SHORT_SUPPORTED = 0.8  # gradient-weighted mean length / (n/2) at or below: short paths dominate
SHORT_REJECTED = 0.95  # ... at or above: the gradient's lengths are about the paths' lengths
CENTRAL = 0.9  # share of the total gradient that defines the effective path lengths
TRAINED_MIN_MARGIN = 20.0  # points above chance (val accuracy) before the net counts as trained

PRESETS = {
    "tiny": {"depth": 14, "width": 4, "epochs": 4, "train_size": 240, "val_size": 80,
             "lr": 0.1, "batch_size": 40, "grad_batch": 32, "batches": 2, "samples": 4,
             "seeds": 1},
    "quick": {"depth": 32, "width": 8, "epochs": 5, "train_size": 8000, "val_size": 1000,
              "lr": 0.1, "batch_size": 128, "grad_batch": 128, "batches": 2, "samples": 50,
              "seeds": 1},
    "standard": {"depth": 56, "width": 8, "epochs": 8, "train_size": 8000, "val_size": 1000,
                 "lr": 0.1, "batch_size": 128, "grad_batch": 128, "batches": 2, "samples": 100,
                 "seeds": 2},
    "full": {"depth": 110, "width": 8, "epochs": 20, "train_size": 55000, "val_size": 5000,
             "lr": 0.1, "batch_size": 128, "grad_batch": 128, "batches": 4, "samples": 200,
             "seeds": 3},
}


def path_length_counts(n: int) -> list[int]:
    """How many of the 2^n paths through n residual blocks have length k = 0..n: C(n, k).

    A path picks, in every block, either the residual branch (adding 1 to its length) or the
    shortcut, so the lengths are Binomial(n, 1/2) (Veit et al. §3, Eq. 6).
    """
    if n < 0:
        raise ValueError(f"path_length_counts: expected n >= 0 blocks, got {n}")
    return [math.comb(n, k) for k in range(n + 1)]


def forward_parts(model: CifarResNet, images: torch.Tensor, labels: torch.Tensor
                  ) -> tuple[list[BlockParts], torch.Tensor, torch.Tensor]:
    """One forward pass that keeps every block's branch and shortcut apart.

    Returns the blocks' parts, the gradient of the summed cross-entropy at the last block's
    output (where every path ends), and the first block's input (where every path starts).
    The model must be in eval mode so the images do not interact through BatchNorm.
    """
    if model.training:
        raise ValueError("forward_parts: expected the model in eval mode (BatchNorm running "
                         "statistics), got training mode")
    with torch.no_grad():
        x = model.relu(model.bn1(model.conv1(images)))
    start = x
    parts = []
    for _, block in residual_blocks(model):
        p, x = block_parts(block, x)
        parts.append(p)
    end = x.requires_grad_(True)
    loss = F.cross_entropy(model.forward_head(end), labels, reduction="sum")
    (top,) = torch.autograd.grad(loss, end)
    return parts, top, start


def path_gradient(parts: Sequence[BlockParts], top: torch.Tensor,
                  through_branch: Sequence[bool]) -> torch.Tensor:
    """The gradient that one path carries back to the first block's input.

    Args:
        parts: every block's forward pass, from `forward_parts`.
        top: the gradient at the last block's output.
        through_branch: per block, True to pass the gradient through its residual branch only,
            False through its shortcut only (the path's length is the number of True).
    """
    if len(through_branch) != len(parts):
        raise ValueError(f"path_gradient: expected one route per block ({len(parts)}), got "
                         f"{len(through_branch)}")
    g = top
    for p, branch in zip(reversed(parts), reversed(through_branch), strict=True):
        g = g * p.relu_mask  # the ReLU after the addition, as the forward pass took it
        if branch:
            (g,) = torch.autograd.grad(p.branch, p.x, g, retain_graph=True)
        elif p.shortcut is not p.x:  # option A: subsample and pad, transposed
            (g,) = torch.autograd.grad(p.shortcut, p.x, g, retain_graph=True)
    return g


def sample_paths(n: int, k: int, samples: int, batches: int, rng: random.Random
                 ) -> list[tuple[tuple[int, ...], int]]:
    """(blocks through their branch, batch index) pairs for length k: every pair when there
    are at most `samples`, else `samples` draws of a random k-subset, cycling the batches."""
    if math.comb(n, k) * batches <= samples:
        return [(s, b) for s in combinations(range(n), k) for b in range(batches)]
    return [(tuple(sorted(rng.sample(range(n), k))), i % batches) for i in range(samples)]


def effective_range(shares: Sequence[float], central: float = CENTRAL) -> tuple[int, int]:
    """The path lengths (lo, hi) between which the central `central` of the gradient lies:
    lo is the first length where the cumulative share reaches (1 - central) / 2, hi the first
    where it reaches 1 - (1 - central) / 2."""
    tail = (1 - central) / 2
    cumulative, lo, hi = 0.0, None, None
    for k, share in enumerate(shares):
        cumulative += share
        if lo is None and cumulative >= tail - 1e-12:
            lo = k
        if hi is None and cumulative >= 1 - tail - 1e-12:
            hi = k
    if lo is None or hi is None:
        raise ValueError("effective_range: expected shares summing to 1")
    return lo, hi


def decay_factor(magnitudes: Sequence[float]) -> float:
    """exp(b) of the least-squares line log(magnitude_k) = a + b k: the factor by which a
    path's gradient changes per extra residual branch."""
    ks = list(range(len(magnitudes)))
    logs = [math.log(m) for m in magnitudes]
    mk, ml = sum(ks) / len(ks), sum(logs) / len(logs)
    var = sum((k - mk) ** 2 for k in ks)
    return math.exp(sum((k - mk) * (v - ml) for k, v in zip(ks, logs, strict=True)) / var)


def length_ratio(magnitudes: Sequence[float]) -> float:
    """The gradient-weighted mean path length over the mean path length n/2, where each length
    k weighs magnitude_k x C(n, k) (n = len(magnitudes) - 1)."""
    n = len(magnitudes) - 1
    total = [m * c for m, c in zip(magnitudes, path_length_counts(n), strict=True)]
    return sum(k * t for k, t in enumerate(total)) / sum(total) / (n / 2)


def sampling_errors(magnitudes: Sequence[float], stds: Sequence[float], counts: Sequence[int],
                    *, draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Standard errors of `length_ratio` and `decay_factor` due to the path sampling alone: each
    length's mean is redrawn from a normal with its standard error std / sqrt(count) (kept
    positive), `draws` times (a parametric bootstrap)."""
    rng = random.Random(seed)
    ratios, factors = [], []
    for _ in range(draws):
        redrawn = [max(rng.gauss(m, sd / math.sqrt(c)) if c > 1 else m, 1e-3 * m)
                   for m, sd, c in zip(magnitudes, stds, counts, strict=True)]
        ratios.append(length_ratio(redrawn))
        factors.append(decay_factor(redrawn))
    return mean_std(ratios)[1], mean_std(factors)[1]


def _measure(ctx: Context, model: CifarResNet, batches: list[tuple[torch.Tensor, torch.Tensor]],
             rng: random.Random) -> tuple[list[float], list[float], list[int]]:
    """Mean and std of the per-path gradient magnitude for each length k = 0..n."""
    n = len(residual_blocks(model))
    forwards = [forward_parts(model, x, y)[:2] for x, y in batches]
    means, stds, counts = [], [], []
    for k in range(n + 1):
        values = []
        for chosen, b in sample_paths(n, k, ctx.params["samples"], len(batches), rng):
            parts, top = forwards[b]
            route = [i in chosen for i in range(n)]
            g = path_gradient(parts, top, route)
            values.append(float(g.flatten(1).norm(dim=1).mean()))
        m, s = mean_std(values)
        means.append(m)
        stds.append(s)
        counts.append(len(values))
    return means, stds, counts


def _paths_one(ctx: Context, splits: Any, seed: int) -> dict[str, Any]:
    p = ctx.params
    start = time.perf_counter()
    model, rows = train_cifar_net(ctx, splits, depth=p["depth"], width=p["width"], shortcut=True,
                                  epochs=p["epochs"], lr=p["lr"], batch_size=p["batch_size"],
                                  seed=seed)
    # Random training batches, as in the paper (the gradient is a training-time quantity):
    # disjoint, seeded, and each with an equal share per class.
    batches = [normalized_batch(splits.train, p["grad_batch"], seed=seed, start=i * p["grad_batch"])
               for i in range(p["batches"])]
    trained_at = time.perf_counter()
    means, stds, counts = _measure(ctx, model, batches, random.Random(seed))
    done = time.perf_counter()
    n = len(means) - 1
    total = [m * c for m, c in zip(means, path_length_counts(n), strict=True)]
    shares = [t / sum(total) for t in total]
    ctx.log(f"seed {seed}: gradient per path k=0..{n}: "
            + " ".join(f"{m:.2e}" for m in means))
    return {"seed": seed, "val_acc": [r["val_acc"] for r in rows], "magnitude": means,
            "magnitude_std": stds, "measurements": counts, "total": total, "shares": shares,
            "train_s": trained_at - start, "sample_s": done - trained_at}


DECAY = "gradient per path shrinks with its length"
SHORT = "most gradient comes from short paths"


def judge(s: dict[str, Any], trained: bool) -> dict[str, str]:
    """Both claims' verdicts by the module docstring's rules, from the seed-mean numbers `s`
    (length_ratio, decay_factor and their standard errors)."""
    ratio, factor = s["length_ratio"], s["decay_factor"]
    ratio_se, factor_se = s["length_ratio_se"], s["decay_factor_se"]
    claims = {
        DECAY: ("supported" if factor + 2 * factor_se < DECAY_SUPPORTED else
                "not supported" if factor - 2 * factor_se >= 1.0 else "inconclusive"),
        SHORT: ("supported" if ratio + 2 * ratio_se <= SHORT_SUPPORTED else
                "not supported" if ratio - 2 * ratio_se >= SHORT_REJECTED else "inconclusive"),
    }
    if not trained:  # the claim is about trained nets; an untrained one cannot test it
        claims = dict.fromkeys(claims, "inconclusive")
    return claims


def power(s: dict[str, Any], claims: dict[str, str], trained: bool, *, seeds: int,
          samples: int, seconds_per_seed: float, seconds_per_sample: float) -> dict[str, Any]:
    """Power estimates for the inconclusive claims. t is the distance to the threshold the
    estimate lies beyond, in SE: (0.9 - factor) / SE below 0.9, (factor - 1) / SE at or above
    1; (0.8 - ratio) / SE below 0.8, (ratio - 0.95) / SE above 0.95; an estimate between its
    two thresholds cannot be decided by more units at the measured value. With several seeds
    the SE is over seeds; with one, over the sampled paths (units: samples per length; it
    leaves out how much the training run moves the numbers)."""
    unit, n, spu = (("seeds", seeds, seconds_per_seed) if seeds > 1 else
                    ("samples per length", samples, seconds_per_sample))
    stats = {DECAY: (s["decay_factor"], s["decay_factor_se"], DECAY_SUPPORTED, 1.0),
             SHORT: (s["length_ratio"], s["length_ratio_se"], SHORT_SUPPORTED, SHORT_REJECTED)}
    out: dict[str, Any] = {}
    for claim, (value, se, low, high) in stats.items():
        if claims[claim] != "inconclusive":
            continue
        if not trained:
            out[claim] = no_estimate(f"the net is not trained (< {TRAINED_MIN_MARGIN:g} points "
                                     "above chance): more epochs, not more seeds, would decide "
                                     "it", n, unit)
        elif not se or not math.isfinite(value):
            out[claim] = no_estimate("no finite estimate and standard error", n, unit)
        elif low <= value < high or (value == high and claim == SHORT):
            out[claim] = no_estimate(f"the estimate {value:.3f} lies between the thresholds "
                                     f"{low:g} and {high:g}, so at the measured value no number "
                                     f"of {unit} decides it", n, unit)
        else:
            t = (low - value) / se if value < low else (value - high) / se
            out[claim] = floored_power(t, n, seconds_per_unit=spu, unit=unit)
    return out


def _plots(ctx: Context, n: int, counts: list[int], s: dict[str, Any], seeds: int) -> None:
    plt = pyplot()

    ks = list(range(n + 1))
    fractions = [c / 2**n for c in counts]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(ks, fractions, color="tab:gray")
    ax.set_xlabel("path length k (residual branches on the path)")
    ax.set_ylabel("fraction of the 2^n paths")
    ax.set_title(f"Path lengths of a ResNet with n = {n} blocks: Binomial(n, 1/2)")
    ctx.save_plot(fig, "path_lengths.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.errorbar(ks, s["magnitude"], s["magnitude_std"], fmt="o-", capsize=3, color="tab:blue",
                label="mean ± std over seeds" if seeds > 1 else "mean ± std over sampled paths")
    ax.set_yscale("log")
    ax.set_xlabel("path length k")
    ax.set_ylabel("gradient magnitude at the input of block 1")
    ax.set_title(f"Gradient of one path vs its length (cf. Fig. 6a); factor "
                 f"{s['decay_factor']:.2f}/block")
    ax.legend(fontsize=8)
    ctx.save_plot(fig, "gradient_per_path.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    lo, hi = s["effective_range"]
    ax.axvspan(lo - 0.5, hi + 0.5, color="tab:green", alpha=0.15,
               label=f"effective paths (central {CENTRAL:.0%}): {lo}-{hi}")
    ax.bar(ks, s["shares"], yerr=s["shares_std"], color="tab:blue", alpha=0.8,
           label="share of the total gradient")
    ax.plot(ks, fractions, "k.--", lw=1, label="share of the paths")
    ax.axvline(s["weighted_mean_length"], color="tab:blue", lw=1.5,
               label=f"gradient-weighted mean length {s['weighted_mean_length']:.1f}")
    ax.axvline(n / 2, color="k", lw=1, ls=":", label=f"mean path length {n / 2:g}")
    ax.set_xlabel("path length k")
    ax.set_ylabel("share")
    ax.set_title("Total gradient per path length = magnitude x C(n, k) (cf. Fig. 6b)")
    ax.legend(fontsize=7)
    ctx.save_plot(fig, "total_gradient.png")


@experiment(
    "paths",
    title="Paths through a ResNet: lengths and the gradient they carry",
    paper="Veit, Wilber, Belongie 2016, Residual Networks Behave Like Ensembles of Relatively "
          "Shallow Networks, arXiv:1605.06431 (§3, §5, Fig. 6)",
    claim="A ResNet of n blocks has 2^n paths with Binomial(n, 1/2) lengths; in a trained "
          "ResNet most of the gradient comes from paths much shorter than n/2.",
    presets=PRESETS,
)
def run(ctx: Context) -> Finding:
    p = ctx.params
    for key in ("seeds", "samples", "batches", "grad_batch"):
        if p[key] < 1:
            raise ValueError(f"paths: expected {key} >= 1, got {p[key]}")
    splits = load_splits(ctx, train_size=p["train_size"], val_size=p["val_size"], test_size=0)
    if p["grad_batch"] * p["batches"] > len(splits.train):
        raise ValueError(f"paths: grad_batch x batches = {p['grad_batch'] * p['batches']} "
                         f"exceeds the {len(splits.train)} training images")
    runs = [_paths_one(ctx, splits, ctx.seed + i) for i in range(p["seeds"])]
    n = len(runs[0]["magnitude"]) - 1
    counts = path_length_counts(n)

    s: dict[str, Any] = {}
    for key in ("magnitude", "shares"):
        stats = [mean_std([r[key][k] for r in runs]) for k in range(n + 1)]
        s[key] = [m for m, _ in stats]
        s[f"{key}_std"] = [sd for _, sd in stats]
    if len(runs) == 1:  # one seed: show the spread over the sampled paths instead
        s["magnitude_std"] = runs[0]["magnitude_std"]
    s["shares"] = [v / sum(s["shares"]) for v in s["shares"]]
    s["effective_range"] = list(effective_range(s["shares"]))
    s["weighted_mean_length"] = sum(k * v for k, v in enumerate(s["shares"]))
    ratios = [length_ratio(r["magnitude"]) for r in runs]
    factors = [decay_factor(r["magnitude"]) for r in runs]
    s["length_ratio"], s["length_ratio_std"] = mean_std(ratios)
    s["decay_factor"], s["decay_factor_std"] = mean_std(factors)
    if len(runs) > 1:
        s["length_ratio_se"] = s["length_ratio_std"] / math.sqrt(len(runs))
        s["decay_factor_se"] = s["decay_factor_std"] / math.sqrt(len(runs))
        s["se_from"] = "seeds"
    else:
        s["length_ratio_se"], s["decay_factor_se"] = sampling_errors(
            runs[0]["magnitude"], runs[0]["magnitude_std"], runs[0]["measurements"],
            seed=ctx.seed)
        s["se_from"] = "path sampling (one seed)"
    s["short_share"] = sum(v for k, v in enumerate(s["shares"]) if k < n / 2)
    s["short_paths_fraction"] = sum(c for k, c in enumerate(counts) if k < n / 2) / 2**n

    ratio, factor = s["length_ratio"], s["decay_factor"]
    ratio_se, factor_se = s["length_ratio_se"], s["decay_factor_se"]
    val = [r["val_acc"][-1] for r in runs]
    chance = 1 / splits.num_classes
    trained = mean_std(val)[0] >= chance + TRAINED_MIN_MARGIN / 100
    claims = judge(s, trained)
    estimates = power(
        s, claims, trained, seeds=len(runs), samples=p["samples"],
        seconds_per_seed=sum(r["train_s"] + r["sample_s"] for r in runs) / len(runs),
        seconds_per_sample=runs[0]["sample_s"] / p["samples"])
    verdict = combine_verdicts(claims.values())
    _plots(ctx, n, counts, s, len(runs))

    lo, hi = s["effective_range"]
    untrained = "" if trained else (
        f"The net is less than {TRAINED_MIN_MARGIN:g} points above chance on validation, so it "
        "is not a trained ResNet and nothing here tests the claim. ")
    summary = (
        f"ResNet-{p['depth']} (n = {n} blocks, 2^{n} = {2**n} paths, width {p['width']}) "
        f"trained {p['epochs']} epochs on {len(splits.train)} images (final val accuracy "
        f"{100 * mean_std(val)[0]:.2f}%), {p['seeds']} seed(s). Gradient of one path at the "
        f"first block's input, sampled as in the paper ({p['samples']} per length over "
        f"{p['batches']} batches of {p['grad_batch']} training images): it changes by a factor "
        f"{factor:.3f} +- {factor_se:.3f} per residual branch on the path (claim needs < "
        f"{DECAY_SUPPORTED:g} by 2 SE; SE from the {s['se_from']}). "
        f"Weighting by the C({n}, k) paths of each length, the central {CENTRAL:.0%} of the "
        f"total gradient comes from paths of length {lo}-{hi}, the gradient-weighted mean "
        f"length is {s['weighted_mean_length']:.2f} against a mean path length of {n / 2:g} "
        f"(ratio {ratio:.3f} +- {ratio_se:.3f}: short paths dominate if below "
        f"{SHORT_SUPPORTED:g} by 2 SE, not if above {SHORT_REJECTED:g} by 2 SE), and paths "
        f"shorter than {n / 2:g} carry "
        f"{100 * s['short_share']:.1f}% of the gradient while being "
        f"{100 * s['short_paths_fraction']:.1f}% of the paths. {untrained}Verdict {verdict}: "
        + "; ".join(f"{c}: {v}" for c, v in claims.items()) + "."
    )
    measured = {
        "blocks": n, "paths": 2**n, "path_length_counts": counts,
        "path_length_fraction": [c / 2**n for c in counts],
        "gradient_at": "input of the first residual block (after the stem), BatchNorm in eval "
                       "mode, L2 norm per image of the summed cross-entropy's gradient",
        "thresholds": {"decay_supported": DECAY_SUPPORTED, "short_supported": SHORT_SUPPORTED,
                       "short_rejected": SHORT_REJECTED, "central": CENTRAL,
                       "trained_min_margin_points": TRAINED_MIN_MARGIN},
        "chance": chance,
        **s, "per_seed": runs, "power": estimates,
    }
    paper = (
        f"Veit et al. Fig. 6 (ResNet-110, n = 54, CIFAR-10): the gradient of one path falls "
        f"roughly exponentially with its length, and the effective paths (most of the total "
        f"gradient) are 5-17 blocks long, against a median path length of 27 (ratio of their "
        f"centre ~11 to 27: about 0.4). Ours, n = {n}: effective lengths {lo}-{hi}, weighted "
        f"mean {s['weighted_mean_length']:.2f} against {n / 2:g} (ratio {ratio:.2f}), "
        f"per-block factor {factor:.2f}."
    )
    details = [
        "Each measurement is exactly one path's gradient: k blocks pass it through their "
        "residual branch only, the others through their shortcut only, with every ReLU's "
        "forward mask kept (the 2^n path gradients then sum to the true gradient; tested).",
        f"Measurements per length: {runs[0]['measurements']} (all (path, batch) pairs where "
        f"there are at most {p['samples']}).",
    ] + [f"Power ({claim}, inconclusive): {est['text']}." for claim, est in estimates.items()]
    return Finding(verdict, summary, measured, paper=paper, details=details, claims=claims)
