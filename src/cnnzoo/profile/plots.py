"""The comparison's figures, after Canziani et al. 2016 (arXiv:1605.07678), as PNG files.

matplotlib is imported on first use, by `mpl()`, and drawn through its Agg canvas directly
(no pyplot, no global backend switch), so importing cnnzoo costs nothing and a notebook's
backend is left alone. The experiments draw with the same helpers (`figure`, `mpl`,
`label_points`, `plain_log_ticks`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from cnnzoo.profile.published import published_top1
from cnnzoo.profile.report import Comparison

MIB = 2**20


@dataclass(frozen=True)
class Plot:
    """A written figure: file name inside the plots folder, title and what it shows."""

    file: str
    title: str
    caption: str


def make_plots(comparison: Comparison, out_dir: Path) -> list[Plot]:
    """Draw every figure into `out_dir` (created); returns them in reading order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    makers = [_accuracy_vs_macs, _accuracy_density, _latency_vs_batch, _memory_vs_batch,
              _macs_vs_latency, _accuracy_vs_latency]
    return [p for p in (make(comparison, out_dir) for make in makers) if p is not None]


@functools.cache
def mpl() -> SimpleNamespace:
    """The matplotlib names the plots use, imported on the first call."""
    # Lazy on purpose: matplotlib is an optional, heavy import that only drawing needs.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    return SimpleNamespace(colormaps=colormaps, FigureCanvasAgg=FigureCanvasAgg, Figure=Figure,
                           Line2D=Line2D, FuncFormatter=FuncFormatter, LogLocator=LogLocator,
                           NullFormatter=NullFormatter)


def figure(ncols: int, *, width: float, height: float, dpi: float | None = None):
    """A figure of `ncols` gridded axes side by side, each `width` x `height` inches, on the
    Agg canvas (no pyplot); returns (figure, list of axes)."""
    m = mpl()
    fig = m.Figure(figsize=(width * ncols, height), dpi=dpi, layout="constrained")
    m.FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def _figure(ncols: int = 1):
    return figure(ncols, width=7.5 if ncols > 1 else 8, height=5.2, dpi=100)


def _save(fig, out_dir: Path, file: str, title: str, caption: str) -> Plot:
    fig.savefig(out_dir / file)
    return Plot(file, title, caption)


