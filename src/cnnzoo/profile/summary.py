"""The per-layer table, laid out like torchinfo's `summary`, and number formatting.

Besides torchinfo's columns, each row shows what one unit of the module's output sees: its
theoretical receptive field and jump (cumulative stride) in input pixels, from
`cnnzoo.profile.receptive_field` (cells by `summary_columns`, explained by `RF_LEGEND`).

This module reads a `report.ProfileReport` (and its `LayerRow`s) by attribute and imports
nothing of the profiler: `ProfileReport.table` and `str(report)` call `format_summary`, so
the report depends on its text form, not the other way round.
"""

from __future__ import annotations

import textwrap
from typing import Any

# A `report.ProfileReport` and a `report.LayerRow`, read by attribute (see the docstring).
ProfileReport = Any
LayerRow = Any

RF_LEGEND = (
    "RF (px): theoretical receptive field of one output unit, in input pixels (H x W where "
    "they differ); Jump: input pixels between neighbouring output units (cumulative stride)",
    "RF marks: + also sees the whole image through an SE gate, ~ nominal grid of a deformable "
    "conv (input-dependent), <= upper bound, global: every output mixes the whole image",
)


def format_summary(report: ProfileReport, *, depth: int = 3, by_stage: bool = False) -> str:
    """The table: one row per module down to `depth`, or one per stage; then the totals.

    A stage is a run of consecutive layers (in the order the forward pass finishes them)
    whose outputs have the same height x width: the unit the papers' architecture tables
    use (ResNet's conv2_x at 56x56, ...).
    """
    if depth < 0:
        raise ValueError(f"summary: depth must be >= 0, got {depth}")
    cells = _stage_cells(report) if by_stage else _layer_cells(report, depth)
    label_width = max(len(c[0]) for c in cells) + 2
    width = label_width + sum(_WIDTHS)
    table = []
    for i, row in enumerate(cells):
        table.append(row[0].ljust(label_width)
                     + "".join(c.rjust(w) for c, w in zip(row[1:], _WIDTHS, strict=True)))
        if i == 0:
            table.append("-" * width)
    lines = [f"{report.model}  input {_shape(report.input_shape)}  (fp32)", "=" * width,
             *table, "=" * width, *_totals(report, width), *_legend(report, width),
             "=" * width]
    return "\n".join(lines)


_WIDTHS = (18, 13, 11, 12, 10, 8)  # output shape, params, MACs, output size, RF, jump


def _layer_cells(report: ProfileReport, depth: int) -> list[tuple[str, ...]]:
    cells = [("Layer: module path (type)", "Output shape", "Params", "MACs", "Output size",
              "RF (px)", "Jump")]
    rows = [r for r in report.layers if r.depth <= depth]
    last_child = _last_children(rows)
    for r in rows:
        if r.depth == 0:
            label = r.type
        else:
            parts = r.path.split(".")
            # One column per ancestor: a bar while that ancestor has siblings still to come.
            bars = "".join("  " if ".".join(parts[:i]) in last_child else "│ "
                           for i in range(1, len(parts)))
            branch = "└─" if r.path in last_child else "├─"
            label = f"{bars}{branch}{r.path} ({r.type})"
        # Like torchinfo: a leaf, or a row whose children `depth` hides, shows all the
        # parameters below it; an expanded container shows only those it holds itself.
        if r.is_leaf or r.depth == depth:
            params = f"{r.params:,}"
        else:
            params = f"{r.own_params:,}" if r.own_params else "--"
        if r.calls == 0:
            cells.append((label, "(not called)", params, "--", "--", "--", "--"))
        else:
            cells.append((label, _shape(r.output_shape), params, human_count(r.macs),
                          human_bytes(r.output_bytes),
                          *summary_columns(r.rf, r.jump, r.rf_notes)))
    return cells


def stage_rows(report: ProfileReport) -> list[dict]:
    """Consecutive modules (in the order the forward pass finishes them) grouped by output
    H x W; each stage sums its modules' own parameters and own MACs (so stages add up to the
    totals) and its leaves' output bytes. Modules the forward never called are left out.

    Outputs without a spatial extent (1x1 or flat: SE gates, global pooling, classifiers)
    stay in the stage they occur in; everything after the last spatial output is the head.
    A stage's output shape and receptive field ("rf", "jump", "rf_notes") are those of its
    last module to finish.
    """
    rows = sorted((r for r in report.layers if r.calls > 0), key=lambda r: r.order)
    spatial = [i for i, r in enumerate(rows) if r.depth > 0 and _is_spatial(r.output_shape)]
    last_spatial = spatial[-1] if spatial else -1
    self_macs = _self_macs(report.layers)
    stages: list[dict] = []
    for i, r in enumerate(rows):
        if i > last_spatial:
            key = "head"
        elif _is_spatial(r.output_shape) or not stages:
            key = _resolution(r.output_shape)
        else:
            key = stages[-1]["resolution"]
        if not stages or stages[-1]["resolution"] != key:
            stages.append({"resolution": key, "output_shape": r.output_shape, "params": 0,
                           "macs": 0, "output_bytes": 0, "layers": 0, "rf": r.rf,
                           "jump": r.jump, "rf_notes": r.rf_notes})
        stage = stages[-1]
        if r.depth > 0:  # the model itself finishes last; its own work joins the head
            stage.update(output_shape=r.output_shape, rf=r.rf, jump=r.jump,
                         rf_notes=r.rf_notes)
        stage["params"] += r.own_params
        stage["macs"] += self_macs[r.path]
        if r.is_leaf:
            stage["output_bytes"] += r.output_bytes
            stage["layers"] += 1
    return stages


