"""Accuracy against operations against parameters, after Canziani et al.'s Figure 2, for the
efficiency experiment: published ImageNet top-1 with MACs counted at the published crop,
small zoo models trained on the user's data, and the two plots drawn from them (accuracy vs
operations, bubble = parameters; accuracy per parameter). Described, not judged: the
experiment's verdict is on time against operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnzoo.experiments.base import Context
from cnnzoo.experiments.common import Splits, accuracy, fit, mean_std, pct
from cnnzoo.models.narrow import NARROW_VARIANTS, build_small_model
from cnnzoo.models.registry import get_builder
from cnnzoo.profile.compare import Comparison
from cnnzoo.profile.plots import figure, label_points, mpl, plain_log_ticks
from cnnzoo.profile.profiler import run_profile
from cnnzoo.profile.published import published_top1
from cnnzoo.train.runlog import AccuracyPoint


@dataclass(frozen=True)
class PublishedPoint:
    """Published top-1, with MACs counted by cnnzoo at the published evaluation crop."""

    model: str
    top1_percent: float
    params: int
    params_source: str  # "published" or "cnnzoo count"
    gmacs: float
    eval_size: int
    source: str
    note: str
    top1_per_mparams: float


def check_small_model(name: str, splits: Splits, data: str) -> None:
    """A known name whose model takes the data's images; else a one-line ValueError."""
    if name not in NARROW_VARIANTS:
        try:
            get_builder(name)
        except ValueError as err:
            raise ValueError(f"train_models: {err} (or one of the variants "
                             f"{', '.join(NARROW_VARIANTS)})") from None
    model = build_small_model(name, num_classes=splits.num_classes, in_chans=splits.in_chans)
    h, w = splits.image_size
    if getattr(model, "min_input_size", 1) > min(h, w):
        raise ValueError(f"train_models: {name} needs images of at least "
                         f"{model.min_input_size} pixels a side; {data}'s are {h}x{w}")


def published_points(comparison: Comparison, side: int) -> list[PublishedPoint]:
    """Published top-1 with the published model's parameters (cnnzoo's count where the source
    gives none) and MACs counted by cnnzoo at the published evaluation crop."""
    out = []
    for rep in comparison.reports:
        pub = published_top1(rep.model)
        if pub is None:
            continue
        macs = rep.macs_per_image if pub.eval_size == side else run_profile(
            rep.model, (1, 3, pub.eval_size, pub.eval_size), timing=False).macs_per_image
        # The published model's own count: GoogLeNet's published 6.6 M exclude the auxiliary
        # heads that cnnzoo's default build carries (and that never run at inference).
        params = pub.params or rep.params
        out.append(PublishedPoint(rep.model, pub.top1_percent, params,
                                  "published" if pub.params else "cnnzoo count", macs / 1e9,
                                  pub.eval_size, pub.source, pub.note,
                                  pub.top1_percent / (params / 1e6)))
    return out


def train_small_models(ctx: Context, splits: Splits) -> list[AccuracyPoint]:
    p = ctx.params
    c = splits.in_chans
    h, w = splits.image_size
    points = []
    for name in p["train_models"]:
        accs, epochs_s = [], 0.0
        for i in range(p["seeds"]):
            seed = ctx.seed + i
            torch.manual_seed(seed)  # the weights' initialisation
            model = build_small_model(name, num_classes=splits.num_classes, in_chans=c)
            model, rows = fit(ctx, model, splits, epochs=p["epochs"], seed=seed,
                              batch_size=p["batch_size"], lr=p["lr"])
            accs.append(accuracy(model, splits.test))
            epochs_s += sum(r["epoch_time_s"] for r in rows)
        size = (c, h, w)
        counted = run_profile(model, (1, *size), timing=False)  # meta-device count
        params, macs = counted.params, counted.macs_per_image
        mean, std = mean_std(accs)
        ctx.log(f"{name}: test top-1 {pct(mean)} ({params / 1e3:.0f}k params, "
                f"{macs / 1e6:.1f} MMACs, {epochs_s:.0f} s training)")
        points.append(AccuracyPoint(name, ctx.data, mean, std, params, macs, size,
                                    "test top-1, trained here", "this experiment", p["epochs"]))
    return points


