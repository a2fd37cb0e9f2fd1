"""Assemble docs/experiments.md from the experiment runs under docs/experiments/NAME/.

Each run directory holds results.json, finding.md and its plots, as written by
`cnnzoo experiment NAME --preset quick --out docs/experiments/NAME` (the quick run) and
`cnnzoo experiment NAME --preset standard --out docs/experiments/NAME/standard` (the standard
run, issue 15), and where an experiment has it, `--preset standard-2se --out
docs/experiments/NAME/standard-2se` (the same scale judged by "a threshold cleared by 2 standard
errors" where `standard` judged point estimates; the standard run stays beside it). This script
only collects them: every figure in the page comes from those files. The table shows the presets
side by side; each experiment's section shows the standard-2se finding where it exists, then the
standard one, then the quick one.

    .venv/bin/python scripts/experiments_doc.py            # writes docs/experiments.md
    .venv/bin/python scripts/experiments_doc.py --readme README.md   # and README's table
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from cnnzoo.experiments import get_experiment, list_experiments
from cnnzoo.experiments.base import STANDARD_2SE, finding_markdown
from cnnzoo.fileio import atomic_write_text

# The issues' order: ResNet's claims first, then the later architectures, then the backbones.
ORDER = ["degradation", "gradient-flow", "lesion", "paths", "inception", "dense-vs-residual",
         "squeeze-excitation", "compound-scaling", "deformable", "efficiency",
         "effective-receptive-field"]

# The full presets were not run here; these are the estimates their modules' docstrings give
# (from the quick runs' per-image costs, 2 CPU cores).
FULL_ESTIMATE = {"degradation": "20-30 h", "gradient-flow": "~3 h", "lesion": "~12 h",
                 "paths": "~6 h", "inception": "~40 h", "dense-vs-residual": "~60 h",
                 "squeeze-excitation": "~4 h", "compound-scaling": "~6 h", "deformable": "~40 min",
                 "efficiency": "~1 h", "effective-receptive-field": "~40 min"}

INTRO = """# Experiments: the course's claims, measured

`cnnzoo experiment NAME [--preset tiny|quick|standard|standard-2se|full] [--data ...] [--out
DIR] [--seed S] [--set key=value]` (or `cnnzoo.experiments.run(NAME, ...)`) trains and measures
real networks and computes its verdict from the numbers it measured, with the thresholds its
summary states. Each run writes `results.json` (numbers, parameters, environment, wall time),
`finding.md` and PNG plots. `cnnzoo experiment --list` names them; `--show-params` prints a
preset's settings.

