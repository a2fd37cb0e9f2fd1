"""`cnnzoo bench`: deployed speed of models x backends x batch sizes, as timm's benchmark.py
does for eager, with the figures that survive a busy machine.

Every entry (model, backend, batch size) is built once (`deploy`, checked against eager), then
timed in `rounds` interleaved rounds (A B C A B C ...), so a load that drifts during the run
hits every entry alike. Per entry: latency median and p90 over all calls of all rounds, the
spread of the round medians, images/s, achieved GFLOP/s (2 x MACs x batch / median) and its
share of this machine's fp32 peak, measured in the same run (`profile.peak`). An entry is
flagged `noisy` when its p90/median exceeds 1.5 or when other processes took more than 10% of
the CPU while it was timed (`profile.timing.OtherLoad`, from /proc).

The reduced-precision backends (bf16, int8) are checked by their top-1 agreement with eager
and max relative logit difference. bench times registered models with random weights, so it
has no data of theirs: by default int8 is calibrated, and both are checked, on
`CALIBRATION_BATCHES` seeded random-normal batches, and the table says "on random data"
beside those figures. `calibration_data` (`cnnzoo bench --calibration DATA`) replaces them
with as many real images (a stratified, seeded subset of a data set's training split, resized
to the input size and normalised with that set's statistics), and the table names the data
set instead. Either way the weights are random: the figures show the backend runs and how far
its logits move on such inputs, not its accuracy (for that, `cnnzoo eval CKPT --backend int8`
or benchmarks/int8_accuracy.py).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from cnnzoo.data.augment import preprocess
from cnnzoo.data.dataset import stratified_subset
from cnnzoo.data.sources import load_dataset
from cnnzoo.infer.backends import Deployed, deploy
from cnnzoo.models import create_model
from cnnzoo.profile.peak import Peak, measure_peak
from cnnzoo.profile.plots import figure
from cnnzoo.profile.profiler import check_batch_sizes, profile
from cnnzoo.profile.timing import OtherLoad, percentile, time_calls

NOISY_SPREAD = 1.5  # p90 / median above this: the entry's calls varied too much
NOISY_LOAD = 0.10  # other processes' share of the CPU above this while an entry was timed
CALIBRATION_BATCHES = 4  # batches of 8 images (random-normal, or real) for int8 and bf16
RANDOM = "random data"  # what the reduced-precision figures were measured on by default
REDUCED = ("bf16", "int8")  # the backends checked by agreement, not by the 1e-4 rule


@dataclass
class BenchRow:
    model: str
    backend: str
    batch: int
    median_ms: float
    p90_ms: float
    round_medians_ms: list[float]
    images_per_s: float
    gflops: float
    pct_of_peak: float
    build_s: float
    max_abs_diff: float
    tolerance: float
    other_load: float | None
    calls: int
    noisy: list[str] = field(default_factory=list)
    top1_agreement: float | None = None  # bf16, int8: see `agreement_on`
    max_rel_diff: float | None = None
    agreement_on: str | None = None
    calibration: str | None = None  # bf16, int8: RANDOM, or the data set's name


@dataclass
class BenchResult:
    rows: list[BenchRow]
    peak: Peak
    input_shape: tuple[int, int, int]
    rounds: int
    min_time_s: float

    def to_json(self) -> str:
        return json.dumps({"peak": asdict(self.peak), "input_shape": list(self.input_shape),
                           "rounds": self.rounds, "min_time_s": self.min_time_s,
                           "rows": [asdict(r) for r in self.rows]}, indent=2)

    def to_csv(self) -> str:
        out = io.StringIO()
        names = [k for k in asdict(self.rows[0]) if k != "round_medians_ms"] if self.rows else []
        writer = csv.DictWriter(out, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        for r in self.rows:
            row = asdict(r)
            row["noisy"] = "; ".join(r.noisy)
            writer.writerow(row)
        return out.getvalue()

    def table(self) -> str:
        head = (f"{'model':<16}{'backend':<13}{'batch':>6}{'median ms':>11}{'p90 ms':>9}"
                f"{'img/s':>9}{'GFLOP/s':>9}{'% peak':>8}{'build s':>9}  agreement / flags")
        lines = [head]
        for r in self.rows:
            lines.append(f"{r.model:<16.16}{r.backend:<13}{r.batch:>6}{r.median_ms:>11.2f}"
                         f"{r.p90_ms:>9.2f}{r.images_per_s:>9.1f}{r.gflops:>9.1f}"
                         f"{r.pct_of_peak:>7.0f}%{r.build_s:>9.1f}  "
                         f"{'; '.join([*_agreement(r), *r.noisy])}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Calibration:
    """Input batches for int8 calibration and the bf16/int8 agreement check, and what they
    are (`RANDOM` or a data set's name), printed beside the figures measured on them."""

    batches: list[torch.Tensor]
    name: str


def random_calibration(input_shape: tuple[int, int, int]) -> Calibration:
    """`CALIBRATION_BATCHES` seeded random-normal batches of 8."""
    c, h, w = input_shape
    x = torch.randn(CALIBRATION_BATCHES * 8, c, h, w, generator=torch.Generator().manual_seed(1))
    return Calibration(list(x.split(8)), RANDOM)


def calibration_data(data: str, input_shape: tuple[int, int, int], *,
                     data_dir: str | None = None, seed: int = 0) -> Calibration:
    """`CALIBRATION_BATCHES` x 8 real images of `data` (a name or path `load_dataset`
    accepts), an equal share per class of its training split, resized to `input_shape` and
    normalised with the set's own mean and std."""
    c, h, w = input_shape
    if h != w:
        raise ValueError(f"--calibration {data}: images are resized to a square; the input "
                         f"is {h}x{w}")
    dataset = load_dataset(data, "train", data_dir=data_dir)
    if dataset.in_chans != c:
        raise ValueError(f"--calibration {data}: {dataset.in_chans}-channel images, the input "
                         f"has {c} channels")
    count = CALIBRATION_BATCHES * 8
    if len(dataset) < count:
        raise ValueError(f"--calibration {data}: {len(dataset)} training images, at least "
                         f"{count} expected")
    subset = stratified_subset(dataset, count, seed=seed)
    x = preprocess(subset.images, dataset.mean, dataset.std, image_size=h)
    return Calibration(list(x.split(8)), dataset.name or str(data))


def bench(models: Sequence[str], backends: Sequence[str], batch_sizes: Sequence[int],
          input_shape: tuple[int, int, int], *, rounds: int = 3, min_time_s: float = 0.5,
          threads: int | None = None, peak_size: str = "full",
          calibration: Calibration | None = None,
          progress: Callable[[int, int, str], None] | None = None) -> BenchResult:
    """Measure every (model, backend, batch size); see the module docstring. `calibration`:
    what bf16 and int8 are calibrated and checked on (default: `random_calibration`)."""
    if rounds < 1:
        raise ValueError(f"rounds: expected at least 1, got {rounds}")
    batch_sizes = check_batch_sizes(batch_sizes)
    if threads is not None:
        torch.set_num_threads(threads)
    peak = measure_peak(peak_size)
    c, h, w = input_shape
    built: dict[tuple[str, str], Deployed] = {}
    macs: dict[str, float] = {}
    steps = len(models) * len(backends) + rounds * len(models) * len(backends) * len(batch_sizes)
    done = 0
    for name in models:
        model = create_model(name, in_chans=c).eval()
        macs[name] = profile(model, (1, c, h, w)).macs_per_image  # counted on a meta copy
        for backend in backends:
            built[name, backend] = build(model, backend, (c, h, w), threads=threads,
                                         calibration=calibration)
            done += 1
            if progress:
                progress(done, steps, f"built {name} {backend}")
    entries = [(m, b, n) for m in models for b in backends for n in batch_sizes]
    inputs = {n: torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(n))
              for n in batch_sizes}
    times: dict[tuple, list[list[float]]] = {e: [] for e in entries}
    loads: dict[tuple, list[float | None]] = {e: [] for e in entries}
    for r in range(rounds):
        for entry in entries:
            fn = built[entry[:2]]
            x = inputs[entry[2]]
            if r == 0:
                fn(x)  # warm-up: a compiled backend specialises on the batch size here
            with OtherLoad() as load:
                calls = time_calls(lambda fn=fn, x=x: fn(x), device="cpu", repeats=3,
                                   max_repeats=1000, min_time_s=min_time_s)
            times[entry].append(calls)
            loads[entry].append(load.fraction)
            done += 1
            if progress:
                progress(done, steps, f"round {r + 1}/{rounds} {entry[0]} {entry[1]} b{entry[2]}")
    rows = [_row(e, built[e[:2]], times[e], loads[e], macs[e[0]], peak) for e in entries]
    return BenchResult(rows, peak, (c, h, w), rounds, min_time_s)