def plain_log_ticks(axis) -> None:
    """Log-scale ticks at 1, 2, 5 x 10^k, labelled as plain numbers (200, not 2 x 10^2)."""
    m = mpl()
    axis.set_major_locator(m.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(m.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(m.NullFormatter())


def label_points(ax, points: list[tuple], *, dx_px: float = 6, fontsize: int = 8) -> None:
    """Write each label right of its point (x, y, text[, marker area in points²]), moved
    down until it overlaps no earlier one.

    A greedy pass in display pixels (top to bottom) is enough for the handful of models a
    comparison has, and keeps every name readable where bubbles or points crowd.
    """
    ax.autoscale_view()
    line_px = fontsize * 1.5 * ax.figure.dpi / 72
    placed: list[tuple[float, float, float]] = []  # (x, y, width) of written labels, pixels
    for x, y, text, *area in sorted(points, key=lambda p: -p[1]):
        px, py = ax.transData.transform((x, y))
        radius_px = math.sqrt(area[0] / math.pi) * ax.figure.dpi / 72 if area else 0.0
        lx, ly = px + radius_px + dx_px, py
        width = 0.6 * fontsize * ax.figure.dpi / 72 * max(len(t) for t in text.split("\n"))
        height = line_px * (text.count("\n") + 1)
        while any(abs(ly - oy) < height and lx < ox + ow and ox < lx + width
                  for ox, oy, ow in placed):
            ly -= line_px / 2
        placed.append((lx, ly, width))
        ax.annotate(text, (x, y), xytext=(lx - px, ly - py), textcoords="offset pixels",
                    fontsize=fontsize, va="center", ha="left",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray"}
                    if abs(ly - py) > 2 else None)


def _colors(comparison: Comparison) -> dict[str, tuple]:
    tab10 = mpl().colormaps["tab10"]
    palette = [tab10(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # grey (7) is the legend's
    return {r.model: palette[i % len(palette)] for i, r in enumerate(comparison.reports)}


def _accuracy_points(comparison: Comparison):
    """(report, published Published or None, measured or None) per model."""
    return [(r, published_top1(r.model), comparison.measured.get(r.model))
            for r in comparison.reports]


def _hardware(comparison: Comparison) -> str:
    env = comparison.env
    return (f"{env.get('device_name')}, {env.get('threads')} threads, "
            f"torch {env.get('torch_version')}")


def _accuracy_vs_macs(comparison: Comparison, out_dir: Path) -> Plot | None:
    points = _accuracy_points(comparison)
    if not any(p or m for _, p, m in points):
        return None
    colors = _colors(comparison)
    fig, (ax,) = _figure()
    biggest = max(r.params for r, _, _ in points)
    labels: list[tuple[float, float, str]] = []
    for rep, pub, meas in points:
        gmacs = rep.macs_per_image / 1e9
        size = 2500 * rep.params / biggest + 30  # bubble area proportional to parameters
        if pub is not None:
            ax.scatter(gmacs, pub.top1_percent, s=size, color=colors[rep.model], alpha=0.55,
                       edgecolors="black", linewidths=0.5)
            labels.append((gmacs, pub.top1_percent, f"{rep.model} ({rep.params / 1e6:.1f} M)",
                           size))
        if meas is not None:
            ax.scatter(gmacs, 100 * meas.top1, s=80, marker="D", facecolors="none",
                       edgecolors=colors[rep.model], linewidths=1.5)
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)  # room for the biggest bubbles
    plain_log_ticks(ax.xaxis)
    label_points(ax, labels, dx_px=3)
    ax.set_xlabel("GMACs per image (FlopCounterMode, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Top-1 accuracy vs operations; bubble area = parameters")
    _source_legend(ax, points)
    caption = ("Canziani et al.'s Figure 2: bubbles are published ImageNet top-1, bubble area "
               "proportional to the parameter count")
    if comparison.measured:
        caption += "; hollow diamonds are top-1 measured by your own runs on their data set"
    return _save(fig, out_dir, "accuracy_vs_macs.png", "Accuracy vs operations (bubble = params)",
                 caption + ".")


def _source_legend(ax, points) -> None:
    Line2D = mpl().Line2D
    handles = []
    if any(p for _, p, _ in points):
        handles.append(Line2D([], [], marker="o", ls="", color="gray", alpha=0.6,
                              label="published ImageNet top-1 (torchvision / papers)"))
    datasets = sorted({m.data for _, _, m in points if m})
    if datasets:
        handles.append(Line2D([], [], marker="D", ls="", markerfacecolor="none", color="gray",
                              label=f"measured top-1 (your runs: {', '.join(datasets)})"))
    ax.legend(handles=handles, loc="best", fontsize=8)


def _accuracy_density(comparison: Comparison, out_dir: Path) -> Plot | None:
    points = [(r, p) for r, p, _ in _accuracy_points(comparison) if p is not None]
    if not points:
        return None
    points.sort(key=lambda rp: rp[1].top1_percent / (rp[0].params / 1e6), reverse=True)
    colors = _colors(comparison)
    fig, (ax,) = _figure()
    names = [r.model for r, _ in points]
    density = [p.top1_percent / (r.params / 1e6) for r, p in points]
    ax.bar(names, density, color=[colors[n] for n in names])
    for i, d in enumerate(density):
        ax.annotate(f"{d:.2f}", (i, d), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("published top-1 (%) per million parameters")
    ax.set_title("Accuracy density: how well each architecture uses its parameters")
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, out_dir, "accuracy_density.png", "Accuracy density",
                 "Published ImageNet top-1 accuracy divided by the parameter count in millions "
                 "(Canziani et al.'s 'accuracy density').")


def _latency_vs_batch(comparison: Comparison, out_dir: Path) -> Plot:
    colors = _colors(comparison)
    fig, (ax,) = _figure()
    for rep in comparison.reports:
        xs = [t.batch_size for t in rep.timings]
        ys = [t.latency_per_image_ms for t in rep.timings]
        ax.plot(xs, ys, marker="o", color=colors[rep.model], label=rep.model)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(comparison.batch_sizes), [str(b) for b in comparison.batch_sizes])
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("batch size")
    ax.set_ylabel("inference time per image (ms, median, log scale)")
    ax.set_title(f"Inference time per image vs batch size\n{_hardware(comparison)}", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "latency_vs_batch.png", "Inference time per image vs batch size",
                 "Median forward time of a batch divided by the batch size (eval mode, "
                 "torch.inference_mode, fp32).")


def _memory_vs_batch(comparison: Comparison, out_dir: Path) -> Plot:
    colors = _colors(comparison)
    fig, axes = _figure(ncols=2)
    for ax, key, what in ((axes[0], "peak_inference_bytes", "inference forward"),
                          (axes[1], "peak_train_bytes", "training step")):
        for rep in comparison.reports:
            pts = [(t.batch_size, getattr(t, key)) for t in rep.timings
                   if getattr(t, key) is not None]
            if not pts:
                continue
            color = colors[rep.model]
            ax.plot([b for b, _ in pts], [v / MIB for _, v in pts], marker="o", color=color,
                    label=rep.model)
            # The weights' share: the floor no batch size goes below.
            ax.hlines(rep.param_bytes / MIB, pts[0][0], pts[-1][0], colors=[color],
                      linestyles="dashed", linewidths=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(comparison.batch_sizes), [str(b) for b in comparison.batch_sizes])
        plain_log_ticks(ax.yaxis)
        ax.set_xlabel("batch size")
        ax.set_ylabel("measured peak memory (MiB, log scale)")
        ax.set_title(f"Peak memory, {what}\n(dashed: the weights alone)", fontsize=10)
    axes[0].legend(fontsize=8)
    return _save(fig, out_dir, "memory_vs_batch.png", "Peak memory vs batch size",
                 "Measured peak of allocated memory (weights, input, activations, and for "
                 "training gradients and optimizer state); the dashed line at each model's "
                 "weights marks their share.")


def _macs_vs_latency(comparison: Comparison, out_dir: Path) -> Plot | None:
    fits = comparison.fits()
    if not fits:
        return None
    cmap = mpl().colormaps["viridis"]
    fig, (ax,) = _figure()
    rows = comparison.rows()
    for i, (batch, fit) in enumerate(sorted(fits.items())):
        color = cmap(i / max(1, len(fits) - 1) * 0.85)
        pts = [(r["macs_per_image"] / 1e9, r["latency_per_image_ms"], r["model"])
               for r in rows if r["batch_size"] == batch]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color)
        xmax = max(p[0] for p in pts)
        ax.plot([0, xmax], [fit.intercept, fit.intercept + fit.slope * xmax], color=color,
                label=f"batch {batch}: {fit.slope:.1f} ms/GMAC + {fit.intercept:.1f} ms, "
                      f"r² = {fit.r2:.3f}")
        if i == 0:
            first = pts
    label_points(ax, first, fontsize=7)
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("inference time per image (ms, median)")
    ax.set_title(f"Operations predict time? Linear fit per batch size\n{_hardware(comparison)}",
                 fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "macs_vs_latency.png", "Operations vs measured time",
                 "Canziani et al.'s finding that the operation count is a reliable estimate of "
                 "inference time, tested on this machine: least-squares line and r² per batch "
                 "size.")


def _accuracy_vs_latency(comparison: Comparison, out_dir: Path) -> Plot | None:
    points = [(r, p) for r, p, _ in _accuracy_points(comparison) if p is not None and r.timings]
    if not points:
        return None
    colors = _colors(comparison)
    batch = comparison.batch_sizes[0]
    fig, (ax,) = _figure()
    labels = []
    for rep, pub in points:
        t = next(t for t in rep.timings if t.batch_size == batch)
        ax.scatter(t.latency_per_image_ms, pub.top1_percent, s=60, color=colors[rep.model])
        labels.append((t.latency_per_image_ms, pub.top1_percent, rep.model, 60))
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.1)
    plain_log_ticks(ax.xaxis)
    label_points(ax, labels)
    ax.set_xlabel(f"inference time per image at batch {batch} (ms, median, log scale)")
    ax.set_ylabel("published top-1 accuracy (%)")
    ax.set_title(f"Accuracy vs inference time\n{_hardware(comparison)}", fontsize=10)
    return _save(fig, out_dir, "accuracy_vs_latency.png", "Accuracy vs inference time",
                 "Published ImageNet top-1 against the measured time per image: Canziani et "
                 "al. describe this trade-off as hyperbolic.")
