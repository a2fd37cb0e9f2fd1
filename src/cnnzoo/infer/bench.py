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
has no data of theirs: int8 is calibrated, and both are checked, on `CALIBRATION_BATCHES`
seeded random-normal batches, and the table says "on random data" beside those figures. They
show the backend runs and how far its logits move, not its accuracy on real images (for that,
`cnnzoo eval CKPT --backend int8`).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from cnnzoo.infer.backends import Deployed, deploy
from cnnzoo.models import create_model
from cnnzoo.profile.peak import Peak, measure_peak
from cnnzoo.profile.plots import figure
from cnnzoo.profile.profiler import check_batch_sizes, profile
from cnnzoo.profile.timing import OtherLoad, percentile, time_calls

NOISY_SPREAD = 1.5  # p90 / median above this: the entry's calls varied too much
NOISY_LOAD = 0.10  # other processes' share of the CPU above this while an entry was timed
CALIBRATION_BATCHES = 4  # random-normal batches of 8 images for int8 and bf16
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


def bench(models: Sequence[str], backends: Sequence[str], batch_sizes: Sequence[int],
          input_shape: tuple[int, int, int], *, rounds: int = 3, min_time_s: float = 0.5,
          threads: int | None = None, peak_size: str = "full",
          progress: Callable[[int, int, str], None] | None = None) -> BenchResult:
    """Measure every (model, backend, batch size); see the module docstring."""
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
            built[name, backend] = build(model, backend, (c, h, w), threads=threads)
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
          threads: int | None = None) -> Deployed:
    """`deploy` a model with random weights: checked on 2 seeded random images; bf16 and int8
    on `CALIBRATION_BATCHES` seeded random-normal batches (see the module docstring)."""
    c, h, w = input_shape
    example = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    calibration = None
    if backend in REDUCED:
        calibration = list(torch.randn(CALIBRATION_BATCHES * 8, c, h, w,
                                       generator=torch.Generator().manual_seed(1)).split(8))
    return deploy(model, backend, example, threads=threads, calibration=calibration)


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
    return [f"top-1 {r.top1_agreement:.0%}, max |dlogit| {r.max_rel_diff:.1e} x max |logit| "
            f"on random data ({r.agreement_on})"]


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
                    built.max_rel_diff, built.options.get("agreement_on"))


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
