"""Weighted classification metrics shared by training, evaluation and the gate.

Weights are the sampler's inverse inclusion probabilities, so every metric estimates the
population value, not the (stratified) sample's.
"""

from __future__ import annotations

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


def weighted_roc_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for one or many weight vectors at once (ties count one half).

    ``weights`` is ``(n,)`` or ``(replicates, n)``; the result is a scalar array or one AUC per
    replicate. Scores are sorted once and each replicate costs O(n), which is what makes a
    paired bootstrap over thousands of replicates cheap.
    """
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order].astype(bool)
    w = np.atleast_2d(weights)[:, order]
    pos, neg = np.where(y, w, 0.0), np.where(~y, w, 0.0)
    # Group equal scores so ties contribute half a comparison.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
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
