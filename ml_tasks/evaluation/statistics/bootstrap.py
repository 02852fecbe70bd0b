"""The paired Poisson bootstrap: any metric's improvement, its interval and one-sided tests.

The gate's test for log loss, Brier score, PR AUC and ECE (and a cross-check of DeLong for ROC
AUC). Each replicate re-weights every test row by an independent Poisson(1) count, the *same*
counts for both models, so the noise that comes from which rows were drawn cancels in the
difference: that pairing is what makes a small improvement detectable. :func:`paired_bootstrap`
documents the resampling, the metrics, the speed and the tests; :func:`paired_bootstrap_many`
runs several metrics on one set of replicates, which is what the gate calls.

Where the work is: :mod:`~ml_tasks.evaluation.statistics.poisson_counts` draws the counts (64
replicates per random stream, so a seed means the same replicates whatever else is asked) and
:mod:`~ml_tasks.evaluation.statistics.bootstrap_plan` turns a block of counts into every
metric of both models without materialising ``replicates x n`` weights. Fast enough for 1M rows
x 1,000 replicates in seconds (``bench/bench_gate.py``).

Traps:

* the p-values come from the bootstrap distribution *shifted to the null*, with the ``+1`` that
  keeps a finite bootstrap from claiming p = 0;
* probabilities are clipped by :func:`ml_tasks.evaluation.metrics.clip_probabilities` first, as
  in :func:`ml_tasks.evaluation.metrics.compute_metrics`, so the observed values equal the evaluation's;
* ECE's bins are the full sample's, kept for every replicate, and ECE is biased upwards by
  noise: read its test as a guide;
* a replicate that draws no positive row has no AUC: such replicates are dropped (and counted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from ml_tasks.core.columns import HIGHER_IS_BETTER
from ml_tasks.evaluation.metrics import clip_probabilities
from ml_tasks.evaluation.statistics.bootstrap_plan import BootstrapPlan, PairedValues
from ml_tasks.evaluation.statistics.inputs import as_labels, as_scores, as_weights, check_alpha
from ml_tasks.evaluation.statistics.poisson_counts import CHUNK, chunk_counts

#: Metrics :func:`paired_bootstrap` can resample.
BOOTSTRAP_METRICS = ("log_loss", "brier", "pr_auc", "ece", "roc_auc")


@dataclass(frozen=True)
class BootstrapResult:
    """A paired Poisson bootstrap of one metric: observed values, the improvement and its tests.

    ``difference = value_a - value_b``; ``improvement`` is the difference signed so that
    positive means ``a`` is better (``-difference`` for losses). ``ci_low, ci_high`` is the
    two-sided ``1 - alpha`` percentile interval of the improvement; ``se`` the standard deviation
    of its replicates. ``p_superiority`` tests H0: improvement <= 0 and ``p_non_inferiority``
    H0: improvement <= -margin, both one-sided from the bootstrap distribution shifted to the
    null (see :func:`paired_bootstrap`). ``replicates_a`` / ``replicates_b`` hold the metric in
    each replicate; ``replicates`` counts those with a finite value (all, unless a replicate drew
    no positive row).
    """

    metric: str
    value_a: float
    value_b: float
    difference: float
    improvement: float
    ci_low: float
    ci_high: float
    se: float
    p_superiority: float
    p_non_inferiority: float
    margin: float
    alpha: float
    replicates: int
    seed: int
    replicates_a: npt.NDArray[np.float64] = field(repr=False)
    replicates_b: npt.NDArray[np.float64] = field(repr=False)

    @property
    def sign(self) -> float:
        return 1.0 if HIGHER_IS_BETTER[self.metric] else -1.0

    @property
    def improvements(self) -> npt.NDArray[np.float64]:
        """The improvement in each replicate (non-finite replicates dropped)."""
        d = self.sign * (self.replicates_a - self.replicates_b)
        return d[np.isfinite(d)]

    def p_value(self, margin: float = 0.0) -> float:
        """One-sided p of H0: improvement <= -margin from these replicates (0: ``p_superiority``).

        Any margin can be tested on the same replicates, so one bootstrap serves several
        comparisons of one metric.
        """
        return _shifted_null_p(self.improvements, self.improvement, -margin)

    def p_superior(self, min_improvement: float = 0.0) -> float:
        """One-sided p of H0: improvement <= ``min_improvement`` (the smallest gain worth having).

        The same shifted-null test as :meth:`p_value` with the bar above 0 instead of below it;
        ``p_superior(0.0) == p_value(0.0) == p_superiority``.
        """
        if min_improvement < 0:
            raise ValueError(f"min_improvement: expected a non-negative gain, got {min_improvement}")
        return _shifted_null_p(self.improvements, self.improvement, min_improvement)

    @property
    def superior(self) -> bool:
        return self.p_superiority <= self.alpha

    @property
    def non_inferior(self) -> bool:
        return self.p_non_inferiority <= self.alpha


class _Rows(NamedTuple):
    """The checked inputs: labels, both models' clipped probabilities, and the weights."""

    positive: npt.NDArray[np.bool_]
    a: npt.NDArray[np.float64]
    b: npt.NDArray[np.float64]
    w: npt.NDArray[np.float64]


