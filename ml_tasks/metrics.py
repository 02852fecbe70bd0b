"""Weighted classification metrics shared by training, evaluation and the gate.

Weights are the sampler's inverse inclusion probabilities, so every metric estimates the
population value, not the (stratified) sample's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

EPS = 1e-7


def compute_metrics(y_true, p_positive, weights=None) -> dict[str, float]:
    """ROC AUC, log loss and Brier score of positive-class probabilities."""
    y = np.asarray(y_true, dtype=int)
    p = np.clip(np.asarray(p_positive, dtype=float), EPS, 1 - EPS)
    w = None if weights is None else np.asarray(weights, dtype=float)
    return {
        "roc_auc": float(roc_auc_score(y, p, sample_weight=w)),
        "pr_auc": float(average_precision_score(y, p, sample_weight=w)),
        "log_loss": float(log_loss(y, p, sample_weight=w, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p, sample_weight=w)),
        "ece": float(expected_calibration_error(y, p, w)),
    }


def expected_calibration_error(y_true, p_positive, weights=None, bins: int = 15) -> float:
    """Weighted ECE with equal-mass bins (tied probabilities share a bin); see ``ml_tasks.calibrate``."""
    from ml_tasks.calibrate import expected_calibration_error as ece

    return float(ece(np.asarray(y_true), np.asarray(p_positive, dtype=float), weights, bins=bins))


class TieGroups(NamedTuple):
    """Rows sorted by score, cut into groups of equal scores (see :func:`tie_groups`)."""

    order: np.ndarray   # stable sort order of the rows
    starts: np.ndarray  # position (in sorted order) where each group begins
    group: np.ndarray   # group index of each sorted row, 0 .. len(starts) - 1


def tie_groups(scores: np.ndarray, descending: bool = False) -> TieGroups:
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


def weighted_roc_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for one or many weight vectors at once (ties count one half).

    ``weights`` is ``(n,)`` or ``(replicates, n)``; the result is a scalar array or one AUC per
    replicate. Scores are sorted once and each replicate costs O(n), which is what makes a
    paired bootstrap over thousands of replicates cheap.
    """
    order, starts, _ = tie_groups(scores)
    y = labels[order].astype(bool)
    w = np.atleast_2d(weights)[:, order]
    pos, neg = np.where(y, w, 0.0), np.where(~y, w, 0.0)
    pos_g, neg_g = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(neg, starts, axis=1)
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    numerator = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
    auc = numerator / (pos_g.sum(axis=1) * neg_g.sum(axis=1))
    return auc[0] if np.ndim(weights) == 1 else auc


def row_losses(metric: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row contributions of a mean-type metric (log loss, Brier)."""
    p = np.clip(p, EPS, 1 - EPS)
    if metric == "log_loss":
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if metric == "brier":
        return (p - y) ** 2
    raise ValueError(f"metric {metric!r} is not a mean of per-row losses")
