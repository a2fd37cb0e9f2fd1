"""A power estimate that says when the 0.5-point standard-error floor decides the statistic.

`common.margin` (and the experiments that copy its rule) divide a difference by at least 0.5
points. Where that floor, not the seeds' spread, sets the standard error, more seeds do not
shrink it, so `common.power_estimate`'s 1 / sqrt(n) scaling would promise a decision that
more seeds cannot deliver: then "needed" is None and the text says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cnnzoo.experiments.common import mean_std, power_estimate

FLOOR = 0.005  # common.margin's standard-error floor for accuracies as fractions (0.5 points)


def margin_floor_binds(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether `common.margin(a, b)` divides by its 0.5-point floor (one seed, or a Welch
    standard error under the floor): more seeds then leave |t| where it is."""
    if len(a) < 2 or len(b) < 2:
        return True
    return math.sqrt(mean_std(a)[1] ** 2 / len(a) + mean_std(b)[1] ** 2 / len(b)) < FLOOR


def floored_power(t: float, n: int, *, seconds_per_unit: float, unit: str = "seeds",
                  z: float = 2.0, floor_binds: bool = False, floor_note: str = ""
                  ) -> dict[str, Any]:
    """`common.power_estimate(t, n, ...)`, or, when `floor_binds`, the same dict with
    "needed" and "seconds" None and a text naming the floor (`floor_note` adds the detail)."""
    p = power_estimate(t, n, seconds_per_unit=seconds_per_unit, unit=unit, z=z)
    p["floor_binds"] = floor_binds
    if floor_binds:
        p["needed"] = p["seconds"] = None
        p["text"] = (f"|t| = {abs(t):.2f} with {n} {unit}, but the standard error is the "
                     f"0.5-point floor, not the spread over {unit}"
                     + (f" ({floor_note})" if floor_note else "")
                     + f": more {unit} cannot raise |t|; only a larger effect would decide it")
    return p


def no_estimate(reason: str, n: int, unit: str = "seeds") -> dict[str, Any]:
    """A power entry for a case with no statistic to scale (e.g. too few points)."""
    return {"t": None, "n": n, "unit": unit, "needed": None, "seconds": None,
            "text": f"no power estimate: {reason}"}
