"""DeLong's test: two correlated ROC AUCs measured on the same rows, with sampling weights.

The gate's test for ROC AUC. Both models score the same test rows, so their AUCs are correlated
and the variance of the *difference* is much smaller than the two variances added: DeLong,
DeLong & Clarke-Pearson (1988) estimate it from each row's *placement values* (how many rows of
the other class it outranks). Sun & Xu (2014) showed that those are midrank differences, so one
sort per model gives the whole covariance in O(n log n) instead of O(positives x negatives).

This module adds sampling weights (the sampler's inverse inclusion probabilities) to both the
AUC and its variance; :func:`delong_paired` derives the estimator and says what it assumes.

Traps, and what the tests hold this to:

* the AUCs and their covariance must equal a brute-force count over all (positive, negative)
  pairs, weighted or not, and the AUC scikit-learn's weighted ``roc_auc_score`` (the tests hold
  both to 1e-12);
* weights are *sampling* weights, not frequency weights: repeating a row of weight 3 three
  times gives the same AUC but a variance that is too small;
* the variance needs at least two rows of positive weight in each class (it divides by
  ``m - 1``), and with few rows, or a model that separates the classes perfectly, it can come
  out 0 for a non-zero difference: that is a degenerate estimate, not certainty, and never
  gives p = 0 here (:func:`delong_paired` falls back to the largest standard error any AUC
  difference on these class sizes can have; the gate also requires
  ``acceptance.min_class_rows`` of each class before it tests at all);
* DeLong ranks *scores* on any scale (pROC's reference data uses a 1-5 grade), so it clips
  nothing itself; the gate hands it probabilities already clipped by
  :func:`ml_tasks.evaluation.metrics.clip_probabilities`, so the AUC it tests is the metrics
  table's;
* ties count one half, in the AUC and in the placements alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from ml_tasks.evaluation.metrics import tie_groups
from ml_tasks.evaluation.statistics.inputs import as_labels, as_scores, as_weights
from ml_tasks.evaluation.statistics.wald import WaldDifference, safe_z

#: A standard error at or below this is a zero variance plus rounding (AUCs lie in [0, 1], so the
#: rounding in their placements is ~1e-16; a real one needs ~1e8 rows to come near this).
ZERO_SE = 64 * float(np.finfo(float).eps)


@dataclass(frozen=True)
class DeLongResult(WaldDifference):
    """Two correlated ROC AUCs on the same rows, and the distribution of their difference.

    ``difference = auc_a - auc_b`` (positive: ``a`` ranks better); ``covariance`` is the 2 x 2
    estimated covariance matrix of ``(auc_a, auc_b)``; ``variance = c' S c`` with
    ``c = (1, -1)``; ``z = difference / se`` and ``p_value`` is two-sided. ``ci``,
    ``non_inferiority`` and ``superiority`` are the Wald interval and z-tests on it.
    ``se`` is ``sqrt(variance)``, except when ``se_bounded``: the estimated variance was 0 for a
    non-zero difference and ``se`` is the worst-case bound (see :func:`delong_paired`).
    """

    auc_a: float
    auc_b: float
    difference: float
    variance: float
    se: float
    covariance: npt.NDArray[np.float64] = field(repr=False)
    z: float
    p_value: float
    n_positive: int
    n_negative: int
    se_bounded: bool = False


def _placements(score: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_], w: npt.NDArray[np.float64],
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weighted placement values of one score: ``(V10 of each positive, V01 of each negative)``.

    One stable sort into tie groups (:func:`ml_tasks.evaluation.metrics.tie_groups`), then per group the
    weighted mass of positives and negatives. For a positive row ``i`` with score ``s``::

        V10_i = (sum_{neg j: s_j < s} v_j + 1/2 sum_{neg j: s_j = s} v_j) / V

    which is Sun & Xu's ``(T_Z - T_X) / n`` (midrank in the pooled sample minus midrank among
    the positives) with every row counted by its weight; for a negative row ``j``::

        V01_j = (sum_{pos i: s_i > s} w_i + 1/2 sum_{pos i: s_i = s} w_i) / W
    """
    order, starts, group = tie_groups(score)
    pos_sorted = positive[order]
    w_sorted = w[order]
    pos_mass = np.add.reduceat(np.where(pos_sorted, w_sorted, 0.0), starts)
    neg_mass = np.add.reduceat(np.where(pos_sorted, 0.0, w_sorted), starts)
    total_pos, total_neg = pos_mass.sum(), neg_mass.sum()
    neg_below = np.cumsum(neg_mass) - neg_mass
    pos_above = total_pos - np.cumsum(pos_mass)
    v10_group = (neg_below + 0.5 * neg_mass) / total_neg
    v01_group = (pos_above + 0.5 * pos_mass) / total_pos
    placement = np.where(pos_sorted, v10_group[group], v01_group[group])
    unsorted = np.empty_like(placement)
    unsorted[order] = placement
    return unsorted[positive], unsorted[~positive]


