"""The profile report: one object per model and input, with writers for JSON, CSV and text.

Every number carries its unit in its name (`_bytes`, `_ms`, `_images_per_s`) or, for counts,
says what it counts (`params`: scalars; `macs`: multiply-accumulates, `flops` = 2 x `macs`).
Counts are of the whole input batch unless the name says `_per_image`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cnnzoo.fileio import atomic_write_text


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
        from cnnzoo.profile.summary import format_summary

        return format_summary(self, depth=depth, by_stage=by_stage)

    def __str__(self) -> str:
        return self.table()


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
