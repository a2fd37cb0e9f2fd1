"""The course's claims as runnable experiments: `cnnzoo experiment NAME` / `run(NAME, ...)`.

Each module registers one experiment (see `base.py` for the framework and the output files,
`common.py` for the shared data and training helpers). Importing this package imports the
modules, which only registers them: nothing is built or trained at import time.
"""

from __future__ import annotations

import importlib
import pkgutil

from cnnzoo.experiments.base import (
    EXPERIMENTS,
    VERDICTS,
    Context,
    Experiment,
    ExperimentResult,
    Finding,
    experiment,
    get_experiment,
    list_experiments,
    run_experiment,
)

_FRAMEWORK = {"base", "common"}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in _FRAMEWORK and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

run = run_experiment

__all__ = [
    "EXPERIMENTS",
    "VERDICTS",
    "Context",
    "Experiment",
    "ExperimentResult",
    "Finding",
    "experiment",
    "get_experiment",
    "list_experiments",
    "run",
    "run_experiment",
]
