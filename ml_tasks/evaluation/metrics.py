"""Weighted classification metrics shared by training, evaluation and the gate.

Weights are the sampler's inverse inclusion probabilities, so every metric estimates the
population value, not the (stratified) sample's.

One clipping rule for every metric and every test: a probability enters them through
:func:`clip_probabilities` (``[EPS, 1 - EPS]``), so a saturated score (exactly 0 or 1, or a
difference beyond 1e-7 that only the clip would flatten) gives one AUC for one model, whether the
metrics table, the paired bootstrap or DeLong's test computes it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

# numpy only: a trainer process imports this module before it reads its inputs, and importing
# scikit-learn's metrics package takes most of a second (bench/bench_cold_start.py). Each metric
# equals scikit-learn's on the same clipped probabilities (tests/evaluation/test_metrics.py).

EPS = 1e-7


def clip_probabilities(p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Probabilities as floats clipped to ``[EPS, 1 - EPS]``: the one rule every metric and test applies.

    Log loss needs it (``log 0``); the others must then see the same numbers, or a model whose
    scores saturate would have one ROC AUC in the metrics table and another in the gate's test
    (clipping merges scores that differ only beyond 1e-7 of 0 or 1 into one tie).
    """
    clipped: npt.NDArray[np.float64] = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return clipped