def _is_spatial(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def _stage_cells(report: ProfileReport) -> list[tuple[str, ...]]:
    cells = [("Stage (output H x W)", "Output shape", "Params", "MACs", "Output size",
              "RF (px)", "Jump")]
    for i, s in enumerate(stage_rows(report), 1):
        cells.append((f"stage {i}: {s['resolution']} ({s['layers']} layers)",
                      _shape(s["output_shape"]), f"{s['params']:,}", human_count(s["macs"]),
                      human_bytes(s["output_bytes"]),
                      *summary_columns(s["rf"], s["jump"], s["rf_notes"])))
    # Unused modules that hold weights (auxiliary heads in eval mode) are listed at the end.
    unused = [r for r in report.layers if r.calls == 0 and r.depth > 0 and r.params > 0]
    top_unused = [r for r in unused if not any(r.path.startswith(u.path + ".") for u in unused)]
    for r in top_unused:
        cells.append((f"{r.path} ({r.type}, not called)", "--", f"{r.params:,}", "--", "--",
                      "--", "--"))
    return cells


def summary_columns(rf, jump, rf_notes: str = "") -> tuple[str, str]:
    """The RF and jump cells of a table row: ("427", "32"), ("427+", "32"), ("global", "--").

    Markers on the RF: "+" global context (an SE gate: every unit also sees the whole image),
    "~" the nominal grid of a deformable conv (input-dependent), "<=" an upper bound. A module
    the forward never called (rf None) reads ("--", "--").
    """
    if rf is None:
        return "--", "--"
    if "global" in rf_notes.split(", "):
        return "global", "--"
    text = ("<=" if "upper bound" in rf_notes else "") + pair_text(rf)
    text += "+" if "global context" in rf_notes else ""
    text += "~" if "input-dependent" in rf_notes else ""
    return text, pair_text(jump)




def pair_text(v) -> str:
    """(427, 427) -> "427", (7, 9) -> "7x9", None -> "--" (height x width where they differ)."""
    if v is None:
        return "--"
    a, b = (f"{x:g}" for x in v)
    return a if a == b else f"{a}x{b}"


def _totals(report: ProfileReport, width: int) -> list[str]:
    mib = 2**20
    lines = [
        f"Total params: {report.params:,}",
        f"Trainable params: {report.trainable_params:,}",
        f"Non-trainable params: {report.params - report.trainable_params:,}",
        f"Total MACs: {human_count(report.macs)} ({report.macs:,}; "
        f"{human_count(report.macs_per_image)} per image; FLOPs = 2 x MACs)",
        "-" * width,
        f"Input size (MiB): {report.input_bytes / mib:,.2f}",
        f"Params size (MiB): {report.param_bytes / mib:,.2f}",
        f"Buffers size (MiB): {report.buffer_bytes / mib:,.2f}",
        f"Peak live activations, eval forward (MiB): {report.activation_bytes / mib:,.2f}",
    ]
    if report.activation_bytes_train is not None:
        lines.append(
            f"Saved for backward, train forward (MiB): {report.activation_bytes_train / mib:,.2f}"
        )
    for t in report.timings:
        lines.append(
            f"Batch {t.batch_size}: latency {t.latency_ms_median:,.2f} ms median "
            f"({t.latency_ms_p90:,.2f} p90), {t.throughput_images_per_s:,.1f} images/s, "
            f"peak {t.peak_inference_bytes / mib:,.1f} MiB"
            + (f"; train step {t.train_step_ms_median:,.1f} ms, peak "
               f"{t.peak_train_bytes / mib:,.1f} MiB" if t.train_step_ms_median is not None
               else "")
        )
    if report.timings:
        env = report.env
        lines.append(f"Measured on {env.get('device_name')} ({env.get('device')}, "
                     f"{env.get('threads')} threads, torch {env.get('torch_version')})")
    lines += [f"Note: {n}" for n in report.notes]
    return lines


def _legend(report: ProfileReport, width: int) -> list[str]:
    """What the RF and Jump columns mean (wrapped to the table), when the report has them."""
    if all(r.rf is None for r in report.layers):
        return []
    return [line for text in RF_LEGEND
            for line in textwrap.wrap(text, width, subsequent_indent="  ",
                                      break_on_hyphens=False)]


def _self_macs(rows: tuple[LayerRow, ...]) -> dict[str, int]:
    """MACs of each module minus those of its direct children (work done in its own code)."""
    child_sum: dict[str, int] = {}
    for r in rows:
        if r.path:
            parent = r.path.rsplit(".", 1)[0] if "." in r.path else ""
            child_sum[parent] = child_sum.get(parent, 0) + r.macs
    return {r.path: max(0, r.macs - child_sum.get(r.path, 0)) for r in rows}


def _last_children(rows: list[LayerRow]) -> set[str]:
    last: dict[str, str] = {}
    for r in rows:
        if r.path:
            parent = r.path.rsplit(".", 1)[0] if "." in r.path else ""
            last[parent] = r.path
    return set(last.values())


def _resolution(shape: tuple[int, ...] | None) -> str:
    if shape is not None and len(shape) == 4:
        return f"{shape[2]}x{shape[3]}"
    return "head" if shape is not None else "no tensor output"


def _shape(shape: tuple[int, ...] | None) -> str:
    return "--" if shape is None else "x".join(map(str, shape))


def human_count(n: int | float) -> str:
    """1_814_083_944 -> '1.81 G' (decimal prefixes, as MAC and parameter counts are quoted)."""
    for value, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= value:
            return f"{n / value:.2f} {prefix}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def human_bytes(n: int | float) -> str:
    """Bytes in binary units: 3_211_264 -> '3.06 MiB'."""
    for value, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= value:
            return f"{n / value:.2f} {unit}"
    return f"{int(n)} B"