def build(model: torch.nn.Module, backend: str, input_shape: tuple[int, int, int], *,
          threads: int | None = None, calibration: Calibration | None = None) -> Deployed:
    """`deploy` a model with random weights: checked on 2 seeded random images; bf16 and int8
    on `calibration` (default: `random_calibration`; see the module docstring), whose name
    goes into `options["calibration"]`."""
    c, h, w = input_shape
    example = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    if backend not in REDUCED:
        return deploy(model, backend, example, threads=threads)
    calibration = calibration or random_calibration(input_shape)
    built = deploy(model, backend, example, threads=threads, calibration=calibration.batches)
    built.options["calibration"] = calibration.name
    return built


def deployed_latency(models: Sequence[str], backend: str, batch_sizes: Sequence[int],
                     input_shape: tuple[int, int, int], *, repeats: int = 3,
                     max_repeats: int = 20, min_time_s: float = 0.5,
                     progress: Callable[[int, int, str], None] | None = None,
                     ) -> dict[tuple[str, int], float]:
    """ms/image of `backend` per (model, batch size): the median of at least `repeats` calls
    (more, up to `max_repeats`, until `min_time_s` are timed) after one warm-up call, as
    `cnnzoo compare` times eager, so the two columns compare like with like."""
    c, h, w = input_shape
    out: dict[tuple[str, int], float] = {}
    total, done = len(models) * len(batch_sizes), 0
    for name in models:
        built = build(create_model(name, in_chans=c).eval(), backend, input_shape)
        for n in check_batch_sizes(batch_sizes):
            x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(n))
            built(x)  # warm-up: a compiled backend specialises on the batch size here
            calls = time_calls(lambda built=built, x=x: built(x), device="cpu",
                               repeats=repeats, max_repeats=max_repeats, min_time_s=min_time_s)
            out[name, n] = statistics.median(calls) * 1e3 / n
            done += 1
            if progress:
                progress(done, total, f"{name} {backend} batch {n}")
    return out


