"""The reports as data: one `ProfileReport` per model and input (with its JSON, CSV and text
forms), and the `Comparison` of several, which the writers (markdown, html, plots, compare)
turn into files.

Every number carries its unit in its name (`_bytes`, `_ms`, `_images_per_s`) or, for counts,
says what it counts (`params`: scalars; `macs`: multiply-accumulates, `flops` = 2 x `macs`).
Counts are of the whole input batch unless the name says `_per_image`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cnnzoo.fileio import atomic_write_text
from cnnzoo.profile.published import published_top1
from cnnzoo.profile.summary import format_summary


@dataclass(frozen=True)
class LayerRow:
    """One module of the network, as seen in one forward pass on the meta device.

    Attributes:
        path: dotted module path inside the model ("" is the model itself).
        type: class name of the module.
        depth: nesting depth (0 for the model, 1 for its children, ...).
        output_shape: shape of the module's (first) output tensor, batch included.
        params: scalars in the module's parameters, sub-modules included.
        own_params: scalars in parameters the module holds directly (not its children's).
        macs: multiply-accumulates of this module and its children for the whole input batch,
            attributed by `FlopCounterMode`'s module hierarchy.
        output_bytes: bytes of the module's output tensor(s), summed over its calls.
        calls: how often the forward pass called the module (0: defined but unused, e.g. an
            auxiliary head in eval mode).
        is_leaf: the module has no children.
        order: position of the module's first return in the forward pass (children return
            before their parents), -1 when it was not called.
        rf: theoretical receptive field of one unit of the module's (first) output, in input
            pixels, (height, width); None when not called or not computed
            (`cnnzoo.profile.receptive_field`).
        jump: distance in input pixels between neighbouring output units (the cumulative
            stride), (height, width); None when global (or rf is None).
        rf_notes: the field's flags in words ("global", "global context", "input-dependent",
            "upper bound"), "" when none.
    """

    path: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int
    own_params: int
    macs: int
    output_bytes: int
    calls: int
    is_leaf: bool
    order: int
    rf: tuple[int | float, int | float] | None = None
    jump: tuple[int | float, int | float] | None = None
    rf_notes: str = ""


@dataclass(frozen=True)
class TimingRow:
    """Measurements of one batch size on a real device (fp32).

    Attributes:
        batch_size: images per forward pass.
        latency_ms_median: median wall time of one inference forward of the whole batch
            (`torch.inference_mode`, eval mode), in milliseconds.
        latency_ms_p90: 90th percentile of the same, in milliseconds.
        latency_per_image_ms: `latency_ms_median / batch_size`.
        throughput_images_per_s: `batch_size / median latency in seconds`.
        train_step_ms_median: median wall time of one training step (forward, loss,
            backward, optimizer step, train mode), in milliseconds; the training fields
            are None when the training step was not measured.
        train_step_ms_p90: 90th percentile of the same, in milliseconds.
        train_throughput_images_per_s: `batch_size / median train step in seconds`.
        peak_inference_bytes: measured peak of allocated memory during one inference
            forward, the weights and the input batch included.
        peak_train_bytes: measured peak of allocated memory during one training step, the
            weights, optimizer state, gradients and the input batch included.
        warmup: untimed runs before the timed ones (the first also measures memory).
        inference_repeats: timed inference runs behind the median and p90.
        train_repeats: timed training steps behind the median and p90.
    """

    batch_size: int
    latency_ms_median: float
    latency_ms_p90: float
    latency_per_image_ms: float
    throughput_images_per_s: float
    train_step_ms_median: float | None
    train_step_ms_p90: float | None
    train_throughput_images_per_s: float | None
    peak_inference_bytes: int
    peak_train_bytes: int | None
    warmup: int
    inference_repeats: int
    train_repeats: int


@dataclass(frozen=True)
class ProfileReport:
    """What `cnnzoo.profile` measured for one model and input shape.

    Attributes:
        model: the model's registry name (or class name for a model outside the registry).
        family: the model's family ("" outside the zoo).
        input_shape: (N, C, H, W) of the counted input.
        params: scalars in all parameters (auxiliary heads included, shared ones once).
        trainable_params: scalars in parameters with `requires_grad`.
        param_bytes: bytes of all parameters.
        buffer_bytes: bytes of all buffers (batch-norm statistics, ...).
        input_bytes: bytes of the input batch.
        macs: multiply-accumulates of one eval-mode forward of the whole input batch
            (`torch.utils.flop_counter.FlopCounterMode` FLOPs / 2; conv, linear and matmul
            only — see docs/profile.md).
        flops: 2 x `macs`.
        macs_per_image: `macs / N`.
        activation_bytes: peak bytes of live activations during one eval-mode forward
            (tensors the forward creates; weights and the input excluded), tracked on the
            meta device.
        activation_bytes_train: bytes autograd saves for backward in one train-mode forward
            (weights and the input excluded), or None when a train-mode forward is impossible
            at this input (see `notes`).
        layers: one row per module, in definition order.
        timings: one row per batch size when timing was asked, else empty.
        env: where and how it was measured (torch version, device, threads, dtype, date).
        notes: anything that limits the figures above.
    """

    model: str
    family: str
    input_shape: tuple[int, int, int, int]
    params: int
    trainable_params: int
    param_bytes: int
    buffer_bytes: int
    input_bytes: int
    macs: int
    flops: int
    macs_per_image: int
    activation_bytes: int
    activation_bytes_train: int | None
    layers: tuple[LayerRow, ...] = ()
    timings: tuple[TimingRow, ...] = ()
    env: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    # ---- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileReport:
        data = dict(data)
        data["input_shape"] = tuple(data["input_shape"])
        data["layers"] = tuple(
            LayerRow(**{**row, "output_shape": _tuple_or_none(row["output_shape"]),
                        "rf": _tuple_or_none(row.get("rf")),
                        "jump": _tuple_or_none(row.get("jump"))})
            for row in data.get("layers", ())
        )
        data["timings"] = tuple(TimingRow(**row) for row in data.get("timings", ()))
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def summary_rows(self) -> list[dict[str, Any]]:
        """Flat rows for CSV: one per batch size (one in all without timing)."""
        base = {
            "model": self.model,
            "family": self.family,
            "input_shape": "x".join(map(str, self.input_shape)),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "param_bytes": self.param_bytes,
            "macs": self.macs,
            "flops": self.flops,
            "macs_per_image": self.macs_per_image,
            "activation_bytes": self.activation_bytes,
            "activation_bytes_train": self.activation_bytes_train,
        }
        base.update({f"env_{k}": v for k, v in self.env.items()})
        if not self.timings:
            return [base]
        return [{**base, **dataclasses.asdict(t)} for t in self.timings]

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The summary as CSV: one row per batch size (per-layer rows: `layers_csv`)."""
        text = rows_to_csv(self.summary_rows())
        if path is not None:
            atomic_write_text(path, text)
        return text

    def layers_csv(self, path: str | os.PathLike | None = None) -> str:
        rows = [
            {**dataclasses.asdict(r), "output_shape": _shape_str(r.output_shape),
             "rf": _pair_str(r.rf), "jump": _pair_str(r.jump)}
            for r in self.layers
        ]
        text = rows_to_csv(rows)
        if path is not None:
            atomic_write_text(path, text)
        return text

    def table(self, *, depth: int = 3, by_stage: bool = False) -> str:
        """The per-layer table (`summary.format_summary`)."""
        return format_summary(self, depth=depth, by_stage=by_stage)

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True)
class MeasuredAccuracy:
    """Best validation top-1 of one of the user's training runs (fraction in [0, 1]): that of
    its selected checkpoint, trained for `epochs` epochs, on `data`."""

    model: str
    top1: float
    data: str
    run: str
    epochs: int