def _prepare(y: npt.ArrayLike, p_a: npt.ArrayLike, p_b: npt.ArrayLike, weights: npt.ArrayLike | None) -> _Rows:
    """Checked inputs, probabilities clipped; both classes must carry weight, or no metric compares."""
    positive = as_labels(y)
    n = len(positive)
    a = clip_probabilities(as_scores("p_a", p_a, n))
    b = clip_probabilities(as_scores("p_b", p_b, n))
    w = as_weights(weights, n)
    if not (np.any(positive & (w > 0)) and np.any(~positive & (w > 0))):
        raise ValueError("y: expected positive and negative rows with positive weight; a paired comparison "
                         "on one class only is meaningless")
    return _Rows(positive, a, b, w)


def _margins(metrics: Sequence[str], alpha: float, replicates: int,
             margin: float | Mapping[str, float]) -> dict[str, float]:
    """Check what :func:`paired_bootstrap_many` is asked for; the margin of each metric."""
    unknown = [m for m in metrics if m not in BOOTSTRAP_METRICS]
    if unknown or not metrics:
        raise ValueError(f"metric: expected one or more of {list(BOOTSTRAP_METRICS)}, got {list(metrics)}")
    check_alpha(alpha)
    if replicates < 1:
        raise ValueError(f"replicates: expected at least 1, got {replicates}")
    margins = {m: float(margin[m] if isinstance(margin, Mapping) else margin) for m in metrics}
    if any(v < 0 for v in margins.values()):
        raise ValueError(f"margin: expected a non-negative allowed loss, got {margins}")
    return margins