Presets: `tiny` checks the plumbing in seconds (the tests run it on synthetic data); `quick`
finishes in under 10 minutes on 2 CPU cores on Fashion-MNIST, a small scale (subsets, few
epochs, narrow nets) where several effects are within the noise; `standard` takes at most 30
minutes on 2 CPU cores, at a scale chosen for each claim (depth where the effect lives, epochs
to convergence on a subset, seeds where the effect is small), and its rule was committed
before its first run (issue 15); `full` follows the paper's settings as far as a CPU allows
(its run time is estimated in each module's docstring). A claim the standard run leaves
"inconclusive" carries a power estimate: how many seeds (or other units) would decide it at
the measured effect, and what that would cost. Validation numbers drive curves; the test
split is read once per final model.

`standard-2se` exists for the experiments whose `standard` rules judged some claims on a point
estimate against a band. Issue 15 asks that every claim clear its threshold by 2 standard errors
(over seeds or resamples), and a rule may not change under a preset name once its numbers are
seen; so the new rules carry a new name, were committed before their run, and the `standard`
results stay on this page under them.

Regenerate this page: `make experiments` (quick) and `make experiments-standard` (standard-2se
where an experiment has it, else standard) run them and rebuild it; or, after single runs,
`.venv/bin/python scripts/experiments_doc.py`.
"""


def _short(paper: str) -> str:
    """'He et al. 2015, Deep Residual ...' -> 'He et al. 2015' (authors and year)."""
    match = re.match(r"^(.*?\b(19|20)\d\d)\b", paper)
    return match.group(1) if match else paper.split(",")[0]


def _run(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _cell(r: dict | None) -> tuple[str, str]:
    """(verdict, wall) cells of one preset's run, or dashes when it was not run."""
    return (f"**{r['verdict']}**", f"{r['wall_s'] / 60:.1f} min") if r else ("-", "-")


def _section(r: dict, root: Path, out: Path, name: str, sub: str, heading: str) -> str:
    body = finding_markdown(r, heading=heading)
    # Plots live beside results.json; the page sits one level up.
    where = f"{root.relative_to(out.parent)}/{name}" + (f"/{sub}" if sub else "")
    for plot in r.get("plots", []):
        body = body.replace(f"]({plot})", f"]({where}/{plot})")
    return body


# Runs made before results.json recorded the CPU's family/model (the quick runs): what
# /proc/cpuinfo said on that machine, noted by hand then (it named the CPU only "AMD EPYC").
KNOWN_CPU_ID = {"AMD EPYC": "family 25 model 17, Zen 4: avx512f avx512_bf16 avx512_vnni"}


def _machines(runs: list[dict]) -> str:
    """One line per distinct machine the runs here came from (CPU, threads, torch)."""
    seen: dict[str, list[str]] = {}
    for r in runs:
        env = r["environment"]
        ident = (", ".join(x for x in (env.get("cpu_id"), " ".join(env.get("cpu_flags", []))) if x)
                 or KNOWN_CPU_ID.get(env["cpu"], ""))
        key = (f"{env['cpu']}" + (f" ({ident})" if ident else "")
               + f", {env['torch_threads']} torch threads, torch {env['torch']}, "
               f"{env.get('precision', 'fp32')}")
        seen.setdefault(key, [])
        if r["preset"] not in seen[key]:
            seen[key].append(r["preset"])
    return "\n".join(f"- {' and '.join(p)} runs: {k}" for k, p in seen.items())


README_BEGIN, README_END = "<!-- experiments-table -->", "<!-- /experiments-table -->"


def _runs(root: Path, name: str) -> tuple[dict | None, dict | None, dict | None]:
    """The quick, standard and standard-2se runs of `name` (None where not run)."""
    return (_run(root / name / "results.json"), _run(root / name / "standard" / "results.json"),
            _run(root / name / STANDARD_2SE / "results.json"))


def readme_table(root: Path, names: list[str]) -> str:
    """README's table: each experiment's quick, standard and standard-2se verdicts, the
    per-claim verdicts of the latest of them that was run, and the wall times."""
    rows = ["| experiment | quick | standard | standard-2se | per claim (the latest preset run) "
            "| wall: quick / standard / standard-2se |", "|---|---|---|---|---|---:|"]
    for name in names:
        quick, standard, two_se = _runs(root, name)
        shown = two_se or standard or quick
        if shown is None:
            continue
        claims = "; ".join(f"{c}: {v}" for c, v in shown.get("claims", {}).items())
        (qv, qw), (sv, sw), (tv, tw) = _cell(quick), _cell(standard), _cell(two_se)
        rows.append(f"| [`{name}`](docs/experiments.md#{name}) | {qv} | {sv} | {tv} | {claims} "
                    f"| {qw} / {sw} / {tw} |")
    return "\n".join(rows)


def update_readme(path: Path, table: str) -> None:
    """Replace the text between README_BEGIN and README_END in `path` with `table`."""
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{path}: expected the markers {README_BEGIN} and {README_END} around "
                         "the experiments table")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(path, f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="docs/experiments", help="run directories")
    parser.add_argument("--out", default="docs/experiments.md")
    parser.add_argument("--readme", help="also rewrite this README's experiments table")
    args = parser.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    rows, sections, missing, runs = [], [], [], []
    names = list_experiments()
    for name in [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]:
        quick, standard, two_se = _runs(root, name)
        if quick is None and standard is None and two_se is None:
            missing.append(name)
            continue
        runs += [r for r in (quick, standard, two_se) if r]
        exp = get_experiment(name)
        (qv, qw), (sv, sw), (tv, tw) = _cell(quick), _cell(standard), _cell(two_se)
        rows.append(f"| [`{name}`](#{name}) | {_short(exp.paper)} | {qv} | {sv} | {tv} | {qw} | "
                    f"{sw} | {tw} | {FULL_ESTIMATE.get(name, '-')} |")
        parts = [f'<a id="{name}"></a>', ""]
        first = True  # the latest preset's finding is the section's head; the older ones follow
        for r, sub in ((two_se, STANDARD_2SE), (standard, "standard"), (quick, "")):
            if r:
                parts.append(_section(r, root, out, name, sub, "##" if first else "###"))
                first = False
        sections.append("\n".join(parts))
    table = ["| experiment | paper | quick | standard | standard-2se | quick: wall | standard: "
             "wall | standard-2se: wall | full: estimated |",
             "|---|---|---|---|---|---:|---:|---:|---:|", *rows]
    machine = ("Where they ran (each finding names its CPU; the CPU of this project's machine "
               "changes between sessions, so compare times only within one preset):\n"
               + _machines(runs) + "\n\nOne process per run; the runs held a lock so that no "
               "two experiments overlapped, but lighter jobs (tests, editing) sometimes shared "
               "the CPU, so a few wall times are pessimistic.")
    text = "\n".join([INTRO, machine, "", *table, ""])
    if missing:
        text += "\nNot yet run here: " + ", ".join(f"`{m}`" for m in missing) + ".\n"
    text += "\n" + "\n\n".join(sections)
    atomic_write_text(out, text)
    print(f"wrote {out}: {len(rows)} experiments, {len(missing)} missing")
    if args.readme:
        order = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
        update_readme(Path(args.readme), readme_table(root, order))
        print(f"updated the experiments table in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
