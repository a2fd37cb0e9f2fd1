"""The comparison as a table of strings, and as report.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnzoo.profile.published import published_top1

if TYPE_CHECKING:
    from cnnzoo.profile.plots import Plot
    from cnnzoo.profile.report import Comparison

MIB = 2**20
HEADERS = (
    "model", "params (M)", "GMACs/image", "top-1 published (%)", "batch",
    "ms/image (median)", "batch ms p90", "images/s", "train step (ms)",
    "peak inference (MiB)", "peak train (MiB)",
)  # every column a comparison can have; `headers` gives those of one comparison


def headers(comparison: Comparison) -> tuple[str, ...]:
    """The columns of this comparison's table: `HEADERS`, with "B ms/image" after eager's
    when a deployment backend B was timed too, and without "train step (ms)" when no
    training step was timed (a column of "--" in every row says nothing)."""
    rows = comparison.rows()
    out = [h for h in HEADERS if h != "train step (ms)"
           or any(r["train_step_ms_median"] is not None for r in rows)]
    if comparison.backend:
        at = out.index("ms/image (median)") + 1
        out.insert(at, f"{comparison.backend} ms/image")
    return tuple(out)


def summary_table(comparison: Comparison) -> list[tuple[str, ...]]:
    """One row of formatted cells per model x batch size, columns as in `headers`."""
    columns = headers(comparison)
    out = []
    for r in comparison.rows():
        top1 = r["top1_published_percent"]
        train = r["train_step_ms_median"]
        peak_train = r["peak_train_bytes"]
        deployed = r["deployed_latency_per_image_ms"]
        cells = {
            "model": r["model"],
            "params (M)": f"{r['params'] / 1e6:.2f}",
            "GMACs/image": f"{r['macs_per_image'] / 1e9:.3f}",
            "top-1 published (%)": "--" if top1 is None else f"{top1:.2f}",
            "batch": str(r["batch_size"]),
            "ms/image (median)": f"{r['latency_per_image_ms']:.2f}",
            f"{comparison.backend} ms/image": "--" if deployed is None else f"{deployed:.2f}",
            "batch ms p90": f"{r['latency_ms_p90']:.1f}",
            "images/s": f"{r['throughput_images_per_s']:.1f}",
            "train step (ms)": "--" if train is None else f"{train:.1f}",
            "peak inference (MiB)": f"{r['peak_inference_bytes'] / MIB:.1f}",
            "peak train (MiB)": "--" if peak_train is None else f"{peak_train / MIB:.1f}",
        }
        out.append(tuple(cells[h] for h in columns))
    return out


def fit_line(comparison: Comparison) -> str:
    """Per batch size, the r² of ms/image on GMACs/image and beside it the lowest r² with one
    model left out (and which): a line that one model makes is not a law of the others."""
    loo = comparison.leave_one_out()
    parts = []
    for b, f in sorted(comparison.fits().items()):
        low, without = loo.get(b, (float("nan"), None))
        extra = (f" (leave-one-out: lowest {low:.3f}, without {without})" if without
                 else " (no leave-one-out r²: fewer than 4 models)")
        parts.append(f"batch {b}: r² = {f.r2:.3f}{extra}")
    return ", ".join(parts)


def text_table(comparison: Comparison) -> str:
    """The table aligned for a terminal."""
    columns = headers(comparison)
    rows = [columns, *summary_table(comparison)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                 enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def method_lines(comparison: Comparison) -> list[str]:
    """How the numbers were made: hardware, software, repetitions, counting rule, sources."""
    env = comparison.env
    r2 = fit_line(comparison)
    lines = [
        f"- Hardware: {env.get('device_name')} ({env.get('device')}, {env.get('threads')} "
        f"threads of {env.get('cpu_count')} CPUs); torch {env.get('torch_version')}, "
        f"Python {env.get('python_version')}, {env.get('platform')}; {env.get('date')}.",
        f"- Timing: fp32; {env.get('warmup')} untimed warm-up run (it also measures memory), "
        f"then at least {env.get('min_repeats')} timed runs (more, up to "
        f"{env.get('max_repeats')}, until {env.get('min_time_s')} s are timed); median and "
        "p90 of wall time. Inference: eval mode under `torch.inference_mode`. Training step "
        f"(forward, cross-entropy, backward, {env.get('optimizer')}): "
        f"{env.get('train_step')}.",
        "- MACs: `torch.utils.flop_counter.FlopCounterMode` FLOPs / 2 on the meta device, one "
        "eval-mode forward; convolutions, linear layers and matrix products only (batch-norm, "
        "activations, pooling and additions count 0), the rule behind torchvision's GFLOPS.",
        "- Peak memory: PyTorch's CPU allocator events under `torch.profiler` "
        "(`profile_memory=True`), exact to the byte; weights, input, optimizer state included "
        "(`torch.cuda.max_memory_allocated` on CUDA).",
        "- Accuracy: *published* ImageNet-1K top-1 (torchvision 0.29.1 IMAGENET1K_V1 weights; "
        "SE-ResNet from Hu et al. Table 2), never measured here"
        + ("; *measured* top-1 from your runs on their own data set." if comparison.measured
           else "."),
        *(f"- Published figure for {r.model}: {pub.note}." for r in comparison.reports
          if (pub := published_top1(r.model)) is not None and pub.note),
        f"- Operations vs time (least squares of eager ms/image on GMACs/image): "
        f"{r2 or 'n/a'}.",
        *([f"- {comparison.backend} ms/image: the same models built by `cnnzoo.deploy` "
           f"({comparison.backend}, checked against eager), timed as eager (median of at "
           f"least {env.get('min_repeats')} runs) on the same inputs."]
          if comparison.backend else []),
        f"- Whole comparison: {comparison.wall_time_s:.0f} s.",
    ]
    return lines


def render_markdown(comparison: Comparison, plots: list[Plot]) -> str:
    rows = summary_table(comparison)
    columns = headers(comparison)
    out = [
        "# cnnzoo compare: memory and compute efficiency",
        "",
        "After Canziani, Paszke and Culurciello, *An Analysis of Deep Neural Network Models for "
        "Practical Applications* (2016, arXiv:1605.07678), measured on this machine.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    if comparison.measured:
        out += ["Measured accuracy (your runs):", ""]
        out += [f"- {m.model}: {100 * m.top1:.2f}% top-1 on {m.data} (run `{m.run}`, "
                f"{m.epochs} epochs)" for m in comparison.measured.values()]
        out.append("")
    out += ["## Method", "", *method_lines(comparison), "", "## Plots", ""]
    for p in plots:
        out += [f"### {p.title}", "", f"![{p.title}](plots/{p.file})", "", p.caption, ""]
    return "\n".join(out)
