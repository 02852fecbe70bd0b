"""The checks every paired test makes of its inputs, and the messages a caller then sees.

Each function turns what a caller passes (a list, a pandas column, an array of any dtype) into one
flat array of a known dtype, or raises ``ValueError`` naming the argument at fault, e.g.
``y: expected binary labels 0/1, got values [0, 2]`` or ``score_b: 5 scores for 6 labels``. The
messages are part of the interface: the gate's failures and the tests quote them.

Sampling weights may total zero here. What "too little weight" means depends on the test (DeLong
needs two rows of each class, McNemar a positive total, the bootstrap both classes), so each test
checks that itself and says it in its own words. :func:`ml_tasks.evaluation.metrics.checked_weights`
is stricter because a metric over no weight has no value at all.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def as_labels(y: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Binary labels as booleans (True: positive). Boolean input passes unchanged; other values must be 0 or 1."""
    labels = np.asarray(y).reshape(-1)
    if labels.dtype == bool:
        return labels
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"y: expected binary labels 0/1, got values {np.unique(labels)[:5].tolist()}")
    positive: npt.NDArray[np.bool_] = labels == 1
    return positive


def as_scores(name: str, s: npt.ArrayLike, n: int) -> npt.NDArray[np.float64]:
    """One finite float score per label; ``name`` is the argument the message names."""
    scores = np.asarray(s, dtype=float).reshape(-1)
    if len(scores) != n:
        raise ValueError(f"{name}: {len(scores)} scores for {n} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name}: expected finite scores, found NaN or infinity")
    return scores


def as_weights(weights: npt.ArrayLike | None, n: int) -> npt.NDArray[np.float64]:
    """Sampling weights as floats, one per row (ones when None): finite and non-negative."""
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=float).reshape(-1)
    if len(w) != n:
        raise ValueError(f"weights: {len(w)} weights for {n} rows")
    if not np.all(np.isfinite(w)) or (n and w.min() < 0.0):
        raise ValueError("weights: expected finite, non-negative sampling weights")
    return w


def check_alpha(alpha: float) -> None:
    """A test's level must lie strictly between 0 and 1."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")


def class_counts(y: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> tuple[int, int]:
    """(positive rows, negative rows) with positive weight: what a paired test can use of each class."""
    positive = as_labels(y)
    w = as_weights(weights, len(positive))
    return int(np.count_nonzero(positive & (w > 0))), int(np.count_nonzero(~positive & (w > 0)))
