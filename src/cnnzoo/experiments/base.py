"""The experiment framework: a registry of claims, and the run that turns one into files.

An experiment is a module whose entry point `run(ctx: Context) -> Finding` is registered
with `@experiment`, with named presets (`tiny` for the plumbing test, `quick` for < 10 minutes
on 2 CPU cores, `standard` for <= 30 minutes at a scale chosen to decide every claim (issue 15),
`full` for the paper's settings as far as a CPU allows). `run_experiment`
resolves the preset and the user's overrides, seeds everything, calls `run` and writes,
atomically, into the output directory:

    results.json   the measured numbers (`Finding.measured`), the verdict, the parameters,
                   the data, the seed, the environment (CPU, threads, torch) and the run time
    finding.md     what was measured, the verdict and how it compares with the paper
    *.png          the plots the experiment saved through `ctx.save_plot`

The verdict is whatever the experiment computed from its numbers; the framework only checks
that it is one of `VERDICTS`.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo._version import __version__
from cnnzoo.fileio import atomic_write, atomic_write_text, cpu_name
from cnnzoo.profile.peak import cpu_flags
from cnnzoo.train.device import resolve

# "supported": the numbers show the claimed effect; "not supported": they contradict it;
# "inconclusive": the effect is within the noise at this scale (say so, do not force it);
# "mixed": some parts hold and some do not (the summary says which).
VERDICTS = ("supported", "not supported", "inconclusive", "mixed")
DEFAULT_DATA = "fashion-mnist"
# Training precisions an experiment may run in; fp32 by default, whatever the device.
PRECISIONS = ("fp32", "bf16")


def combine_verdicts(verdicts: Iterable[str]) -> str:
    """The one rule for several verdicts (claims, or one claim's cases) taken together.

    All alike give that verdict (all supported: supported; all not supported: not supported;
    all inconclusive: inconclusive); any two that differ give "mixed", also when one of them is
    "inconclusive" (a claim that could not be shown does not hold here either); none at all
    gives "inconclusive" (nothing was measured).
    """
    found = list(verdicts)
    if not found:
        return "inconclusive"
    return found[0] if len(set(found)) == 1 else "mixed"


# The preset of each experiment that carries the issue-15 rule "a threshold cleared by two
# standard errors" where its `standard` preset judged some claims on a point estimate. The old
# `standard` stays, with its rules and its committed results; this name carries the change.
STANDARD_2SE = "standard-2se"
# The values of an experiment's `rule` parameter: the point estimates of its older presets, or
# the 2-SE rule `standard-2se` carries. `resolve_params` checks them, once for every experiment.
RULES = ("point", "2se")


def standard_preset(exp: Experiment) -> str:
    """The preset `make experiments-standard` runs: `standard-2se` where it exists, else
    `standard`."""
    return STANDARD_2SE if STANDARD_2SE in exp.presets else "standard"


def cleared(estimate: float, threshold: float, se: float, *, above: bool = True,
            z: float = 2.0) -> tuple[str, float]:
    """The issue-15 rule for one quantity: is `estimate` beyond `threshold` (above it when
    `above`, else below) by at least `z` standard errors? -> (verdict, t), t = the signed
    distance past the threshold in the claimed direction over `se`.

    "supported" at t >= z, "not supported" at t <= -z (clearly on the wrong side),
    "inconclusive" between. An SE of 0 (one seed, nothing to resample) or NaN decides nothing
    unless the estimate sits exactly on a side with no noise at all: it is "inconclusive".
    """
    d = (estimate - threshold) if above else (threshold - estimate)
    if not (math.isfinite(se) and se > 0 and math.isfinite(d)):
        return "inconclusive", math.nan
    t = d / se
    if t >= z:
        return "supported", t
    if t <= -z:
        return "not supported", t
    return "inconclusive", t


def every_case(verdicts: Iterable[str]) -> str:
    """A claim that should hold in every case (family, depth, block) it is measured in:
    "supported" when every case is, "not supported" when any case is decided against it (one
    clear counterexample refutes a claim about every case), else "inconclusive" (then each
    undecided case carries its power estimate). Never "mixed"; no cases: "inconclusive"."""
    found = list(verdicts)
    if found and all(v == "supported" for v in found):
        return "supported"
    if "not supported" in found:
        return "not supported"
    return "inconclusive"


@dataclass
class Finding:
    """What an experiment concluded, from its own numbers.

    Attributes:
        verdict: one of VERDICTS, computed from `measured`.
        summary: one paragraph: what was measured and why the verdict follows.
        measured: the numbers behind the verdict (JSON-serialisable), saved in results.json.
        paper: how the measurement compares with the paper's figure.
        details: further lines for finding.md (one bullet each).
        claims: per-claim verdicts when an experiment tests several claims, e.g.
            {"1x1 reductions cut cost": "supported", "aux heads help accuracy": "inconclusive"}.
    """

    verdict: str
    summary: str
    measured: dict[str, Any]
    paper: str = ""
    details: list[str] = field(default_factory=list)
    claims: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, verdict in {"verdict": self.verdict, **self.claims}.items():
            if verdict not in VERDICTS:
                raise ValueError(f"Finding {name}: verdict must be one of {', '.join(VERDICTS)}, "
                                 f"got {verdict!r}")


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its claim, its presets and the function that tests it."""

    name: str
    title: str
    paper: str
    claim: str
    presets: dict[str, dict[str, Any]]
    fn: Callable[[Context], Finding]


EXPERIMENTS: dict[str, Experiment] = {}
ALIASES: dict[str, str] = {}  # an old name -> the registered name (looked up, never listed)


def experiment(name: str, *, title: str, paper: str, claim: str,
               presets: dict[str, dict[str, Any]], aliases: tuple[str, ...] = ()) -> Callable:
    """Register `fn(ctx) -> Finding` as the experiment `name` (also found by `aliases`).

    Every preset must define the same keys (the overridable parameters), and `tiny`, `quick`,
    `standard` and `full` must exist.
    """
    missing = {"tiny", "quick", "standard", "full"} - set(presets)
    if missing:
        raise ValueError(f"experiment {name!r}: presets {sorted(missing)} are missing")
    keys = {p: set(v) for p, v in presets.items()}
    if len({frozenset(k) for k in keys.values()}) != 1:
        raise ValueError(f"experiment {name!r}: presets must define the same parameters, got "
                         f"{ {p: sorted(k) for p, k in keys.items()} }")

    def register(fn: Callable[[Context], Finding]) -> Callable[[Context], Finding]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = Experiment(name, title, paper, claim, presets, fn)
        ALIASES.update(dict.fromkeys(aliases, name))
        return fn

    return register


@dataclass
class Context:
    """What an experiment function receives.

    Attributes:
        name: the experiment's name.
        preset: the preset's name ("tiny", "quick", "standard", "full").
        params: the preset's parameters with the user's overrides applied.
        seed: seed of every run in the experiment (vary it per run as seed + i if needed).
        data: data set name or path (default fashion-mnist).
        data_dir: where to look for a named data set.
        out: the output directory (created at the first file written).
        quiet: no progress lines.
        precision: "fp32" or "bf16" (autocast, on CPUs only with native bf16): how
            `common.fit` trains; recorded in results.json's environment.
        plots: file names saved so far (for results.json and finding.md).
    """

    name: str
    preset: str
    params: dict[str, Any]
    seed: int
    data: str
    data_dir: str | None
    out: Path
    quiet: bool = False
    precision: str = "fp32"
    plots: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def log(self, message: str) -> None:
        """A progress line on stderr, prefixed with the experiment and the elapsed time."""
        if not self.quiet:
            elapsed = time.perf_counter() - self.started
            print(f"[{self.name} {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def save_plot(self, fig: Any, filename: str, *, dpi: int = 110) -> Path:
        """Write a matplotlib figure as PNG (atomically) and close it."""
        if not filename.endswith(".png"):
            raise ValueError(f"save_plot: expected a .png file name, got {filename!r}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        pyplot().close(fig)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / filename
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        if filename not in self.plots:
            self.plots.append(filename)
        return path


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, for the experiments' plots.

    Imported here, lazily, on purpose: matplotlib takes about a second to import, and
    registering or listing the experiments (every CLI start) must not pay for it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class ExperimentResult:
    """What `run` returns: the finding, where the files are and how long it took."""

    name: str
    preset: str
    finding: Finding
    out: Path
    wall_s: float
    results: dict[str, Any]


def get_experiment(name: str) -> Experiment:
    """The registered experiment `name` (or the one that `name` is an old alias of)."""
    name = ALIASES.get(name, name)
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of "
                         f"{', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


def list_experiments() -> list[str]:
    """Names of the registered experiments, sorted (the registry is full: importing this
    module imports its package first, and the package's __init__ imports every experiment)."""
    return sorted(EXPERIMENTS)


def resolve_params(exp: Experiment, preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's parameters with `overrides` applied; unknown names and types are errors."""
    if preset not in exp.presets:
        raise ValueError(f"experiment {exp.name!r}: unknown preset {preset!r}; expected one of "
                         f"{', '.join(exp.presets)}")
    params = dict(exp.presets[preset])
    for key, value in overrides.items():
        if key not in params:
            raise ValueError(f"experiment {exp.name!r}: unknown parameter {key!r}; expected one "
                             f"of {', '.join(sorted(params))}")
        params[key] = _coerce(key, value, params[key])
    if "rule" in params and params["rule"] not in RULES:
        raise ValueError(f"experiment {exp.name!r}: parameter rule: expected one of "
                         f"{', '.join(RULES)}, got {params['rule']!r}")
    return params


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert a CLI string (or any value) to the type of the preset's default."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(f"parameter {key}: expected a value like {json.dumps(default)} (JSON), "
                         f"got {value!r}") from None
    if isinstance(default, bool) != isinstance(parsed, bool) or (
            isinstance(default, (int, float)) and not isinstance(parsed, (int, float))) or (
            isinstance(default, list) and not isinstance(parsed, list)):
        raise ValueError(f"parameter {key}: expected a value like {json.dumps(default)}, "
                         f"got {value!r}")
    if isinstance(default, float) and isinstance(parsed, int):
        parsed = float(parsed)
    return parsed


def environment(precision: str = "fp32") -> dict[str, Any]:
    """Where and how the numbers were measured: CPU, threads, training precision, versions."""
    return {
        "cpu": cpu_name(),
        # The name alone can be vague ("AMD EPYC"): family/model and the vector units say
        # which CPU (and which fast paths) a run had.
        "cpu_id": _cpu_id(),
        "cpu_flags": list(cpu_flags()),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "precision": precision,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cnnzoo": __version__,
    }


def _cpu_id() -> str:
    """'family F model M' from /proc/cpuinfo ('' where it is missing)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if len(fields) == 2:
                    break
    except OSError:
        pass
    return f"family {fields['cpu family']} model {fields['model']}" if len(fields) == 2 else ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_experiment(name: str, preset: str = "quick", *, data: str | None = None,
                   data_dir: str | None = None, out: str | os.PathLike | None = None,
                   seed: int = 0, quiet: bool = False, precision: str = "fp32",
                   **overrides: Any) -> ExperimentResult:
    """Run one experiment and write results.json, finding.md and its plots into `out`.

    Args:
        name: a registered experiment (see `list_experiments()`).
        preset: "tiny" (plumbing test), "quick" (< 10 min on 2 CPU cores), "standard" (<= 30 min,
            powered to decide every claim) or "full".
        data: data set name or path; default fashion-mnist.
        data_dir: folder holding the named data set.
        out: output directory; default experiments/NAME-PRESET under the working directory.
        seed: seed of the runs.
        quiet: no progress lines on stderr.
        precision: "fp32" (the default: the same numbers on every CPU) or "bf16" autocast
            for the training runs, accepted where the device runs bf16 natively (on a CPU:
            AMX or AVX512-BF16; faster with AMX only, see docs/train_speed.md).
        **overrides: preset parameters to change, e.g. epochs=3.
    """
    exp = get_experiment(name)
    name = exp.name  # an old alias runs, and is recorded, under the registered name
    params = resolve_params(exp, preset, overrides)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    resolve("auto", precision)  # refuse bf16 where it would be emulated, before any work
    out_dir = Path(out) if out is not None else Path("experiments") / f"{name}-{preset}"
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a directory")
    ctx = Context(name, preset, params, seed, data or DEFAULT_DATA, data_dir, out_dir, quiet,
                  precision)
    seed_everything(seed)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ctx.log(f"preset {preset}, precision {precision}: {json.dumps(params)}")
    finding = exp.fn(ctx)
    if not isinstance(finding, Finding):
        raise TypeError(f"experiment {name!r} returned {type(finding).__name__}, not a Finding")
    wall_s = time.perf_counter() - ctx.started
    results = {
        "experiment": name, "title": exp.title, "paper": exp.paper, "claim": exp.claim,
        "preset": preset, "params": params, "seed": seed, "data": ctx.data,
        "verdict": finding.verdict, "claims": finding.claims, "summary": finding.summary,
        "measured": finding.measured, "paper_comparison": finding.paper,
        "details": finding.details, "plots": ctx.plots,
        "environment": environment(precision), "started_at": started_at, "wall_s": round(wall_s, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves no empty folder
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, default=_json) + "\n")
    atomic_write_text(out_dir / "finding.md", finding_markdown(results))
    ctx.log(f"verdict: {finding.verdict} ({wall_s:.0f} s) -> {out_dir}")
    return ExperimentResult(name, preset, finding, out_dir, wall_s, results)


def _json(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"results.json: cannot store {type(value).__name__}")


def finding_markdown(r: dict[str, Any], *, heading: str = "#") -> str:
    """finding.md from a results dict (also used to assemble docs/experiments.md)."""
    env = r["environment"]
    lines = [
        f"{heading} {r['title']} (`{r['experiment']}`, preset {r['preset']})", "",
        f"**Paper:** {r['paper']}  ", f"**Claim:** {r['claim']}", "",
        f"**Verdict: {r['verdict']}.** {r['summary']}", "",
    ]
    if r.get("claims"):
        lines += [f"- {claim}: **{verdict}**" for claim, verdict in r["claims"].items()] + [""]
    if r.get("details"):
        lines += [f"- {d}" for d in r["details"]] + [""]
    if r.get("paper_comparison"):
        lines += [f"**Compared with the paper:** {r['paper_comparison']}", ""]
    lines += [f"![{p}]({p})" for p in r.get("plots", [])]
    if r.get("plots"):
        lines.append("")
    threads = env["torch_threads"]
    # Runs written before the option existed, and every fp32 run, have no flag to repeat.
    bf16 = " --precision bf16" if env.get("precision", "fp32") != "fp32" else ""
    lines += [
        f"Run: `cnnzoo experiment {r['experiment']} --preset {r['preset']} --seed {r['seed']}"
        f"{bf16}` "
        f"on {r['data']}; {r['wall_s']:.0f} s wall on {env['cpu']} ({threads} torch threads), "
        f"torch {env['torch']}; parameters: `{json.dumps(r['params'])}`.", "",
    ]
    return "\n".join(lines)
