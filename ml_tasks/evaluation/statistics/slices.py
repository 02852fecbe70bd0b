"""Simpson's pattern: better overall but worse in every slice, or the reverse.

Per-slice comparisons can all disagree with the overall one when the slices' shares differ
between what is compared (a mix shift): each slice's improvement is then the honest number, and
the overall one is not. The gate does not fail on the pattern, since it is a reason to look, not
evidence of harm, but records it as a warning the report shows. The harm checks themselves are
paired tests per slice (:mod:`ml_tasks.gating.gate`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

#: :func:`simpson_pattern`'s two verdicts.
BETTER_OVERALL_WORSE_IN_EVERY_SLICE = "better overall but worse in every slice"
WORSE_OVERALL_BETTER_IN_EVERY_SLICE = "worse overall but better in every slice"


def simpson_pattern(overall_diff: float, slice_diffs: Mapping[str, float]) -> str | None:
    """Flag a Simpson's-paradox pattern between the overall and the per-slice improvements.

    Returns :data:`BETTER_OVERALL_WORSE_IN_EVERY_SLICE` when the overall improvement is positive
    but every slice's is negative, :data:`WORSE_OVERALL_BETTER_IN_EVERY_SLICE` for the reverse,
    else None. Improvements are direction-aware (positive = challenger better). It needs at least
    two slices (one slice cannot disagree with itself as a partition) and strict signs: a slice
    with a zero improvement breaks "every". Such a pattern usually means the slices' shares
    differ between what was compared (e.g. a mix shift), so the overall number is not the one to
    trust; the report should show it rather than let the gate pass on it silently.
    """
    values = np.array(list(slice_diffs.values()), dtype=float)
    if not math.isfinite(overall_diff) or not np.all(np.isfinite(values)):
        raise ValueError(f"simpson_pattern: expected finite improvements, got {overall_diff} and {dict(slice_diffs)}")
    if len(values) < 2:
        return None
    if overall_diff > 0 and np.all(values < 0):
        return BETTER_OVERALL_WORSE_IN_EVERY_SLICE
    if overall_diff < 0 and np.all(values > 0):
        return WORSE_OVERALL_BETTER_IN_EVERY_SLICE
    return None
