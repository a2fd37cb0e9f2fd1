"""Degradation: a deeper plain net trains worse; the same net with shortcuts does not.

He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385
(https://arxiv.org/abs/1512.03385), Fig. 1 and Fig. 6: on CIFAR-10 the 56-layer plain net has
a higher *training* error than the 20-layer one throughout training (so the gap is an
optimisation problem, not overfitting), while ResNet-56 trains to a lower error than ResNet-20.

What is measured: the four nets plain-20, plain-56, ResNet-20, ResNet-56 (`CifarResNet` with
`shortcut` off/on; the plain and residual twins have the same layers and parameters) trained
on the same images, in the same order, for the same number of steps with the same recipe
(SGD, momentum 0.9, weight decay 1e-4, lr divided by 10 at 50% and 75% of training, BN).
Per epoch: the running training error (train mode, averaged over the epoch's batches while
the weights change, as the paper's Fig. 6 thin curves) and the validation error (eval mode,
held-out images). After training, once: the eval-mode error on a fixed subset of the training
images (`train_eval_size` images, an equal share per class, the number the verdict uses)
and the test error.

Verdict (thresholds fixed here, with `common.margin`: Welch's t over seeds, or with one seed
the difference over a 0.5-point floor, so one seed needs a 1-point difference):
- claim 1, "the deeper plain net has the higher training error": supported when
  margin(plain-deep, plain-shallow) of the final eval-mode training error > 2; not supported
  when it is < -2 (the deeper plain net trains *better*); otherwise inconclusive.
- claim 2, "with shortcuts deeper is at least as good": the threshold is the shallower
  ResNet's error. Supported when margin(ResNet-deep, ResNet-shallow) < -2 (the deeper ResNet
  trains to a lower error by more than 2 standard errors, as in the paper's Fig. 6); not
  supported when > 2 (it trains worse by as much); otherwise inconclusive. (Until issue 15
  any margin <= 2 counted as supported, so equal errors within the noise passed.)
- overall (`combine_verdicts`): the common verdict when both agree, otherwise "mixed".

Deviations from the paper:
- Data: Fashion-MNIST subsets by default (28x28x1), not CIFAR-10; `--data cifar10` works.
- Width: `base_width` 8 in the quick preset (the paper's 16 in full), about 1/4 of the cost.
- Budget: quick trains 4,000 images for 5 epochs (310 steps of 64), the paper 64k steps of
  128; the lr schedule keeps the paper's shape (steps at 50% / 75%). Quick uses batch 64 with
  lr 0.05 (the paper's 0.1 at 128, scaled linearly: Goyal et al. 2017, arXiv:1706.02677).
- No augmentation in quick (the paper pads 4 px, crops and flips; full does), so the running
  training error is measured on the very images the verdict's subset comes from.
- The trainer applies weight decay to conv and FC weights only, not to BN parameters.

Run time on 2 CPU cores: tiny ~5 s; quick 137 s measured (see
docs/experiments/degradation/ for the measured time); full (width 16, 55,000 images, 30
epochs, 3 seeds: 5M training images per net) 20-30 h: the four nets cost ~10.8 ms per
training image at width 8 on one thread, ~2.3x that at width 16 (measured here).

Standard preset (issue 15; committed before its first run): the same four nets at width 8,
6,000 training images for 8 epochs (750 steps of 64, the step schedule at 50% / 75%), 3 seeds,
no augmentation, final training error on 3,000 fixed training images, test error on 5,000.
Why: both claims are judged by Welch t over seeds, so three seeds measure the spread instead
of leaning on the one-seed 0.5-point floor; twice the quick run's steps per net lets plain-56
get past its first epochs, so a gap that remains is the optimisation gap of the paper's Fig. 6
rather than a slower start; no augmentation keeps the training error a measure of
optimisation alone. Estimated ~16 min on 2 cores (the quick run's ~1.7 ms per training image
over the four nets, times 576,000 training images).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from cnnzoo.data.dataset import stratified_subset
from cnnzoo.experiments._margin_power import inconclusive_power
from cnnzoo.experiments.base import Context, Finding, combine_verdicts, experiment, pyplot
from cnnzoo.experiments.common import accuracy, fit, load_splits, margin, mean_std, pct
from cnnzoo.models.resnet_cifar import CifarResNet

# How many standard errors (common.margin) make a difference; one seed: 2 x 0.5 points.
SIGNIFICANT = 2.0

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"depths": [8, 14], "base_width": 4, "epochs": 2, "batch_size": 32, "lr": 0.05,
             "train_size": 192, "val_size": 64, "test_size": 64, "train_eval_size": 96,
             "augment": False, "seeds": 1},
    "quick": {"depths": [20, 56], "base_width": 8, "epochs": 5, "batch_size": 64, "lr": 0.05,
              "train_size": 4000, "val_size": 1000, "test_size": 2000, "train_eval_size": 2000,
              "augment": False, "seeds": 1},
    "standard": {"depths": [20, 56], "base_width": 8, "epochs": 8, "batch_size": 64, "lr": 0.05,
                 "train_size": 6000, "val_size": 1000, "test_size": 5000, "train_eval_size": 3000,
                 "augment": False, "seeds": 3},
    "full": {"depths": [20, 56], "base_width": 16, "epochs": 30, "batch_size": 128, "lr": 0.1,
             "train_size": 55000, "val_size": 5000, "test_size": 10000,
             "train_eval_size": 5000, "augment": True, "seeds": 3},
}


def net_name(shortcut: bool, depth: int) -> str:
    return f"{'resnet' if shortcut else 'plain'}-{depth}"


def check_depths(depths: Any) -> tuple[int, int]:
    """The (shallow, deep) pair from the `depths` parameter, each 6n + 2."""
    if (not isinstance(depths, list) or len(depths) != 2
            or not all(isinstance(d, int) and d >= 8 and (d - 2) % 6 == 0 for d in depths)
            or depths[0] >= depths[1]):
        raise ValueError(f"parameter depths: expected [shallow, deep], two depths 6n + 2 with "
                         f"shallow < deep, e.g. [20, 56]; got {depths!r}")
    return depths[0], depths[1]


def claim_verdicts(plain_margin: float, resnet_margin: float) -> tuple[str, str, str]:
    """(claim 1, claim 2, overall) from the two margins (deep minus shallow training error, in
    standard errors), by the module docstring's rules: each claim is supported only when its
    margin clears 2 in the claimed direction (claim 1: > 2, the deeper plain net worse;
    claim 2: < -2, the deeper ResNet better), not supported when it clears 2 the other way,
    else inconclusive."""
    if plain_margin > SIGNIFICANT:
        deeper_plain = "supported"
    elif plain_margin < -SIGNIFICANT:
        deeper_plain = "not supported"
    else:
        deeper_plain = "inconclusive"
    if resnet_margin < -SIGNIFICANT:
        deeper_resnet = "supported"
    elif resnet_margin > SIGNIFICANT:
        deeper_resnet = "not supported"
    else:
        deeper_resnet = "inconclusive"
    return deeper_plain, deeper_resnet, combine_verdicts([deeper_plain, deeper_resnet])


def claim_power(claims: dict[str, str], measured: dict[str, Any], seeds: int,
                seconds_per_seed: float) -> dict[str, Any]:
    """claim -> power estimate (`_margin_power.margin_power`) for the inconclusive claims,
    from the deep-minus-shallow differences and margins in `measured`; both claims' threshold
    is a difference of 0."""
    plain, resnet = list(claims)
    stats = {plain: (measured["plain_deeper_minus_shallow_train_err"],
                     measured["plain_margin"], seeds),
             resnet: (measured["resnet_deeper_minus_shallow_train_err"],
                      measured["resnet_margin"], seeds)}
    return inconclusive_power(claims, stats, seconds_per_unit=seconds_per_seed)


@experiment(
    "degradation",
    title="Degradation of deep plain nets, fixed by shortcuts",
    paper="He et al. 2015, Deep Residual Learning for Image Recognition (Fig. 1, Fig. 6), "
          "arXiv:1512.03385",
    claim="The deeper plain net has higher training error (an optimisation problem, not "
          "overfitting); with shortcuts, deeper is at least as good.",
    presets=PRESETS,
)
def run(ctx: Context) -> Finding:
    p = ctx.params
    shallow, deep = check_depths(p["depths"])
    splits = load_splits(ctx, train_size=p["train_size"], val_size=p["val_size"],
                         test_size=p["test_size"])
    n_eval = min(p["train_eval_size"], len(splits.train))
    # An equal share of every class, fixed for every net and seed.
    train_eval = stratified_subset(splits.train, n_eval, seed=ctx.seed + 4)
    nets = [(False, shallow), (False, deep), (True, shallow), (True, deep)]
    names = [net_name(s, d) for s, d in nets]
    runs: dict[str, dict[str, list]] = {n: {"train_err": [], "val_err": [], "final_train_err": [],
                                            "final_val_err": [], "test_err": [],
                                            "epoch_time_s": []} for n in names}
    params: dict[str, int] = {}
    started = time.perf_counter()
    for i in range(p["seeds"]):
        seed = ctx.seed + i
        for (shortcut, depth), name in zip(nets, names, strict=True):
            torch.manual_seed(seed)
            model = CifarResNet(depth, shortcut=shortcut, base_width=p["base_width"],
                                in_chans=splits.in_chans, num_classes=splits.num_classes)
            params[name] = sum(t.numel() for t in model.parameters())
            model, rows = fit(ctx, model, splits, epochs=p["epochs"], seed=seed,
                              batch_size=p["batch_size"], lr=p["lr"], momentum=0.9,
                              weight_decay=1e-4, schedule="step", milestones=(0.5, 0.75),
                              crop_padding=4 if p["augment"] else 0, hflip=p["augment"])
            r = runs[name]
            r["train_err"].append([1 - row["train_acc"] for row in rows])
            r["val_err"].append([1 - row["val_acc"] for row in rows])
            r["epoch_time_s"].append(sum(row["epoch_time_s"] for row in rows) / len(rows))
            r["final_train_err"].append(1 - accuracy(model, train_eval))
            r["final_val_err"].append(r["val_err"][-1][-1])
            r["test_err"].append(1 - accuracy(model, splits.test))
            ctx.log(f"seed {seed} {name}: train error (eval mode) "
                    f"{pct(r['final_train_err'][-1])}, val {pct(r['final_val_err'][-1])}, "
                    f"test {pct(r['test_err'][-1])}, {r['epoch_time_s'][-1]:.1f} s/epoch")
    # One more seed trains all four nets again: the unit a power estimate is priced in.
    seconds_per_seed = (time.perf_counter() - started) / p["seeds"]

    plain_s, plain_d, res_s, res_d = names
    plain_margin = margin(runs[plain_d]["final_train_err"], runs[plain_s]["final_train_err"])
    resnet_margin = margin(runs[res_d]["final_train_err"], runs[res_s]["final_train_err"])
    deeper_plain, deeper_resnet, verdict = claim_verdicts(plain_margin, resnet_margin)

    final = {n: {k: mean_std(runs[n][k]) for k in ("final_train_err", "final_val_err",
                                                    "test_err")} for n in names}
    # Fraction of epochs in which the deeper plain net's running training error is higher.
    above = [sum(d > s for d, s in zip(ds, ss, strict=True)) / len(ds)
             for ds, ss in zip(runs[plain_d]["train_err"], runs[plain_s]["train_err"],
                                  strict=True)]
    measured = {
        "nets": names, "params": params, "epochs": p["epochs"], "seeds": p["seeds"],
        "train_error_measure": "curves: running train-mode error over each epoch's batches; "
                               f"final: eval-mode error on {n_eval} fixed training images",
        "runs": runs,
        "final_mean_std": {n: {k: list(v) for k, v in final[n].items()} for n in names},
        "plain_deeper_minus_shallow_train_err": final[plain_d]["final_train_err"][0]
        - final[plain_s]["final_train_err"][0],
        "resnet_deeper_minus_shallow_train_err": final[res_d]["final_train_err"][0]
        - final[res_s]["final_train_err"][0],
        "plain_margin": plain_margin, "resnet_margin": resnet_margin,
        "plain_deeper_higher_running_train_err_epoch_fraction": sum(above) / len(above),
        "significant_margin": SIGNIFICANT, "seconds_per_seed": seconds_per_seed,
    }
    plot_curves(ctx, runs, names)
    plot_final(ctx, final, names)

    def err(name: str, key: str) -> str:
        mean, std = final[name][key]
        return pct(mean) + (f" ± {100 * std:.2f}" if p["seeds"] > 1 else "")

    seeds = f"{p['seeds']} seed{'s' if p['seeds'] > 1 else ''}"
    summary = (
        f"Four nets trained on the same {len(splits.train)} {ctx.data} images for "
        f"{p['epochs']} epochs ({seeds}, width {p['base_width']}). Final training error "
        f"(eval mode, {n_eval} fixed training images): {plain_s} {err(plain_s, 'final_train_err')}"
        f", {plain_d} {err(plain_d, 'final_train_err')} (margin {plain_margin:+.1f}); "
        f"{res_s} {err(res_s, 'final_train_err')}, {res_d} {err(res_d, 'final_train_err')} "
        f"(margin {resnet_margin:+.1f}). Rules: claim 1 holds when the deeper plain net's "
        f"margin > {SIGNIFICANT:g} (Welch t over seeds; with one seed the difference over a "
        f"0.5-point floor, i.e. > 1 point), fails when < -{SIGNIFICANT:g}, else inconclusive; "
        f"claim 2 holds when the deeper ResNet's margin < -{SIGNIFICANT:g}, fails when > "
        f"{SIGNIFICANT:g}, else inconclusive."
    )
    details = [
        f"{n}: {params[n]:,} parameters; training error {err(n, 'final_train_err')}, "
        f"validation {err(n, 'final_val_err')}, test {err(n, 'test_err')}; "
        f"{mean_std(runs[n]['epoch_time_s'])[0]:.1f} s per epoch" for n in names
    ] + [
        f"The {plain_d} running training error is above {plain_s}'s in "
        f"{100 * measured['plain_deeper_higher_running_train_err_epoch_fraction']:.0f}% of "
        f"the epochs (the paper: throughout training).",
        "Training error curves are the running train-mode error over each epoch's batches "
        "(weights change during the epoch); the verdict uses the eval-mode error of the final "
        "weights on a fixed training subset.",
    ]
    paper = (
        "He et al. Fig. 6 (CIFAR-10, 64k steps): plain-56 has higher training and test error "
        "than plain-20 throughout training (test error read off the figure: plain-20 ≈ 9.5%, "
        "plain-56 ≈ 13.5%, approximate readings quoted by a-martyn/resnet); Table 6: ResNet-20 "
        "8.75%, ResNet-56 6.97% test error. Here, at a far smaller budget on "
        f"{ctx.data}: test error {plain_s} {err(plain_s, 'test_err')}, {plain_d} "
        f"{err(plain_d, 'test_err')}, {res_s} {err(res_s, 'test_err')}, {res_d} "
        f"{err(res_d, 'test_err')}."
    )
    claims = {"the deeper plain net has higher training error": deeper_plain,
              "with shortcuts, deeper is at least as good": deeper_resnet}
    measured["power"] = claim_power(claims, measured, p["seeds"], seconds_per_seed)
    details += [f"Power ({claim}): {est['text']}." for claim, est in measured["power"].items()]
    return Finding(verdict, summary, measured, paper=paper, details=details, claims=claims)


def plot_curves(ctx: Context, runs: dict[str, dict[str, list]], names: list[str]) -> None:
    """Fig. 6 layout: plain nets on the left, ResNets on the right; thin dashed = training
    error (running), bold = validation error; mean over seeds."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colours = ["tab:orange", "tab:red"]
    for ax, group, title in ((axes[0], names[:2], "plain"), (axes[1], names[2:], "ResNet")):
        for name, colour in zip(group, colours, strict=True):
            train = torch.tensor(runs[name]["train_err"]).mean(0) * 100
            val = torch.tensor(runs[name]["val_err"]).mean(0) * 100
            epochs = range(1, len(train) + 1)
            ax.plot(epochs, train, "--", color=colour, lw=1.2, label=f"{name} train (running)")
            ax.plot(epochs, val, "-", color=colour, lw=2.4, label=f"{name} validation")
        ax.set_title(f"{title} nets")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    fig.suptitle("Training and validation error, same data and budget (cf. He et al. Fig. 6)")
    ctx.save_plot(fig, "error_curves.png")


def plot_final(ctx: Context, final: dict[str, dict[str, tuple[float, float]]],
               names: list[str]) -> None:
    """Grouped bars: final training (eval mode), validation and test error per net."""
    plt = pyplot()

    keys = [("final_train_err", "train (eval mode)"), ("final_val_err", "validation"),
            ("test_err", "test")]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(keys)
    for j, (key, label) in enumerate(keys):
        xs = [i + (j - 1) * width for i in range(len(names))]
        means = [100 * final[n][key][0] for n in names]
        stds = [100 * final[n][key][1] for n in names]
        bars = ax.bar(xs, means, width, yerr=stds, capsize=3, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("error (%)")
    ax.set_title("Final errors (error bars: std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ctx.save_plot(fig, "final_errors.png")
