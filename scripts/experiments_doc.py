"""Assemble docs/experiments.md from the experiment runs under docs/experiments/NAME/.

Each run directory holds results.json, finding.md and its plots, as written by
`cnnzoo experiment NAME --preset quick --out docs/experiments/NAME`. This script only
collects them: every figure in the page comes from those files.

    .venv/bin/python scripts/experiments_doc.py            # writes docs/experiments.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from cnnzoo.experiments import get_experiment, list_experiments
from cnnzoo.experiments.base import finding_markdown
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

`cnnzoo experiment NAME [--preset tiny|quick|full] [--data ...] [--out DIR] [--seed S]
[--set key=value]` (or `cnnzoo.experiments.run(NAME, ...)`) trains and measures real networks
and computes its verdict from the numbers it measured, with the thresholds its summary states.
Each run writes `results.json` (numbers, parameters, environment, wall time), `finding.md` and
PNG plots. `cnnzoo experiment --list` names them; `--show-params` prints a preset's settings.

Presets: `tiny` checks the plumbing in seconds (the tests run it on synthetic data); `quick`
finishes in under 10 minutes on 2 CPU cores on Fashion-MNIST; `full` follows the paper's
settings as far as a CPU allows (its run time is estimated in each module's docstring). The
verdicts below are those of the quick presets, measured on this project's machine; the quick
scale is small (subsets, few epochs, narrow nets), and where the effect is within the noise
the finding says so. Validation numbers drive curves; the test split is read once per final
model.

Regenerate this page: run each experiment with `--preset quick --out docs/experiments/NAME`,
then `.venv/bin/python scripts/experiments_doc.py`.
"""


# /proc/cpuinfo names this VM's CPU only "AMD EPYC"; its family/model numbers say more.
MACHINE = "family 25, model 17: Zen 4 with AVX-512; 2 vCPUs, 24 GiB RAM, no GPU"


def _precisions(found: set[str]) -> str:
    """'fp32', or the precisions found when some run asked for bf16 (its command says so)."""
    if found <= {"fp32"}:
        return "fp32"
    return " and ".join(sorted(found)) + " (each run's command says which)"


def _short(paper: str) -> str:
    """'He et al. 2015, Deep Residual ...' -> 'He et al. 2015' (authors and year)."""
    match = re.match(r"^(.*?\b(19|20)\d\d)\b", paper)
    return match.group(1) if match else paper.split(",")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="docs/experiments", help="run directories")
    parser.add_argument("--out", default="docs/experiments.md")
    args = parser.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    rows, sections, missing, precisions = [], [], [], set()
    names = list_experiments()
    for name in [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]:
        path = root / name / "results.json"
        if not path.exists():
            missing.append(name)
            continue
        r = json.loads(path.read_text())
        exp = get_experiment(name)
        env = r["environment"]
        precisions.add(env.get("precision", "fp32"))  # runs before --precision were all fp32
        rows.append(f"| [`{name}`](#{name}) | {_short(exp.paper)} | **{r['verdict']}** | "
                    f"{r['wall_s']:.0f} s | {FULL_ESTIMATE.get(name, '-')} |")
        body = finding_markdown(r, heading="##")
        # Plots live beside results.json; the page sits one level up.
        for plot in r.get("plots", []):
            body = body.replace(f"]({plot})", f"]({root.relative_to(out.parent)}/{name}/{plot})")
        sections.append(f'<a id="{name}"></a>\n\n' + body)
    cpu = env["cpu"] if rows else "-"
    table = ["| experiment | paper | verdict (quick) | quick: wall | full: estimated |",
             "|---|---|---|---:|---:|", *rows]
    machine = (f"All runs: {cpu} ({MACHINE}), torch {env['torch'] if rows else '-'}, "
               f"{_precisions(precisions)}, "
               "one process with 2 torch threads; the runs held a lock so that no two experiments "
               "overlapped, but lighter jobs (tests, editing) sometimes shared the CPU, so a few "
               "wall times are pessimistic.")
    text = "\n".join([INTRO, machine, "",
                      *table, ""])
    if missing:
        text += "\nNot yet run here: " + ", ".join(f"`{m}`" for m in missing) + ".\n"
    text += "\n" + "\n".join(sections)
    atomic_write_text(out, text)
    print(f"wrote {out}: {len(rows)} experiments, {len(missing)} missing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
