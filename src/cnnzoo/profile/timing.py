"""Timing a model for real: inference latency, training-step time and measured peak memory.

Method, per batch size (fp32, fixed random input):

- inference: the model in eval mode under `torch.inference_mode()`; training step: train
  mode, forward, cross-entropy loss against random labels (the auxiliary logits of a model
  such as GoogLeNet weighted by its `aux_weight`, default 0.3 as in the paper), backward,
  `SGD(lr=0.01, momentum=0.9)` step, `zero_grad(set_to_none=True)`.
- `warmup` untimed runs first; the first of them runs under the memory tracker
  (`memory.measure_peak_bytes`), so the measured peak costs no extra run and never
  distorts a timed one.
- then timed runs until at least `repeats` runs and `min_time_s` seconds have passed (at
  most `max_repeats`): short runs are repeated more, long ones stop at `repeats`.
- statistic: median and 90th percentile (linear interpolation) of the timed runs.
- clocks: on CPU `time.perf_counter` around each call (the call returns when the work is
  done); on CUDA a pair of `torch.cuda.Event(enable_timing=True)` recorded around each call
  on the current stream and `torch.cuda.synchronize()` before the elapsed times are read,
  because CUDA kernels run asynchronously.

The model passed in is never changed: timing runs on a deep copy.

Other processes: on a small machine one busy neighbour can slow a model several times over
(on 2 cores one slowed ResNet-50 from 63 to 850 ms per image). `OtherLoad` measures the share
of the CPU they took while a block ran (Linux /proc), and `wait_for_idle` waits for them to
go quiet; `measure_when_quiet` combines them: it measures again (after a wait) while they
were busy, and says how busy they were during the measurement it keeps.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.profile.memory import measure_peak_bytes, resident_bytes
from cnnzoo.profile.report import TimingRow

T = TypeVar("T")

OPTIMIZER = "SGD(lr=0.01, momentum=0.9)"
DEFAULT_AUX_WEIGHT = 0.3  # GoogLeNet (Szegedy et al. 2014, section 5): aux losses weighted 0.3


@dataclass(frozen=True)
class TimingOptions:
    """How hard to measure.

    Attributes:
        warmup: untimed runs before the timed ones (>= 1: the first measures memory).
        repeats: fewest timed runs.
        max_repeats: most timed runs.
        min_time_s: keep repeating (up to `max_repeats`) until this many seconds are timed.
        train: also measure a training step's peak memory (one step per batch size).
        time_train: and time training steps like inference (warm-up, repeats); a training
            step costs about three forwards, so this is most of a measurement's time.
    """

    warmup: int = 1
    repeats: int = 5
    max_repeats: int = 50
    min_time_s: float = 1.0
    train: bool = True
    time_train: bool = True

    def __post_init__(self) -> None:
        if self.warmup < 1:
            raise ValueError(f"timing: warmup must be >= 1 (it measures memory), got {self.warmup}")
        if not 1 <= self.repeats <= self.max_repeats:
            raise ValueError(
                f"timing: expected 1 <= repeats <= max_repeats, got {self.repeats}, "
                f"{self.max_repeats}"
            )


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_calls(
    fn: Callable[[], object],
    *,
    device: torch.device | str,
    repeats: int,
    max_repeats: int,
    min_time_s: float,
    cuda: object = None,
) -> list[float]:
    """Seconds per call of `fn`, timed `repeats`..`max_repeats` times (see module doc).

    `cuda` stands in for the `torch.cuda` module (its `Event` and `synchronize`); tests pass
    a recorder to check the structure of the CUDA path on a machine without a GPU.
    """
    if torch.device(device).type == "cuda":
        return _time_cuda(fn, repeats, max_repeats, min_time_s, cuda or torch.cuda)
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_time_s and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _time_cuda(fn, repeats, max_repeats, min_time_s, cuda) -> list[float]:
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_time_s and len(times) < max_repeats):
        # Events are recorded on the stream: they time the GPU work, not the launch.
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        cuda.synchronize()  # elapsed_time needs both events to have completed
        times.append(start.elapsed_time(end) / 1000.0)  # ms -> s
    return times


def training_loss(output, target: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """Cross-entropy of the main logits plus `aux_weight` x that of each auxiliary output.

    A tuple output (GoogLeNet in train mode) is (main, aux1, aux2, ...). An output that is
    not (N, classes) logits falls back to its mean square, so any module can be timed.
    """
    outputs = list(output) if isinstance(output, (tuple, list)) else [output]
    outputs = [o for o in outputs if isinstance(o, torch.Tensor)]

    def one(o: torch.Tensor) -> torch.Tensor:
        if o.dim() == 2 and o.shape[0] == target.shape[0]:
            return F.cross_entropy(o, target.remainder(o.shape[1]))
        return o.float().square().mean()

    loss = one(outputs[0])
    for aux in outputs[1:]:
        loss = loss + aux_weight * one(aux)
    return loss


def measure(
    model: nn.Module,
    image_shape: tuple[int, int, int],
    batch_sizes: tuple[int, ...],
    *,
    device: torch.device | str = "cpu",
    options: TimingOptions = TimingOptions(),
    on_batch: Callable[[int], None] | None = None,
    notes: list[str] | None = None,
) -> list[TimingRow]:
    """Time `model` at each batch size on `device` (see module doc); `model` is not changed.

    Args:
        model: the network (any device; a copy is moved to `device`).
        image_shape: (C, H, W) of one image.
        batch_sizes: images per forward pass, each >= 1.
        device: "cpu" or a CUDA device.
        options: warm-up and repetitions.
        on_batch: called with each batch size after it is measured (progress display).
        notes: receives a line for each measurement that could not be made (a training
            step that batch-norm refuses at this batch size: its row's training fields
            are None).
    """
    device = torch.device(device)
    work = copy.deepcopy(model).to(device=device, dtype=torch.float32)
    aux_weight = float(getattr(model, "aux_weight", DEFAULT_AUX_WEIGHT))
    gen = torch.Generator().manual_seed(0)
    rows = []
    original = model.state_dict()
    for batch in batch_sizes:
        # Every batch size starts from the original weights: the training steps of the
        # previous one (random labels) must not drift them anywhere unusual.
        work.load_state_dict(original)
        x = torch.randn((batch, *image_shape), generator=gen).to(device)
        infer = _measure_inference(work, x, device, options)
        train = None
        if options.train:
            try:
                train = _measure_training(work, x, device, options, aux_weight)
            except ValueError as err:  # e.g. batch-norm on one value per channel
                if notes is not None:
                    notes.append(f"no training step at batch {batch}: {err}")
        rows.append(_row(batch, options, infer, train))
        if on_batch is not None:
            on_batch(batch)
    return rows


def _measure_inference(work: nn.Module, x: torch.Tensor, device, options: TimingOptions):
    work.eval()

    def forward() -> None:
        with torch.inference_mode():
            work(x)

    resident = resident_bytes([*work.parameters(), *work.buffers(), x])
    peak = resident + measure_peak_bytes(forward, device)
    for _ in range(options.warmup - 1):
        forward()
    times = time_calls(forward, device=device, repeats=options.repeats,
                       max_repeats=options.max_repeats, min_time_s=options.min_time_s)
    return times, peak


def _measure_training(work: nn.Module, x, device, options: TimingOptions, aux_weight: float):
    work.train()
    # The optimizer, its momentum and the gradients are per batch size and dropped after it.
    params = [p for p in work.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9) if params else None
    target = torch.randint(0, 2**31 - 1, (x.shape[0],), generator=torch.Generator().manual_seed(1))
    target = target.to(x.device)

    def step() -> None:
        loss = training_loss(work(x), target, aux_weight)
        if loss.requires_grad:
            loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    # Momentum buffers up front, so even the first step is a steady one (a zero buffer makes
    # SGD's first update exactly the one it makes when it creates the buffer itself).
    for p in params:
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    state = [t for s in (opt.state.values() if opt else ()) for t in s.values()
             if isinstance(t, torch.Tensor)]
    resident = resident_bytes([*work.parameters(), *work.buffers(), *state, x, target])
    peak = resident + measure_peak_bytes(step, device)
    times: list[float] = []
    if options.time_train:
        for _ in range(options.warmup - 1):
            step()
        times = time_calls(step, device=device, repeats=options.repeats,
                           max_repeats=options.max_repeats, min_time_s=options.min_time_s)
    if opt is not None:
        opt.state.clear()
    return times, peak


def _row(batch: int, options: TimingOptions, infer, train) -> TimingRow:
    times, peak = infer
    med = statistics.median(times)
    t_med = t_p90 = t_thr = None
    t_repeats = 0
    t_times, t_peak = train if train is not None else ([], None)
    if t_times:
        t_med = statistics.median(t_times) * 1e3
        t_p90 = percentile(t_times, 90) * 1e3
        t_thr = batch / (t_med / 1e3)
        t_repeats = len(t_times)
    return TimingRow(
        batch_size=batch,
        latency_ms_median=med * 1e3,
        latency_ms_p90=percentile(times, 90) * 1e3,
        latency_per_image_ms=med * 1e3 / batch,
        throughput_images_per_s=batch / med,
        train_step_ms_median=t_med,
        train_step_ms_p90=t_p90,
        train_throughput_images_per_s=t_thr,
        peak_inference_bytes=peak,
        peak_train_bytes=t_peak,
        warmup=options.warmup,
        inference_repeats=len(times),
        train_repeats=t_repeats,
    )


class OtherLoad:
    """Measures the fraction of the machine's CPU time that other processes used while the
    `with` block ran, from Linux's /proc/stat (all CPUs) and /proc/self/stat (this process,
    all its threads); `fraction` stays None where /proc is missing.
    """

    fraction: float | None = None

    def __enter__(self) -> OtherLoad:
        self._start = _cpu_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_ticks()
        if self._start is not None and end is not None:
            busy, total, ours = (e - s for e, s in zip(end, self._start, strict=True))
            self.fraction = max(0.0, busy - ours) / total if total > 0 else None


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(busy ticks of all CPUs, all ticks of all CPUs, this process's ticks), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        # /proc/self/stat: the command name may hold spaces; fields after it start at state.
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal  # steal: a hypervisor took the CPU
    return busy, busy + idle + iowait, int(own[11]) + int(own[12])  # utime + stime


def wait_for_idle(limit_s: float, *, max_load: float, sample_s: float = 2.0) -> float:
    """Sleep in `sample_s` steps until other processes use at most `max_load` of the CPU
    over one step, or `limit_s` has passed (or /proc is missing); returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        with OtherLoad() as load:
            time.sleep(sample_s)
        if load.fraction is None or load.fraction <= max_load:
            break
    return time.perf_counter() - start


def measure_when_quiet(measure: Callable[[], T], *, max_load: float, attempts: int,
                       wait_s: float, label: str,
                       log: Callable[[str], None] = lambda line: None,
                       ) -> tuple[T, float | None, int]:
    """Call `measure` under `OtherLoad`; while other processes took over `max_load` of the
    CPU, wait for them (`wait_for_idle`, up to `wait_s`) and call it again, `attempts` calls
    at most. Returns the last result, the other processes' share during it (None: unknown)
    and the calls made; `log` gets one line per call (`label` first) and per wait."""
    for attempt in range(1, attempts + 1):
        with OtherLoad() as load:
            result = measure()
        busy = load.fraction is not None and load.fraction > max_load
        share = "unknown" if load.fraction is None else f"{load.fraction:.0%}"
        log(f"{label}: other processes {share} of the CPU"
            + ("; timing again" if busy and attempt < attempts else ""))
        if not busy:
            break
        if attempt < attempts:
            waited = wait_for_idle(wait_s, max_load=max_load)
            log(f"waited {waited:.0f} s for other processes to go below {max_load:.0%} of the CPU")
    return result, load.fraction, attempt