def delong_paired(y: npt.ArrayLike, score_a: npt.ArrayLike, score_b: npt.ArrayLike,
                  weights: npt.ArrayLike | None = None) -> DeLongResult:
    """DeLong's test for two correlated ROC AUCs measured on the same rows.

    The AUC is the Mann–Whitney statistic: the chance that a random positive outscores a random
    negative, ties counting one half. With ``m`` positives ``X_i`` and ``n`` negatives ``Y_j``
    and the kernel ``psi(x, y) = 1 if x > y, 1/2 if x == y, else 0``::

        AUC = 1/(mn) sum_i sum_j psi(X_i, Y_j)

    DeLong, DeLong & Clarke-Pearson (1988, *Biometrics* 44:837) write its variance with the
    *placement values* ``V10_i = 1/n sum_j psi(X_i, Y_j)`` (how many negatives positive ``i``
    beats) and ``V01_j = 1/m sum_i psi(X_i, Y_j)`` (how many positives beat negative ``j``)::

        S10[r, s] = 1/(m-1) sum_i (V10_i^r - AUC^r)(V10_i^s - AUC^s)   (r, s: the two models)
        S01[r, s] = 1/(n-1) sum_j (V01_j^r - AUC^r)(V01_j^s - AUC^s)
        S = S10 / m + S01 / n,   Var(AUC_a - AUC_b) = S_aa + S_bb - 2 S_ab

    Computing ``psi`` for all pairs costs O(mn); Sun & Xu (2014, *IEEE Signal Processing
    Letters* 21:1389) observed that the placement values are midrank differences, so one sort
    per model gives them in O((m + n) log(m + n)). That is what :func:`_placements` does.

    **Weights** (sampling weights ``w_i`` of positives, ``v_j`` of negatives, totals ``W`` and
    ``V``). The AUC estimates the population AUC as a weighted Mann–Whitney statistic::

        AUC_w = 1/(W V) sum_i sum_j w_i v_j psi(X_i, Y_j)

    (equal to ``sklearn.metrics.roc_auc_score(..., sample_weight=w)``), with weighted placements
    ``V10_i = 1/V sum_j v_j psi(X_i, Y_j)``, ``V01_j = 1/W sum_i w_i psi(X_i, Y_j)``, so that
    ``AUC_w = 1/W sum_i w_i V10_i = 1/V sum_j v_j V01_j``. Linearising the ratio (the delta
    method, exactly as DeLong's variance is the variance of the U-statistic's first-order
    projection) gives ``AUC_w - AUC ~ sum_i (w_i/W)(V10_i - AUC) + sum_j (v_j/V)(V01_j - AUC)``:
    a sum of one term per row. Its variance, estimated as for any Hájek (weighted-mean)
    estimator from independent rows within each label, is::

        S10_w[r, s] = m/(m-1) sum_i w_i^2 (V10_i^r - AUC^r)(V10_i^s - AUC^s) / W^2
        S01_w[r, s] = n/(n-1) sum_j v_j^2 (V01_j^r - AUC^r)(V01_j^s - AUC^s) / V^2
        S = S10_w + S01_w

    where ``m`` and ``n`` count the rows with positive weight. With unit weights ``S10_w =
    S10 / m`` and ``S01_w = S01 / n``: the unweighted DeLong exactly (same code path).

    What this assumes: positive and negative rows are each an independent sample drawn with
    replacement (or Poisson sampling with small inclusion probabilities) with the given inverse
    inclusion probabilities -- the label is a sampling stratum, as in Refit's sampler, and the
    class sizes are treated as fixed, as DeLong does. No finite-population correction (it would
    only shrink the variance) and no further stratification by segment (ignoring it is
    conservative when segments differ). Scaling all weights by a constant changes nothing.
    Weights are *not* frequency weights: a row of weight 3 is one observation standing for three
    population rows, so integer weights give the same AUC as repeating each row ``w_i`` times
    but a larger, honest variance than DeLong on the repeated rows (which would pretend to have
    seen ``sum w`` independent rows).

    **A zero variance** (up to rounding: ``se <= ZERO_SE``) with a non-zero difference (every
    positive's, and every negative's, placement differs between the models by the same amount:
    e.g. a perfect separator against a constant score, or a handful of rows) is a degenerate
    estimate, not a difference known exactly: the data cannot show how the AUCs vary, and
    z = infinity would claim p = 0 (four rows sufficed). The honest fallback is the largest
    standard error the difference can have: for ``k = min(m, n)`` rows of the smaller class,
    ``Var(AUC) <= AUC (1 - AUC) / k <= 1 / (4k)`` for any distribution (van Dantzig 1951;
    Birnbaum & Klose 1957; Bamber 1975), so ``sd(AUC_a - AUC_b) <= sd(AUC_a) + sd(AUC_b) <=
    1 / sqrt(k)``; under weights ``k`` is the smaller class's Kish effective size
    ``(sum w)^2 / sum w^2``. ``se`` is then that bound and ``se_bounded`` is True; ``variance``
    stays the estimate (0). A zero variance with a zero difference is left alone: the two models
    place every row alike (identical rankings of these rows), so the difference is 0 in any
    resample of them.

    Raises ``ValueError`` unless each label has at least two rows with positive weight.
    """
    positive = as_labels(y)
    n = len(positive)
    a = as_scores("score_a", score_a, n)
    b = as_scores("score_b", score_b, n)
    w = as_weights(weights, n)
    m_eff = int(np.count_nonzero(positive & (w > 0)))
    n_eff = int(np.count_nonzero(~positive & (w > 0)))
    if m_eff < 2 or n_eff < 2:
        raise ValueError(f"y: DeLong needs at least 2 positive and 2 negative rows with positive weight, "
                         f"got {m_eff} and {n_eff}")
    w_pos, w_neg = w[positive], w[~positive]
    total_pos, total_neg = w_pos.sum(), w_neg.sum()
    v10 = np.empty((2, len(w_pos)))
    v01 = np.empty((2, len(w_neg)))
    for k, score in enumerate((a, b)):
        v10[k], v01[k] = _placements(score, positive, w)
    auc = v10 @ w_pos / total_pos
    dev10 = (v10 - auc[:, None]) * w_pos
    dev01 = (v01 - auc[:, None]) * w_neg
    s10 = (dev10 @ dev10.T) * (m_eff / (m_eff - 1)) / total_pos**2
    s01 = (dev01 @ dev01.T) * (n_eff / (n_eff - 1)) / total_neg**2
    cov = s10 + s01
    difference = float(auc[0] - auc[1])
    variance = float(max(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1], 0.0))
    se = math.sqrt(variance)
    bounded = se <= ZERO_SE and difference != 0.0
    if bounded:
        se = 1.0 / math.sqrt(min(_kish_size(w_pos), _kish_size(w_neg)))
    z = safe_z(difference, se)
    p = float(min(1.0, 2.0 * sps.norm.sf(abs(z))))
    return DeLongResult(auc_a=float(auc[0]), auc_b=float(auc[1]), difference=difference, variance=variance,
                        se=se, covariance=cov, z=z, p_value=p, n_positive=m_eff, n_negative=n_eff,
                        se_bounded=bounded)


def _kish_size(w: npt.NDArray[np.float64]) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (the row count under equal weights)."""
    return float(w.sum() ** 2 / np.dot(w, w))



def delong_auc(y: npt.ArrayLike, score: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> tuple[float, float]:
    """One ROC AUC and its DeLong standard error: the ``(0, 0)`` entry of the paired covariance,
    so a single model's interval comes from the same arithmetic the gate's paired test uses.
    A zero variance is replaced by the distribution-free bound ``1 / (2 sqrt(k))`` (``k`` the smaller
    class's effective size), as :func:`delong_paired` does for a difference."""
    result = delong_paired(y, score, score, weights)
    se = math.sqrt(max(float(result.covariance[0, 0]), 0.0))
    if se <= ZERO_SE:
        se = 0.5 / math.sqrt(min(result.n_positive, result.n_negative))
    return result.auc_a, se