def _agreement(r: BenchRow) -> list[str]:
    if r.top1_agreement is None:
        return []
    on = RANDOM if r.calibration == RANDOM else f"real images of {r.calibration}"
    return [f"top-1 {r.top1_agreement:.0%}, max |dlogit| {r.max_rel_diff:.1e} x max |logit| "
            f"on {on} ({r.agreement_on})"]


def _row(entry: tuple[str, str, int], built: Deployed, rounds: list[list[float]],
         loads: list[float | None], macs: float, peak: Peak) -> BenchRow:
    model, backend, batch = entry
    calls = [t for rnd in rounds for t in rnd]
    median = statistics.median(calls)
    p90 = percentile(calls, 90)
    gflops = 2.0 * macs * batch / median / 1e9
    known = [x for x in loads if x is not None]
    other = max(known) if known else None
    noisy = []
    if p90 / median > NOISY_SPREAD:
        noisy.append(f"p90/median {p90 / median:.1f}")
    if other is not None and other > NOISY_LOAD:
        noisy.append(f"other processes {other:.0%} of the CPU")
    return BenchRow(model, backend, batch, median * 1e3, p90 * 1e3,
                    [statistics.median(rnd) * 1e3 for rnd in rounds], batch / median, gflops,
                    100.0 * gflops / peak.gflops, built.build_s, built.max_abs_diff,
                    built.tolerance, other, len(calls), noisy, built.top1_agreement,
                    built.max_rel_diff, built.options.get("agreement_on"),
                    built.options.get("calibration"))


def plot_throughput(result: BenchResult, path: str) -> None:
    """Images/s by batch size, one line per model and backend, to a PNG at `path`."""
    fig, (ax,) = figure(1, width=6.5, height=4.2)
    series: dict[tuple[str, str], list[BenchRow]] = {}
    for r in result.rows:
        series.setdefault((r.model, r.backend), []).append(r)
    for (model, backend), rows in series.items():
        ax.plot([r.batch for r in rows], [r.images_per_s for r in rows], marker="o",
                label=f"{model} {backend}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title(f"throughput, {'x'.join(map(str, result.input_shape))}, "
                 f"{result.peak.threads} threads")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
