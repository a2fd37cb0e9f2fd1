"""`profile()`: count a model on the meta device, then (on request) time it for real."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
from collections.abc import Callable, Sequence

import torch
from torch import nn

from cnnzoo.fileio import cpu_name
from cnnzoo.models import create_model
from cnnzoo.profile.counting import count_forward, parameter_stats, train_saved_bytes
from cnnzoo.profile.meta import check_input_shape, meta_model
from cnnzoo.profile.receptive_field import receptive_field
from cnnzoo.profile.report import LayerRow, ProfileReport
from cnnzoo.profile.timing import OPTIMIZER, TimingOptions, measure

# `check_input_shape` lives in meta.py beside the meta copy; compare imports it from here.
__all__ = ["check_batch_sizes", "check_device", "check_input_shape", "environment", "profile",
           "run_profile"]


def profile(
    model_or_name: nn.Module | str,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    *,
    timing: bool = False,
    batch_sizes: Sequence[int] = (1, 8, 32),
    device: str | torch.device = "cpu",
    receptive_fields: bool = False,
) -> ProfileReport:
    """Parameters, MACs, activation memory and per-layer rows; latency and peak memory too.

    Counting runs on a meta-device copy (no computation, no memory). With `timing=True` the
    model then runs for real on `device` at each of `batch_sizes` (see
    `cnnzoo.profile.timing` for the method). The model passed in is never modified.

    Args:
        model_or_name: a module, or a registered model name (built with
            `in_chans = input_shape[1]`).
        input_shape: (N, C, H, W) counted; a (C, H, W) shape means N = 1.
        timing: also measure latency, throughput and peak memory per batch size.
        batch_sizes: batch sizes to time (each >= 1).
        device: "cpu" or "cuda[:i]" for the timing runs.
        receptive_fields: also fill each row's receptive field and jump (one more meta
            forward, ~40% of the counting time; `cnnzoo summary` asks for it).

    Returns:
        A `ProfileReport`; `str(report)` is the per-layer table.

    Raises:
        ValueError: unknown model name, a bad shape or batch size, or an input the model
            cannot take (the message names the model).
    """
    return run_profile(model_or_name, input_shape, timing=timing, batch_sizes=batch_sizes,
                       device=device, receptive_fields=receptive_fields)


def run_profile(
    model_or_name: nn.Module | str,
    input_shape: Sequence[int],
    *,
    timing: bool,
    batch_sizes: Sequence[int] = (1, 8, 32),
    device: str | torch.device = "cpu",
    options: TimingOptions | None = None,
    on_batch: Callable[[int], None] | None = None,
    receptive_fields: bool = False,
) -> ProfileReport:
    """`profile` with the timing options exposed (used by `compare`)."""
    options = options or TimingOptions()
    shape = check_input_shape(input_shape)
    if timing:
        batch_sizes = check_batch_sizes(batch_sizes)
        device = check_device(device)
    if timing and isinstance(model_or_name, nn.Module) and any(
        t.is_meta for t in (*model_or_name.parameters(), *model_or_name.buffers())
    ):
        raise ValueError("profile: a model on the meta device has no values to time; "
                         "pass a real model or its name, or timing=False")
    name, meta = meta_model(model_or_name, shape[1], caller="profile")
    family = getattr(meta, "family", "")
    notes: list[str] = []
    x = torch.empty(shape, device="meta")
    counted = _checked(name, shape, lambda: count_forward(meta, x))
    try:
        saved = train_saved_bytes(meta, x)
    except (ValueError, RuntimeError) as err:  # e.g. batch-norm on one value per channel
        saved = None
        notes.append(f"no train-mode forward at {_shape_str(shape)}: {_first_line(err)}")
    layers = counted.layers
    if receptive_fields:
        layers = _with_receptive_fields(layers, meta, shape, notes)
    params, trainable, p_bytes, b_bytes = parameter_stats(meta)
    timings = ()
    if timing:
        real = model_or_name
        if isinstance(real, str):
            real = create_model(real, in_chans=shape[1])
        timings = tuple(measure(real, shape[1:], tuple(batch_sizes), device=device,
                                options=options, on_batch=on_batch, notes=notes))
    return ProfileReport(
        model=name,
        family=family,
        input_shape=shape,
        params=params,
        trainable_params=trainable,
        param_bytes=p_bytes,
        buffer_bytes=b_bytes,
        input_bytes=4 * shape[0] * shape[1] * shape[2] * shape[3],  # fp32
        macs=counted.macs,
        flops=2 * counted.macs,
        macs_per_image=counted.macs // shape[0],
        activation_bytes=counted.activation_bytes,
        activation_bytes_train=saved,
        layers=layers,
        timings=timings,
        # Without timing nothing ran on a real device: the counts come from "meta".
        env=environment(device if timing else "meta", timing=timing, options=options),
        notes=tuple(notes),
    )


def _with_receptive_fields(layers: Sequence[LayerRow], meta_model: nn.Module,
                           shape: tuple[int, int, int, int], notes: list[str]
                           ) -> tuple[LayerRow, ...]:
    """The rows with their receptive field, jump and flags (`cnnzoo.receptive_field`: one more
    meta forward, a fraction of the counting's time); a model the field rules cannot follow
    keeps rows without them and gets a note.

    A module called several times (a bottleneck's shared ReLU) gets the field of its first
    call, the call its `output_shape` and `order` describe (`layer_columns` gives the last).
    """
    try:
        fields = receptive_field(meta_model, shape)
    except ValueError as err:
        notes.append(f"no receptive fields: {_first_line(err)}")
        return tuple(layers)
    columns = {f.path: {"rf": f.rf, "jump": f.jump, "rf_notes": f.notes}
               for f in fields.rows if f.call == 0}
    return tuple(dataclasses.replace(r, **columns[r.path]) if r.path in columns else r
                 for r in layers)


def check_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(batch_sizes)
    if not sizes:
        raise ValueError("batch sizes: expected at least one")
    for b in sizes:
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise ValueError(f"batch size must be an integer >= 1, got {b!r}")
    return sizes


def check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device: expected 'cpu' or 'cuda[:i]', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} is not available (torch.cuda.is_available() is False)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu' or 'cuda[:i]', got {device!r}")
    return dev


def environment(device: str | torch.device, *, timing: bool, options: TimingOptions) -> dict:
    """Where and how a measurement was made: recorded beside every timed number."""
    dev = torch.device(device)
    env = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "dtype": "float32",
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if timing:
        env.update(
            warmup=options.warmup,
            min_repeats=options.repeats,
            max_repeats=options.max_repeats,
            min_time_s=options.min_time_s,
            statistic="median and p90 of wall time",
            train_step="timed" if options.train and options.time_train else
            "peak memory only (one step)" if options.train else "not measured",
            optimizer=OPTIMIZER,
        )
    return env


def _checked(name: str, shape: tuple, fn):
    """Run a meta forward; an input the model cannot take becomes one ValueError naming it."""
    try:
        return fn()
    except ValueError:
        raise  # zoo models already say which model and what they expected
    except (RuntimeError, IndexError, TypeError) as err:
        raise ValueError(
            f"{name}: cannot take an input of shape {_shape_str(shape)}: {_first_line(err)}"
        ) from err


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