def _replicate_values(plan: BootstrapPlan, n: int, replicates: int, seed: int) -> PairedValues:
    """Every metric of both models in each of ``replicates`` replicates, chunk by chunk."""
    reps = {m: (np.empty(replicates), np.empty(replicates)) for m in plan.metrics}
    buffer = np.empty((n, CHUNK), dtype=np.uint8)
    for chunk in range(-(-replicates // CHUNK)):
        lo, hi = chunk * CHUNK, min((chunk + 1) * CHUNK, replicates)
        counts = chunk_counts(n, seed, chunk, out=buffer)
        if hi - lo < CHUNK:
            counts = np.ascontiguousarray(counts[:, : hi - lo])
        for metric, (va, vb) in plan.values(counts).items():
            reps[metric][0][lo:hi] = va
            reps[metric][1][lo:hi] = vb
    return reps


def paired_bootstrap_many(metrics: Sequence[str], y: npt.ArrayLike, p_a: npt.ArrayLike, p_b: npt.ArrayLike,
                          weights: npt.ArrayLike | None = None, replicates: int = 1000, seed: int = 0,
                          alpha: float = 0.05, margin: float | Mapping[str, float] = 0.0,
                          bins: int = 15) -> dict[str, BootstrapResult]:
    """:func:`paired_bootstrap` of several metrics on the *same* replicates (cheaper than one by one).

    ``margin`` is one value for all metrics or one per metric (in each metric's own units); other
    margins can be tested afterwards with :meth:`BootstrapResult.p_value`. For a given seed each
    metric's result is that of a call of :func:`paired_bootstrap` on the same counts: equal up
    to rounding in the last bits (log loss and Brier share one matrix product whose summation
    order depends on how many columns it has), and deterministic for a given list of metrics.
    """
    margins = _margins(metrics, alpha, replicates, margin)
    positive, a, b, w = _prepare(y, p_a, p_b, weights)
    n = len(positive)
    # Thousands of small matrix products: a multi-threaded BLAS only adds hand-offs to them (100x
    # slower on a busy 2-core machine), so they run on one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        plan = BootstrapPlan(metrics, positive, a, b, w, bins)
        observed = plan.values(np.ones((n, 1), dtype=np.uint8))
        reps = _replicate_values(plan, n, replicates, seed)
    results = {}
    for metric in plan.metrics:
        va, vb = observed[metric]
        results[metric] = _summarise(metric, float(va[0]), float(vb[0]), reps[metric][0], reps[metric][1],
                                     margins[metric], alpha, seed)
    return results


def paired_bootstrap(metric: str, y: npt.ArrayLike, p_a: npt.ArrayLike, p_b: npt.ArrayLike,
                     weights: npt.ArrayLike | None = None, replicates: int = 1000, seed: int = 0,
                     alpha: float = 0.05, margin: float = 0.0, bins: int = 15) -> BootstrapResult:
    """Paired Poisson bootstrap of ``metric(a) - metric(b)`` on the same rows.

    **Resampling.** Each replicate gives every row a count ``c ~ Poisson(1)``, independently,
    and the row's weight becomes ``weights * c`` -- the Poisson bootstrap (Hanley & MacGibbon
    2006; Chamandy et al. 2012), which for large n is the ordinary bootstrap (a multinomial
    resample has Binomial(n, 1/n) ~ Poisson(1) copies of each row) but needs no index arrays
    and treats rows independently. The *same* counts weight both models' rows: that is the
    pairing. Metrics, all weighted by ``weights * c`` and on probabilities clipped to
    ``[EPS, 1 - EPS]``:

    ``log_loss``, ``brier``
        weighted means of per-row losses (:func:`ml_tasks.evaluation.metrics.row_losses`);
    ``pr_auc``
        weighted average precision, ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds,
        as ``sklearn.metrics.average_precision_score(..., sample_weight=...)``;
    ``roc_auc``
        the weighted Mann–Whitney AUC (ties count one half);
    ``ece``
        the expected calibration error over equal-mass bins as in
        :func:`ml_tasks.evaluation.metrics.expected_calibration_error` (15 bins). The bins are fixed by
        the full sample's weighted quantiles and kept for every replicate (re-cutting them per
        replicate would add the bins' own jitter to the difference). ECE is biased upwards by
        noise in each bin, by more for a model with sharper bins; read its test as a guide.

    **Speed.** Counts are drawn 64 replicates at a time (4 counts per 16-bit random number, see
    :mod:`~ml_tasks.evaluation.statistics.poisson_counts`) as a ``(n, 64)`` uint8 block in
    ``a``'s score order. Each metric is linear in the counts up to a final division: log loss and
    Brier are a dense product ``losses' @ counts``; the ranking metrics need, per tie group
    holding positives, the weight at or above it and its own positive weight, which one sparse
    matrix per 4,096-row tile maps from the counts (``b``'s rows are gathered in ``b``'s order),
    followed by cumulative sums over those groups
    (:meth:`~ml_tasks.evaluation.statistics.bootstrap_plan.ModelPlan.finish`). Nothing of size
    ``replicates x n`` is held: besides the plan (a few floats per row), memory is ``n x 64``
    bytes of counts plus, for the ranking metrics, five ``(groups x 64)`` float arrays reused
    from chunk to chunk (for 1M rows with 10% positives the whole call peaks about 630 MB above
    its inputs).

    **Tests.** With ``d*`` the replicate improvements, ``d`` the observed one and ``R`` the
    replicates, the null H0: improvement <= ``bar`` is tested with the bootstrap distribution
    shifted to the null's boundary, ``bar + (d* - d)`` (the distribution of ``d`` if the true
    improvement were ``bar``, by the usual bootstrap analogy ``d* - d ~ d - true``)::

        p = (1 + #{bar + d* - d >= d}) / (1 + R) = (1 + #{d* >= 2 d - bar}) / (1 + R)

    with ``bar = 0`` for superiority and ``bar = -margin`` for non-inferiority. The ``+1``
    keeps a p-value of 0 from being claimed with finitely many replicates. Rejecting when
    ``p <= alpha`` is the same as the basic-bootstrap one-sided lower bound ``2 d - q_{1-alpha}(d*)``
    lying above ``bar``; the reported interval is the percentile interval, which agrees with it
    when the replicate distribution is symmetric about ``d`` (as for smooth metrics at large n).
    """
    return paired_bootstrap_many([metric], y, p_a, p_b, weights, replicates, seed, alpha, margin, bins)[metric]


def _summarise(metric: str, value_a: float, value_b: float, reps_a: npt.NDArray[np.float64],
               reps_b: npt.NDArray[np.float64], margin: float, alpha: float, seed: int) -> BootstrapResult:
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    difference = value_a - value_b
    observed = sign * difference
    if not math.isfinite(observed):
        raise ValueError(f"{metric}: the observed difference is not finite ({value_a} vs {value_b})")
    d = sign * (reps_a - reps_b)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        raise ValueError(f"{metric}: no bootstrap replicate had a finite value (too few positive rows?)")
    low, high = np.quantile(d, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapResult(
        metric=metric, value_a=value_a, value_b=value_b, difference=difference, improvement=observed,
        ci_low=float(low), ci_high=float(high), se=float(np.std(d, ddof=1)) if len(d) > 1 else 0.0,
        p_superiority=_shifted_null_p(d, observed, 0.0), p_non_inferiority=_shifted_null_p(d, observed, -margin),
        margin=margin, alpha=alpha, replicates=len(d), seed=seed, replicates_a=reps_a, replicates_b=reps_b)


def _shifted_null_p(d: npt.NDArray[np.float64], observed: float, bar: float) -> float:
    """``(1 + #{d* >= 2 d - bar}) / (1 + R)``: see the tests in :func:`paired_bootstrap`."""
    return float((1 + np.count_nonzero(d >= 2.0 * observed - bar)) / (1 + len(d)))