def compute_metrics(y_true: npt.ArrayLike, p_positive: npt.ArrayLike,
                    weights: npt.ArrayLike | None = None) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), log loss, Brier score and ECE of positive-class probabilities.

    ROC AUC is NaN when ``y_true`` holds one class only (as scikit-learn's); PR AUC is 0 without positives.
    """
    y, p, w = _checked_inputs(y_true, p_positive, weights)
    with np.errstate(invalid="ignore", divide="ignore"):  # one class: 0 / 0, the undefined AUC
        roc_auc = float(weighted_roc_auc(p, y, w))
    return {
        "roc_auc": roc_auc,
        "pr_auc": weighted_average_precision(p, y, w),
        "log_loss": weighted_mean_loss("log_loss", y, p, w),
        "brier": weighted_mean_loss("brier", y, p, w),
        "ece": expected_calibration_error(y, p, w),
    }


def _checked_inputs(y_true: npt.ArrayLike, p_positive: npt.ArrayLike, weights: npt.ArrayLike | None,
                    ) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Labels (0/1), clipped probabilities and weights of one metric call, checked as scikit-learn checks them."""
    y = np.asarray(y_true, dtype=int).reshape(-1)
    p = np.asarray(p_positive, dtype=float).reshape(-1)
    if len(y) == 0 or len(y) != len(p):
        raise ValueError(f"y_true: expected as many labels as probabilities (at least one), got {len(y)} and {len(p)}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"y_true: expected binary labels 0 and 1, got {sorted(np.unique(y).tolist())[:5]}")
    if np.isnan(p).any():
        raise ValueError("p_positive: probabilities contain NaN")
    return y, clip_probabilities(p), checked_weights("weights", weights, len(y))


def weighted_average_precision(scores: npt.NDArray[np.float64], labels: npt.NDArray[np.generic],
                               weights: npt.NDArray[np.float64]) -> float:
    """Weighted average precision, ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds, highest first.

    Not interpolated: scikit-learn's ``average_precision_score``. Rows of tied scores share one
    threshold; without positive weight the result is 0.
    """
    order, starts, _ = tie_groups(scores, descending=True)
    w = weights[order]
    group_pos = np.add.reduceat(np.where(labels[order].astype(bool), w, 0.0), starts)
    true_pos, seen = np.cumsum(group_pos), np.cumsum(np.add.reduceat(w, starts))
    if true_pos[-1] <= 0.0:
        return 0.0
    # Groups of zero weight at the top have nothing seen yet (0 / 0); their recall step is 0 too.
    precision = np.divide(true_pos, seen, out=np.zeros_like(true_pos), where=seen > 0)
    return float(np.dot(group_pos / true_pos[-1], precision))


def weighted_mean_loss(metric: str, y: npt.NDArray[np.generic], p: npt.NDArray[np.float64],
                       weights: npt.NDArray[np.float64]) -> float:
    """Log loss or Brier score: the weighted mean of :func:`row_losses`."""
    return float(np.average(row_losses(metric, np.asarray(y, dtype=float), p), weights=weights))


class TieGroups(NamedTuple):
    """Rows sorted by score, cut into groups of equal scores (see :func:`tie_groups`)."""

    order: npt.NDArray[np.intp]   # stable sort order of the rows
    starts: npt.NDArray[np.intp]  # position (in sorted order) where each group begins
    group: npt.NDArray[np.intp]   # group index of each sorted row, 0 .. len(starts) - 1


def tie_groups(scores: npt.NDArray[np.float64], descending: bool = False) -> TieGroups:
    """Sort ``scores`` (stably) and group equal values: every rank-based metric needs both.

    Tied scores must be handled as one group (they count one half in an AUC and share one
    threshold in a precision-recall curve), so the sort and the grouping always come together.
    """
    order = np.argsort(-scores if descending else scores, kind="stable")
    s = scores[order]
    new_group = np.empty(len(s), dtype=bool)
    new_group[:1] = True
    np.not_equal(s[1:], s[:-1], out=new_group[1:])
    return TieGroups(order, np.flatnonzero(new_group), np.cumsum(new_group) - 1)


def weighted_roc_auc(scores: npt.NDArray[np.float64], labels: npt.NDArray[np.generic], weights: npt.NDArray[np.float64],
                     ) -> np.float64 | npt.NDArray[np.float64]:
    """ROC AUC for one or many weight vectors at once (ties count one half).

    ``weights`` is ``(n,)`` or ``(replicates, n)``; the result is one AUC (a numpy scalar) or one
    AUC per replicate. Scores are sorted once and each replicate costs O(n), which is what makes a
    paired bootstrap over thousands of replicates cheap.
    """
    order, starts, _ = tie_groups(scores)
    y = labels[order].astype(bool)
    w = np.atleast_2d(weights)[:, order]
    pos, neg = np.where(y, w, 0.0), np.where(~y, w, 0.0)
    pos_g, neg_g = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(neg, starts, axis=1)
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    numerator = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
    auc: npt.NDArray[np.float64] = numerator / (pos_g.sum(axis=1) * neg_g.sum(axis=1))
    if np.ndim(weights) == 1:
        one: np.float64 = auc[0]
        return one
    return auc


def row_losses(metric: str, y: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per-row contributions of a mean-type metric (log loss, Brier)."""
    p = clip_probabilities(p)
    losses: npt.NDArray[np.float64]
    if metric == "log_loss":
        losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        return losses
    if metric == "brier":
        losses = (p - y) ** 2
        return losses
    raise ValueError(f"metric {metric!r} is not a mean of per-row losses")


# ---------------------------------------------------------------------------------------------
# Calibration: equal-mass reliability bins and the errors read off them
# ---------------------------------------------------------------------------------------------

class ReliabilityTable(NamedTuple):
    """Per non-empty equal-mass bin: weighted mean probability, observed rate, and share of mass."""

    mean_p: npt.NDArray[np.float64]
    mean_y: npt.NDArray[np.float64]
    mass: npt.NDArray[np.float64]

    @property
    def gaps(self) -> npt.NDArray[np.float64]:
        return np.abs(self.mean_y - self.mean_p)


def equal_mass_bins(p: npt.ArrayLike, w: npt.ArrayLike | None = None, bins: int = 15) -> npt.NDArray[np.intp]:
    """The bin (``0 .. bins - 1``) of each row, bins holding about equal weighted mass.

    Rows with equal probability always share a bin, so the bins depend on the values and weights
    only, not on row order. Each group of equal values goes to the bin holding the middle of its
    mass: with ``n`` distinct equally weighted values and ``n`` bins every value gets its own bin;
    a tie heavier than one bin's share fills one bin and may leave a neighbour empty. Integer
    weights therefore give the same bins as repeating rows.
    """
    if bins < 1:
        raise ValueError(f"bins: expected at least 1, got {bins}")
    probabilities = np.asarray(p, dtype=float).reshape(-1)
    weights = checked_weights("w", w, len(probabilities))
    values, group = np.unique(probabilities, return_inverse=True)
    group_mass = np.bincount(group, weights=weights, minlength=len(values))
    middle = (np.cumsum(group_mass) - group_mass / 2.0) / group_mass.sum()
    group_bin = np.minimum(np.floor(middle * bins).astype(int), bins - 1)
    bin_of: npt.NDArray[np.intp] = group_bin[group]
    return bin_of


def reliability_table(y: npt.ArrayLike, p: npt.ArrayLike, w: npt.ArrayLike | None = None,
                      bins: int = 15) -> ReliabilityTable:
    """Observed positive rate against mean predicted probability in equal-mass bins."""
    labels = np.asarray(y, dtype=float).reshape(-1)
    probabilities = np.asarray(p, dtype=float).reshape(-1)
    if len(labels) != len(probabilities):
        raise ValueError(f"y: {len(labels)} labels for {len(probabilities)} probabilities")
    weights = checked_weights("w", w, len(probabilities))
    bin_of = equal_mass_bins(probabilities, weights, bins)
    mass = np.bincount(bin_of, weights=weights, minlength=bins)
    occupied = mass > 0
    mean_p = np.bincount(bin_of, weights=weights * probabilities, minlength=bins)[occupied] / mass[occupied]
    mean_y = np.bincount(bin_of, weights=weights * labels, minlength=bins)[occupied] / mass[occupied]
    return ReliabilityTable(mean_p=mean_p, mean_y=mean_y, mass=mass[occupied] / mass.sum())


def expected_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, w: npt.ArrayLike | None = None,
                               bins: int = 15) -> float:
    """Weighted ECE: sum over equal-mass bins of (bin mass share) x |observed rate - mean p|.

    Equal-mass bins keep every bin populated however skewed the probabilities are; equal-width
    bins (Guo et al.'s tables) put almost all rows of a rare-event model in the first bin. The
    two kinds give different numbers: compare ECEs only under the same binning.
    """
    table = reliability_table(y, p, w, bins)
    return float(np.dot(table.mass, table.gaps))


def max_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, w: npt.ArrayLike | None = None,
                          bins: int = 15) -> float:
    """Largest |observed rate - mean p| over the same equal-mass bins as the ECE."""
    return float(reliability_table(y, p, w, bins).gaps.max())


def calibration_metrics(y: npt.ArrayLike, p: npt.ArrayLike, w: npt.ArrayLike | None = None,
                        bins: int = 15) -> dict[str, float]:
    """ECE, MCE, Brier score and log loss (weighted), all on :func:`clip_probabilities`' values."""
    labels = np.asarray(y, dtype=int).reshape(-1)
    probabilities = clip_probabilities(p).reshape(-1)
    weights = checked_weights("w", w, len(probabilities))
    table = reliability_table(labels, probabilities, weights, bins)
    return {
        "ece": float(np.dot(table.mass, table.gaps)),
        "mce": float(table.gaps.max()),
        "brier": weighted_mean_loss("brier", labels, probabilities, weights),
        "log_loss": weighted_mean_loss("log_loss", labels, probabilities, weights),
    }


def checked_weights(name: str, w: npt.ArrayLike | None, n: int) -> npt.NDArray[np.float64]:
    """Weights as a float array (ones when None): finite, non-negative, with a positive total."""
    if w is None:
        return np.ones(n)
    weights = np.asarray(w, dtype=float).reshape(-1)
    if len(weights) != n:
        raise ValueError(f"{name}: {len(weights)} weights for {n} rows")
    if not np.all(np.isfinite(weights)) or weights.min() < 0.0 or weights.sum() <= 0.0:
        raise ValueError(f"{name}: expected finite non-negative weights with a positive sum")
    return weights
