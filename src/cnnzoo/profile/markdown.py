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
)


def summary_table(comparison: Comparison) -> list[tuple[str, ...]]:
    """One row of formatted cells per model x batch size, columns as in `HEADERS`."""
    out = []
    for r in comparison.rows():
        top1 = r["top1_published_percent"]
        train = r["train_step_ms_median"]
        peak_train = r["peak_train_bytes"]
        out.append((
            r["model"],
            f"{r['params'] / 1e6:.2f}",
            f"{r['macs_per_image'] / 1e9:.3f}",
            "--" if top1 is None else f"{top1:.2f}",
            str(r["batch_size"]),
            f"{r['latency_per_image_ms']:.2f}",
            f"{r['latency_ms_p90']:.1f}",
            f"{r['throughput_images_per_s']:.1f}",
            "--" if train is None else f"{train:.1f}",
            f"{r['peak_inference_bytes'] / MIB:.1f}",
            "--" if peak_train is None else f"{peak_train / MIB:.1f}",
        ))
    return out


def text_table(comparison: Comparison) -> str:
    """The table aligned for a terminal."""
    rows = [HEADERS, *summary_table(comparison)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
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
    fits = comparison.fits()
    r2 = ", ".join(f"batch {b}: r² = {f.r2:.3f}" for b, f in sorted(fits.items()))
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
        f"- Operations vs time (least squares of ms/image on GMACs/image): {r2 or 'n/a'}.",
        f"- Whole comparison: {comparison.wall_time_s:.0f} s.",
    ]
    return lines


def render_markdown(comparison: Comparison, plots: list[Plot]) -> str:
    rows = summary_table(comparison)
    out = [
        "# cnnzoo compare: memory and compute efficiency",
        "",
        "After Canziani, Paszke and Culurciello, *An Analysis of Deep Neural Network Models for "
        "Practical Applications* (2016, arXiv:1605.07678), measured on this machine.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|",
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
