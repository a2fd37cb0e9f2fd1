"""common.power_estimate: the units that would decide an inconclusive claim."""

import math

from cnnzoo.experiments.common import power_estimate


def test_needed_grows_as_the_statistic_shrinks():
    # t = 1 with 2 seeds: the standard error must halve -> 4x the seeds.
    p = power_estimate(1.0, 2, seconds_per_unit=60)
    assert p["needed"] == 8 and math.isclose(p["seconds"], 480)
    assert power_estimate(1.9, 2, seconds_per_unit=60)["needed"] == 3
    assert "8 seeds" in p["text"]


def test_a_null_effect_cannot_be_decided():
    p = power_estimate(0.0, 3, seconds_per_unit=10)
    assert p["needed"] is None and p["seconds"] is None
    assert "any feasible number" in p["text"]