@dataclass(frozen=True)
class LinearFit:
    """Least-squares line y = slope * x + intercept and its coefficient of determination."""

    slope: float
    intercept: float
    r2: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """Profiles of several models at one image size, timed at several batch sizes.

    Attributes:
        reports: one `ProfileReport` per model (counted at batch 1, timed per batch size).
        batch_sizes: the timed batch sizes.
        measured: measured accuracy per model from `--runs` (empty without runs).
        env: hardware and software of the measurement.
        wall_time_s: seconds the whole comparison took.
        backend: a deployment backend timed beside eager (`cnnzoo compare --backend`), or None.
        deployed_ms: its ms/image per (model, batch size).
    """

    reports: tuple[ProfileReport, ...]
    batch_sizes: tuple[int, ...]
    measured: dict[str, MeasuredAccuracy] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    backend: str | None = None
    deployed_ms: dict[tuple[str, int], float] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per model x batch size (the results.csv table)."""
        out = []
        for rep in self.reports:
            pub = published_top1(rep.model)
            meas = self.measured.get(rep.model)
            for t in rep.timings:
                out.append({
                    "model": rep.model,
                    "family": rep.family,
                    "image_shape": "x".join(map(str, rep.input_shape[1:])),
                    "batch_size": t.batch_size,
                    "params": rep.params,
                    "param_bytes": rep.param_bytes,
                    "macs_per_image": rep.macs_per_image,
                    "flops_per_image": 2 * rep.macs_per_image,
                    "activation_bytes_per_image": rep.activation_bytes // rep.input_shape[0],
                    "latency_ms_median": t.latency_ms_median,
                    "latency_ms_p90": t.latency_ms_p90,
                    "latency_per_image_ms": t.latency_per_image_ms,
                    "throughput_images_per_s": t.throughput_images_per_s,
                    "deployed_backend": self.backend,
                    "deployed_latency_per_image_ms": self.deployed_ms.get(
                        (rep.model, t.batch_size)),
                    "train_step_ms_median": t.train_step_ms_median,
                    "train_step_ms_p90": t.train_step_ms_p90,
                    "peak_inference_bytes": t.peak_inference_bytes,
                    "peak_train_bytes": t.peak_train_bytes,
                    "inference_repeats": t.inference_repeats,
                    "train_repeats": t.train_repeats,
                    "top1_published_percent": pub.top1_percent if pub else None,
                    "top1_published_source": pub.source if pub else None,
                    "top1_measured_percent": 100 * meas.top1 if meas else None,
                    "top1_measured_data": meas.data if meas else None,
                    "device": self.env.get("device"),
                    "device_name": self.env.get("device_name"),
                    "threads": self.env.get("threads"),
                    "torch_version": self.env.get("torch_version"),
                    "date": self.env.get("date"),
                })
        return out

    def _points(self, b: int) -> list[tuple[str, float, float]]:
        return [(r["model"], r["macs_per_image"] / 1e9, r["latency_per_image_ms"])
                for r in self.rows() if r["batch_size"] == b]

    def fits(self) -> dict[int, LinearFit]:
        """Per batch size: latency per image (ms) against GMACs per image, least squares."""
        fits = {}
        for b in self.batch_sizes:
            pts = self._points(b)
            if len(pts) >= 3:
                fits[b] = linear_fit([p[1] for p in pts], [p[2] for p in pts])
        return fits

    def leave_one_out(self) -> dict[int, tuple[float, str | None]]:
        """Per batch size: the lowest r² of `fits` with one model left out, and that model
        (NaN and None under 4 models), as the efficiency experiment judges its line."""
        out = {}
        for b in self.batch_sizes:
            pts = self._points(b)
            loo = leave_one_out_r2([p[1] for p in pts], [p[2] for p in pts])
            if loo and not any(math.isnan(v) for v in loo):
                i = min(range(len(loo)), key=lambda k: loo[k])
                out[b] = (loo[i], pts[i][0])
            else:
                out[b] = (math.nan, None)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "batch_sizes": list(self.batch_sizes),
            "wall_time_s": self.wall_time_s,
            "rows": self.rows(),
            "macs_vs_latency_fits": {str(b): f.__dict__ for b, f in self.fits().items()},
            "macs_vs_latency_leave_one_out": {
                str(b): {"min_r2": low, "without": model}
                for b, (low, model) in self.leave_one_out().items()},
            "deployed_backend": self.backend,
            "measured_accuracy": {k: v.__dict__ for k, v in self.measured.items()},
            "reports": [_report_without_layers(r) for r in self.reports],
        }


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Ordinary least squares of y on x, with r^2 = 1 - SS_res / SS_tot."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_res = sum((b - (slope * a + intercept)) ** 2 for a, b in zip(x, y, strict=True))
    ss_tot = sum((b - my) ** 2 for b in y)
    r2 = 1 - ss_res / ss_tot if ss_tot else float("nan")
    return LinearFit(slope, intercept, r2, n)


def leave_one_out_r2(x: Sequence[float], y: Sequence[float]) -> list[float]:
    """r² of the least-squares line with point i left out, for each i (NaN under 3 points)."""
    out = []
    for i in range(len(x)):
        xs, ys = [*x[:i], *x[i + 1:]], [*y[:i], *y[i + 1:]]
        out.append(linear_fit(xs, ys).r2 if len(xs) >= 3 else math.nan)
    return out


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _tuple_or_none(value) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


def _shape_str(shape: tuple[int, ...] | None) -> str:
    return "" if shape is None else "x".join(map(str, shape))


def _pair_str(pair: tuple[int | float, int | float] | None) -> str:
    """(427, 427) -> "427x427" (height x width, as output shapes are written)."""
    return "" if pair is None else "x".join(f"{v:g}" for v in pair)


def _report_without_layers(report: ProfileReport) -> dict[str, Any]:
    d = report.to_dict()
    d.pop("layers")
    return finite(d)


def finite(obj):
    """JSON has no NaN: None in its place."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
