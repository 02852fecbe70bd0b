"""McNemar's test and the weighted accuracy difference: two models' decisions at one threshold.

The gate's test for accuracy. Thresholded at the decision threshold, each test row is right or
wrong for each model; only the rows where exactly one model is right (the *discordant* rows) say
which model is more accurate. McNemar's test (1947) asks whether they split evenly, exactly
(binomial) for few discordant rows and with the chi-square approximation beyond, as statsmodels
computes it. Alongside it, the accuracy difference is estimated under the sampling weights, with
a standard error that gives a Wald interval and the non-inferiority z-test (Nam 1997 with equal
weights), since a margin has no count test.

Traps:

* McNemar is a test of *counts*: weighted (or rounded weighted) counts are not counts, and would
  make a coin flip look significant, so its p-values always use the rows as drawn;
* under unequal weights the count test answers another question than the population's accuracy,
  so :meth:`McNemarResult.p_value_superior` gates on the weighted z-test instead, floored at
  McNemar's exact p when there are few discordant rows;
* ``statsmodels``' ``mcnemar(table, exact=True)`` is the exact binomial by default; the
  continuity-corrected chi-square is ``exact=False, correction=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

from ml_tasks.evaluation.statistics.inputs import as_labels, as_scores, as_weights
from ml_tasks.evaluation.statistics.wald import WaldDifference

#: Below this many discordant rows McNemar's test uses the exact binomial distribution.
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class McNemarResult(WaldDifference):
    """Two classifiers' decisions at one threshold, on the same rows: McNemar's test and the
    (weighted) accuracy difference.

    ``table = [[both right, only a right], [only b right, both wrong]]`` in row counts.
    ``p_value`` is two-sided (statsmodels), ``p_value_a_better`` the exact one-sided binomial
    p-value of H0: ``a`` is not more often right than ``b`` (only-a-right ~ Binomial(discordant,
    1/2)). ``weighted_table``, ``accuracy_a``, ``accuracy_b``, ``difference = accuracy_a -
    accuracy_b`` and its ``se`` are the population estimates under the sampling weights (unit
    weights when none are given); ``ci``, ``non_inferiority`` and ``superiority`` are Wald
    intervals and z-tests on that difference, and :meth:`p_value_superior` is the one-sided
    superiority p-value to gate on. See :func:`mcnemar_at_threshold`.
    """

    threshold: float
    table: npt.NDArray[np.int64]
    discordant: int
    exact: bool
    statistic: float
    p_value: float
    p_value_a_better: float
    weighted_table: npt.NDArray[np.float64]
    accuracy_a: float
    accuracy_b: float
    difference: float
    se: float
    #: Whether every row had the same weight (then the counts and the estimates agree).
    equal_weights: bool

    def p_value_superior(self, alpha: float = 0.05) -> float:
        """One-sided p of H0 "a is not more accurate than b", for the difference this reports.

        Equal weights: McNemar's exact count test (:attr:`p_value_a_better`). Unequal weights:
        counts answer another question (which model is right more often on the *sample's* rows;
        a model right more often on down-weighted rows would pass while worse in the population),
        so the weighted z-test decides; with fewer than :data:`MCNEMAR_EXACT_BELOW` discordant
        rows its normal approximation is far too kind (3 of 3 gives p = 0.04), and McNemar's exact
        p is its floor.
        """
        if self.equal_weights:
            return self.p_value_a_better
        p = self.superiority(alpha).p_value
        return max(p, self.p_value_a_better) if self.discordant < MCNEMAR_EXACT_BELOW else p


def mcnemar_at_threshold(y: npt.ArrayLike, p_a: npt.ArrayLike, p_b: npt.ArrayLike, threshold: float = 0.5,
                        weights: npt.ArrayLike | None = None) -> McNemarResult:
    """McNemar's test on the decisions ``p >= threshold`` of two models for the same rows.

    Only the *discordant* rows carry information: ``n10`` where only ``a`` is right and ``n01``
    where only ``b`` is. Under H0 (equal accuracy) each discordant row is equally likely to be
    either kind, so ``n10 ~ Binomial(n10 + n01, 1/2)``. With fewer than
    :data:`MCNEMAR_EXACT_BELOW` (25) discordant rows the test uses that binomial exactly;
    otherwise the chi-square statistic with Edwards' continuity correction,
    ``(|n10 - n01| - 1)^2 / (n10 + n01)`` on 1 degree of freedom, which is then accurate and is
    what statsmodels' ``mcnemar(table, exact=False, correction=True)`` computes.

    **Weights.** McNemar is a test of *counts*: its null distribution is a binomial in the
    number of discordant rows. Weighted counts (or weighted counts rounded) are not counts: a
    weight of 50 would turn 10 discordant rows into "500" and make a coin-flip look
    significant, and a weight below 1/2 would round rows away. So the McNemar p-values always
    use the unweighted counts of the test rows -- a valid test that the two models are equally
    often right *on rows drawn as the sample draws them*.

    The estimates are the *population's*, like every other metric: with ``d_i = +1`` (only a
    right), ``-1`` (only b right) or 0, sampling weights ``w_i`` and ``W = sum_i w_i``::

        difference = sum_i w_i d_i / W,     se^2 = sum_i w_i^2 (d_i - difference)^2 / W^2

    the weighted (Hájek) mean and its linearised variance from independent rows. With unit
    weights that ``se`` is exactly the paired-proportions variance of Nam (1997),
    ``(n10 + n01) / n^2 - difference^2 / n``; with sampling weights it is larger than treating a
    row of weight 3 as three rows would make it (weights are not frequency weights, as in
    :func:`~ml_tasks.evaluation.statistics.delong.delong_paired`). A non-inferiority margin has
    no count test, so it is tested with this z: :meth:`non_inferiority`.
    """
    positive = as_labels(y)
    n = len(positive)
    a = as_scores("p_a", p_a, n)
    b = as_scores("p_b", p_b, n)
    w = as_weights(weights, n)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("weights: expected a positive total weight")
    right_a = (a >= threshold) == positive
    right_b = (b >= threshold) == positive
    cells = [right_a & right_b, right_a & ~right_b, ~right_a & right_b, ~right_a & ~right_b]
    table = np.array([[np.count_nonzero(cells[0]), np.count_nonzero(cells[1])],
                      [np.count_nonzero(cells[2]), np.count_nonzero(cells[3])]])
    counts = _count_test(table)
    weighted_table = np.array([[w[cells[0]].sum(), w[cells[1]].sum()], [w[cells[2]].sum(), w[cells[3]].sum()]])
    d = cells[1].astype(float) - cells[2].astype(float)
    difference = float(np.dot(w, d)) / total
    se = math.sqrt(float(np.sum((w * (d - difference)) ** 2))) / total
    return McNemarResult(threshold=float(threshold), table=table, discordant=counts.discordant, exact=counts.exact,
                         statistic=counts.statistic, p_value=counts.p_value, p_value_a_better=counts.p_value_a_better,
                         weighted_table=weighted_table, accuracy_a=float(np.dot(w, right_a)) / total,
                         accuracy_b=float(np.dot(w, right_b)) / total, difference=difference, se=se,
                         equal_weights=bool(np.ptp(w) <= 1e-12 * float(np.max(w))))


class _CountTest(NamedTuple):
    discordant: int
    exact: bool
    statistic: float
    p_value: float
    p_value_a_better: float


def _count_test(table: npt.NDArray[np.int64]) -> _CountTest:
    """McNemar's p-values from the row counts: two-sided (statsmodels) and the exact one-sided binomial."""
    n10, n01 = int(table[0, 1]), int(table[1, 0])
    discordant = n10 + n01
    exact = discordant < MCNEMAR_EXACT_BELOW
    if discordant == 0:
        return _CountTest(discordant, exact, 0.0, 1.0, 1.0)
    res = mcnemar(table, exact=exact, correction=True)
    p_one = float(sps.binomtest(n10, discordant, 0.5, alternative="greater").pvalue)
    return _CountTest(discordant, exact, float(res.statistic), float(res.pvalue), p_one)


