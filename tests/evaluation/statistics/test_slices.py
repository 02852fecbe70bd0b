"""Simpson's pattern across slices (ml_tasks.evaluation.statistics.slices)."""

from __future__ import annotations

import pytest

from ml_tasks.evaluation.statistics.slices import (
    BETTER_OVERALL_WORSE_IN_EVERY_SLICE,
    WORSE_OVERALL_BETTER_IN_EVERY_SLICE,
    simpson_pattern,
)


def test_simpson_pattern_needs_every_slice_strictly_against_the_overall_sign():
    assert simpson_pattern(0.01, {"young": -0.002, "old": -0.004}) == BETTER_OVERALL_WORSE_IN_EVERY_SLICE
    assert simpson_pattern(-0.01, {"a": 0.002, "b": 0.1, "c": 0.3}) == WORSE_OVERALL_BETTER_IN_EVERY_SLICE
    assert simpson_pattern(0.01, {"young": -0.002, "old": 0.004}) is None
    assert simpson_pattern(0.01, {"young": -0.002, "old": 0.0}) is None       # a zero breaks "every"
    assert simpson_pattern(0.01, {"only": -0.002}) is None                     # one slice is no pattern
    assert simpson_pattern(0.0, {"a": -0.002, "b": -0.1}) is None
    with pytest.raises(ValueError):
        simpson_pattern(float("nan"), {"a": 1.0, "b": 2.0})
