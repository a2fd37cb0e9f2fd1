"""Power estimates for claims judged by `common.margin`, honest about its standard-error floor.

(One module for every experiment: `margin_power` when the claim's difference from its
threshold is known, `floored_power` when the caller knows only whether the floor set the
standard error, `band_power` for point-estimate rules, `no_estimate` when nothing scales.)

`common.margin` divides a difference by max(SE, 0.5 points), so |t| can never exceed
|difference| / 0.5 points. A difference under 1 point therefore stays under |t| = 2 at any
number of seeds: more seeds shrink the real standard error, not the floor. For such a claim
no seed count decides it at the measured effect, and the estimate says so rather than
extrapolating with 1 / sqrt(n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cnnzoo.experiments.common import SE_FLOOR, mean_std, power_estimate


def margin_power(diff: float, t: float, n: int, *, seconds_per_unit: float,
                 unit: str = "seeds", z: float = 2.0, floor: float = SE_FLOOR
                 ) -> dict[str, Any]:
    """`common.power_estimate` for a claim judged by t = `common.margin`, where `diff` is the
    difference margin divided (already shifted by the claim's threshold) and `n` the number
    of seeds per side. When |diff| < z x `floor` (the SE floor of the t judged) the floor
    caps |t| below z for any n: then "needed" and "seconds" are None and the text says
    why."""
    p = power_estimate(t, n, seconds_per_unit=seconds_per_unit, unit=unit, z=z)
    if abs(diff) < z * floor:
        p.update(needed=None, seconds=None, floor_capped=True, text=(
            f"|t| = {abs(t):.2f} with {n} {unit}: the difference from the threshold is "
            f"{diff:+.4g}, and the standard error is floored at {floor:g}, so "
            f"|t| <= {abs(diff) / floor:.2f} < {z:g} at any "
            f"number of {unit}: more {unit} cannot decide it at the measured effect (a larger "
            f"budget per {unit.rstrip('s')}, which could change the effect, might)"))
    else:
        p["floor_capped"] = False
    return p


def inconclusive_power(claims: dict[str, str], stats: dict[str, tuple[float, float, int]], *,
                       seconds_per_unit: float, unit: str = "seeds") -> dict[str, Any]:
    """claim -> `margin_power` for every claim in `stats` ((diff, t, n) as judged) whose
    verdict is "inconclusive"; a decided claim needs no estimate and gets none."""
    return {claim: margin_power(diff, t, n, seconds_per_unit=seconds_per_unit, unit=unit)
            for claim, (diff, t, n) in stats.items() if claims.get(claim) == "inconclusive"}


def band_power(estimate: float, band: tuple[float, float], per_unit: list[float], *,
               seconds_per_unit: float, unit: str = "seeds", what: str = "the estimate"
               ) -> dict[str, Any]:
    """The power entry for a claim judged on a point estimate against a fixed band
    (inconclusive inside `band`, decided outside), not by standard errors: more units do not
    decide it, since they narrow the estimate's noise without moving it out of the band
    unless the true value lies outside. "needed" is None; t is the distance to the nearer
    edge over the standard error of `per_unit` (the per-unit values the estimate averages,
    on the scale the band is in; None with one unit), to show how noisy the estimate is."""
    n = len(per_unit)
    edge = min(band, key=lambda e: abs(estimate - e))
    se = None
    if n > 1:
        mean = sum(per_unit) / n
        se = (sum((v - mean) ** 2 for v in per_unit) / (n - 1)) ** 0.5 / n ** 0.5
    t = (estimate - edge) / se if se else None
    noise = (f"its standard error over {n} {unit} is {se:.3g}, so it sits {abs(t):.2f} "
             f"standard errors from the nearer edge {edge:g}" if t is not None
             else f"{n} {unit} give no spread to measure its noise by")
    text = (f"{what} {estimate:.3g} lies inside the inconclusive band ({band[0]:g}, "
            f"{band[1]:g}); {noise}. The rule judges the point estimate, with no standard-error "
            f"band, so more {unit} (~{seconds_per_unit / 60:.0f} min each here) do not decide it "
            f"unless the true value lies outside the band: no number of {unit} is given")
    return {"t": t, "n": n, "unit": unit, "needed": None, "seconds": None,
            "band": list(band), "rule": "point estimate against a fixed band", "text": text}


def margin_floor_binds(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether `common.margin(a, b)` divides by its 0.5-point floor (one seed, or a Welch
    standard error under the floor): more seeds then leave |t| where it is."""
    if len(a) < 2 or len(b) < 2:
        return True
    return math.sqrt(mean_std(a)[1] ** 2 / len(a) + mean_std(b)[1] ** 2 / len(b)) < SE_FLOOR


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