def plot_accuracy_vs_macs(ctx: Context, published: list[PublishedPoint],
                           user: list[AccuracyPoint]) -> None:
    colormaps, Line2D = mpl().colormaps, mpl().Line2D
    panels = (1 if published else 0) + (1 if user else 0)
    if not panels:
        return
    fig, axes = figure(panels, width=7.0, height=5.0)
    ax_iter = iter(axes)
    if published:
        ax = next(ax_iter)
        biggest = max(q.params for q in published)
        labels = []
        for i, q in enumerate(published):
            size = 2000 * q.params / biggest + 30  # bubble area proportional to parameters
            ax.scatter(q.gmacs, q.top1_percent, s=size, color=colormaps["tab10"](i % 10),
                       alpha=0.55, edgecolors="black", linewidths=0.5)
            labels.append((q.gmacs, q.top1_percent, f"{q.model} ({q.params / 1e6:.1f} M)",
                           size))
        ax.set_xscale("log")
        ax.margins(x=0.25, y=0.15)
        plain_log_ticks(ax.xaxis)
        label_points(ax, labels, dx_px=3, fontsize=7)
        ax.set_xlabel("GMACs per image at the published crop (log scale)")
        ax.set_ylabel("published ImageNet top-1 (%)")
        ax.set_title("ImageNet top-1 (published) vs operations\nbubble area = parameters",
                     fontsize=10)
    if user:
        ax = next(ax_iter)
        datasets = sorted({u.data for u in user})
        colors = {d: colormaps["tab10"](i % 10) for i, d in enumerate(datasets)}
        biggest = max(u.params for u in user)
        labels = []
        for u in user:
            size = 1500 * u.params / biggest + 30
            here = u.origin == "this experiment"
            ax.scatter(u.macs / 1e6, 100 * u.accuracy, s=size, marker="o" if here else "D",
                       color=colors[u.data], alpha=0.55, edgecolors="black", linewidths=0.5)
            if u.accuracy_std:
                ax.errorbar(u.macs / 1e6, 100 * u.accuracy, yerr=100 * u.accuracy_std,
                            color="black", capsize=3, lw=1)
            labels.append((u.macs / 1e6, 100 * u.accuracy, f"{u.model} ({u.params / 1e3:.0f}k)",
                           size))
        ax.set_xscale("log")
        ax.margins(x=0.3, y=0.2)
        plain_log_ticks(ax.xaxis)
        label_points(ax, labels, dx_px=3, fontsize=7)
        ax.set_xlabel("MMACs per image at the trained size (log scale)")
        ax.set_ylabel("measured top-1 (%)")
        ax.set_title(f"Your data: measured top-1 vs operations\nbubble area = parameters "
                     f"({ctx.params['epochs']} epochs on {ctx.params['train_size']} images)",
                     fontsize=10)
        here = {u.origin == "this experiment" for u in user}
        handles = [Line2D([], [], marker=m, ls="", color="gray", label=text)
                   for m, text, keep in (
                       ("o", "test top-1, trained here", True in here),
                       ("D", "read from runs (a run: its best val top-1)", False in here))
                   if keep]
        handles += [Line2D([], [], marker="s", ls="", color=colors[d], label=d) for d in datasets]
        ax.legend(handles=handles, fontsize=8, loc="lower right")
    ctx.save_plot(fig, "accuracy_vs_macs.png")


def plot_accuracy_density(ctx: Context, published: list[PublishedPoint],
                           user: list[AccuracyPoint]) -> None:
    several = len({u.data for u in user}) > 1
    panels = [(q.model, q.top1_per_mparams) for q in published], [
        (u.model + (f" ({u.data})" if several else ""), 100 * u.accuracy / (u.params / 1e6))
        for u in user]
    titles = ("Published ImageNet top-1 (%) per million parameters",
              "Your data: measured top-1 (%) per million parameters")
    shown = [(bars, title) for bars, title in zip(panels, titles, strict=True) if bars]
    if not shown:
        return
    fig, axes = figure(len(shown), width=6.5, height=5.0)
    for ax, (bars, title) in zip(axes, shown, strict=True):
        bars = sorted(bars, key=lambda nb: -nb[1])
        ax.bar([n for n, _ in bars], [d for _, d in bars], color="tab:blue")
        for i, (_, d) in enumerate(bars):
            ax.annotate(f"{d:.3g}", (i, d), ha="center", va="bottom", fontsize=7)
        ax.set_ylabel("top-1 (%) per million parameters")
        ax.set_title(f"Accuracy density: {title}", fontsize=9)
        ax.tick_params(axis="x", rotation=40, labelsize=7)
        for label in ax.get_xticklabels():
            label.set_ha("right")
    ctx.save_plot(fig, "accuracy_density.png")
