"""Who defaults: the log-odds of default per application, and the draw of the labels.

* **Signal, not a giveaway.** Default depends on credit score, debt-to-income
  ``(existing_debt + amount) / income``, term, purpose, channel, age, employment and the latent
  per-customer risk ``z``. A logistic regression on the raw columns reaches a ROC AUC of about
  0.80 (0.77-0.85 depending on the period), far from 0.99.
* **Concept drift.** Debt-to-income, irrelevant at the start, becomes the strongest driver of
  default by the end, while the credit score loses some of its bite and partner-sourced loans
  turn from safe to risky (the drifting pairs of :mod:`~ml_tasks.data.demo_warehouse.effects`).
* **A set base rate.** The intercept is solved so that the expected default rate is exactly
  ``positive_rate``; the realised rate differs only by sampling noise.
"""

from __future__ import annotations

import numpy as np

from ml_tasks.data.demo_warehouse.clock import Clock
from ml_tasks.data.demo_warehouse.effects import (
    CHANNEL_LOGIT,
    DTI_SLOPE,
    PARTNER,
    PARTNER_LOGIT,
    PURPOSE_LOGIT,
    SCORE_SLOPE,
    TERM_LOGIT,
    TREND,
)


def ramp(ends: tuple[float, float], progress: np.ndarray) -> np.ndarray:
    """Linear interpolation from ``ends[0]`` (progress 0) to ``ends[1]`` (progress 1)."""
    return ends[0] + (ends[1] - ends[0]) * progress


def default_logits(
    apps: dict[str, np.ndarray],
    customers: dict[str, np.ndarray],
    owner: np.ndarray,
    applied_s: np.ndarray,
    clock: Clock,
) -> np.ndarray:
    """Log-odds of default, up to the intercept.

    Fixed effects: term, purpose, channel, a U-shaped age effect, employment and the latent
    customer risk ``z`` (which the credit score only partly reveals). Effects that drift with
    the application's position in the span: debt-to-income, credit score, the partner channel
    and a gentle downward trend, see the ``*_SLOPE``, ``PARTNER_LOGIT`` and ``TREND``
    constants.
    """
    income = customers["income"][owner]
    age = customers["age"][owner]
    log_dti = np.log((apps["existing_debt"] + apps["amount"]) / income)
    # Centred, so that a growing slope reorders risk rather than inflating the base rate.
    log_dti -= np.median(log_dti)
    progress = applied_s / clock.span_s
    is_partner = apps["channel"] == PARTNER

    return (
        ramp(SCORE_SLOPE, progress) * (apps["credit_score"] - 690.0)
        + ramp(DTI_SLOPE, progress) * log_dti
        + np.where(is_partner, ramp(PARTNER_LOGIT, progress), 0.0)
        + ramp(TREND, progress)
        + TERM_LOGIT[apps["term"]]
        + PURPOSE_LOGIT[apps["purpose"]]
        + CHANNEL_LOGIT[apps["channel"]]
        + 0.25 * ((age - 45) / 12.0) ** 2
        - 0.15 * (age - 45) / 12.0
        - 0.03 * np.minimum(customers["employment_years"][owner], 15.0)
        + 0.7 * customers["z"][owner]
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form never overflows


def _solve_intercept(logits: np.ndarray, rate: float, tolerance: float = 1e-9) -> float:
    """Intercept ``b`` with ``mean(sigmoid(logits + b)) == rate``, by bisection.

    The mean is increasing in ``b``, so halving a bracket that surely contains the answer
    converges (about 37 passes over the logits for ``tolerance=1e-9``) and, unlike
    ``logit(rate)``, honours the actual skew of the generated risk.
    """
    low, high = -40.0, 40.0
    while high - low > tolerance:
        mid = 0.5 * (low + high)
        if _sigmoid(logits + mid).mean() < rate:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def draw_defaults(rng: np.random.Generator, logits: np.ndarray, positive_rate: float) -> np.ndarray:
    """One 0/1 label per application, with expected mean ``positive_rate``."""
    intercept = _solve_intercept(logits, positive_rate)
    return (rng.random(len(logits)) < _sigmoid(logits + intercept)).astype(np.int64)
