"""The efficiency experiment's timing records: per model (counts, times, achieved GMAC/s per
batch size), per batch size (the line of time on operations, its robustness, its verdict),
and how the timing was taken. (The leave-one-out r² that says whether one model makes the
line is `cnnzoo.profile.report.leave_one_out_r2`, shared with `cnnzoo compare`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelTiming:
    """One timed model; the dicts are keyed by batch size."""

    model: str
    params: int
    gmacs: float  # per image
    other_load: float | None  # other processes' CPU share during its accepted timing
    attempts: int
    ms_per_image: dict[int, float] = field(default_factory=dict)
    gmac_per_s: dict[int, float] = field(default_factory=dict)
    rate_vs_median: dict[int, float] = field(default_factory=dict)
    outlier: dict[int, bool] = field(default_factory=dict)
    fit_ratio: dict[int, float] = field(default_factory=dict)  # measured / the line's time


@dataclass(frozen=True)
class Fit:
    """One batch size's line of ms/image on GMACs/image, its robustness and verdict."""

    slope_ms_per_gmac: float
    intercept_ms: float
    r2: float
    n: int
    leave_one_out_min_r2: float  # NaN: fewer than 4 models
    leave_one_out_min_model: str | None
    median_gmac_per_s: float
    verdict: str


@dataclass(frozen=True)
class TimingAnalysis:
    """What the timing shows: per model, per batch size's fit, and how it was measured."""

    models: list[ModelTiming]
    fits: dict[int, Fit]
    env: dict[str, Any]
    other_load: float | None  # the worst model's
    wall_time_s: float
    # Rule "2se" only: batch size -> the bootstrap SE of r² and its t (efficiency.bootstrap_r2)
    bootstrap: dict[int, dict[str, Any]] = field(default_factory=dict)