def accuracy_test(y: npt.ArrayLike, p_a: npt.ArrayLike, p_b: npt.ArrayLike, threshold: float, margin: float,
                  alpha: float, weights: npt.ArrayLike | None = None, min_improvement: float = 0.0,
                  ) -> tuple[float, float, float, float, float, float, str]:
    """Paired accuracy at ``threshold``: (acc_a, acc_b, difference, ci_low, ci_high, one-sided p, test).

    The gate's accuracy comparison, from :func:`mcnemar_at_threshold`. The accuracies, their difference and its interval
    (two-sided ``1 - 2 alpha``) are weighted by ``weights``, like every other metric of the gate,
    so they estimate the population's accuracy. With no margin and no minimum improvement the
    p-value is :meth:`~ml_tasks.evaluation.statistics.mcnemar.McNemarResult.p_value_superior`:
    McNemar's exact count test under equal weights, else the weighted z-test (floored at
    McNemar's exact p for few discordant rows). A margin or a minimum improvement has no count
    test: ``(d + margin) / se`` or ``(d - min_improvement) / se`` on the weighted difference ``d``
    with its design-based standard error (Nam's 1997 paired z-test when the weights are equal).
    """
    if margin and min_improvement:
        raise ValueError("accuracy_test: a margin (non-inferiority) or a min_improvement (superiority), not both")
    result = mcnemar_at_threshold(y, p_a, p_b, threshold, weights)
    only_a, only_b = int(result.table[0, 1]), int(result.table[1, 0])
    low, high = result.ci(2 * alpha)
    if margin == 0.0 and min_improvement == 0.0:
        p_value = result.p_value_superior(alpha)
        test = (f"McNemar (exact one-sided binomial; {only_a} vs {only_b} discordant rows)" if result.equal_weights
                else f"weighted z on the accuracy difference ({only_a} vs {only_b} discordant rows; unequal weights)")
    else:
        tested = result.non_inferiority(margin, alpha) if margin else result.superiority(alpha, min_improvement)
        p_value = tested.p_value
        test = f"paired z on discordant pairs ({only_a} vs {only_b} rows, weighted)"
    return result.accuracy_a, result.accuracy_b, result.difference, low, high, p_value, test
