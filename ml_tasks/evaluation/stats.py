"""The statistical core of the gate: paired tests of a challenger against a champion.

Every function here is pure (arrays in, a small frozen result out) and works on the *same* test
rows scored by both models, because pairing is what makes a small improvement detectable: most
of the noise in a metric comes from which rows happen to be in the test set, and that noise is
shared by the two models and cancels in their difference.

=============================  ====================================================================
:func:`delong_paired`          ROC AUC difference, its variance and z (DeLong 1988, in the fast
                               O(n log n) form of Sun & Xu 2014), with sampling weights
:func:`paired_bootstrap`       any metric (log loss, Brier, PR AUC, ECE, ROC AUC) by a vectorised
                               paired Poisson bootstrap, fast enough for 1M rows x 1,000 replicates
:func:`paired_bootstrap_many`  several metrics on the same replicates (what the gate runs)
:func:`mcnemar_at_threshold`   discordant decisions at one threshold (statsmodels' McNemar) and
                               the weighted accuracy difference
:func:`holm`                   Holm's step-down correction across many checks (the metrics compared)
:func:`fold_consistency`       does the challenger win across backtest folds? (sign / Wilcoxon)
:func:`~ml_tasks.core.spec.min_folds_for`  the fewest folds with which such a test can ever pass (the spec check uses it)
:func:`simpson_pattern`        better overall but worse in every slice (or the reverse)
=============================  ====================================================================

Conventions
-----------
* ``a`` is the challenger and ``b`` the reference (champion or baseline). A *difference* is
  ``metric(a) - metric(b)``; an *improvement* is the difference signed by
  :data:`ml_tasks.core.spec.HIGHER_IS_BETTER`, so that positive always means "a is better".
* Weights are the sampler's inverse inclusion probabilities (``_weight``): every estimate is of
  the *population* value, and every variance treats the rows as a sample with those weights
  (not as ``w`` repeated copies; see :func:`delong_paired`).
* A one-sided test rejects when ``p_value <= alpha``; p-values are p-values (never log10 of one,
  the trap of a widely copied fast-DeLong implementation).
* Probabilities are clipped to ``[EPS, 1 - EPS]`` before any bootstrap metric, as in
  :func:`ml_tasks.evaluation.metrics.compute_metrics`, so the observed values match the evaluation's.

>>> r = delong_paired(y, p_challenger, p_champion, weights=w)          # doctest: +SKIP
>>> r.difference, r.se, r.non_inferiority(margin=0.005).p_value          # doctest: +SKIP
(0.0041, 0.0012, 1.2e-13)
>>> b = paired_bootstrap("log_loss", y, p_challenger, p_champion, w, replicates=1000, seed=0)  # doctest: +SKIP
>>> b.improvement, (b.ci_low, b.ci_high), b.p_superiority                 # doctest: +SKIP
(0.0021, (0.0013, 0.0029), 0.000999)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from threadpoolctl import threadpool_limits

from ml_tasks.core.columns import HIGHER_IS_BETTER
from ml_tasks.core.spec import min_folds_for
from ml_tasks.evaluation.metrics import EPS, equal_mass_bins, row_losses, tie_groups

#: Metrics :func:`paired_bootstrap` can resample.
BOOTSTRAP_METRICS = ("log_loss", "brier", "pr_auc", "ece", "roc_auc")
#: Below this many discordant rows McNemar's test uses the exact binomial distribution.
MCNEMAR_EXACT_BELOW = 25
#: :func:`simpson_pattern`'s two verdicts.
BETTER_OVERALL_WORSE_IN_EVERY_SLICE = "better overall but worse in every slice"
WORSE_OVERALL_BETTER_IN_EVERY_SLICE = "worse overall but better in every slice"

#: Replicates drawn per random stream (and processed together): results depend on the seed only,
#: never on memory settings, and the first k replicates of a run are the same for any larger
#: ``replicates`` rounded up to this size.
CHUNK = 64
#: Rows per tile: a tile of counts as float64 (TILE x CHUNK x 8 bytes = 2 MiB) stays in cache.
TILE = 4096


def _z_quantile(q: float) -> float:
    return float(sps.norm.ppf(q))


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------

def _labels(y) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if y.dtype == bool:
        return y
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"y: expected binary labels 0/1, got values {np.unique(y)[:5].tolist()}")
    return y == 1


def _scores(name: str, s, n: int) -> np.ndarray:
    s = np.asarray(s, dtype=float).reshape(-1)
    if len(s) != n:
        raise ValueError(f"{name}: {len(s)} scores for {n} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name}: expected finite scores, found NaN or infinity")
    return s


def _weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=float).reshape(-1)
    if len(w) != n:
        raise ValueError(f"weights: {len(w)} weights for {n} rows")
    if not np.all(np.isfinite(w)) or (n and w.min() < 0.0):
        raise ValueError("weights: expected finite, non-negative sampling weights")
    return w


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")


# ---------------------------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------------------------

class OneSidedTest(NamedTuple):
    """A one-sided test of H0: improvement <= -margin (margin 0: superiority)."""

    z: float
    p_value: float
    margin: float
    alpha: float
    passed: bool


class _WaldDifference:
    """Interval and one-sided tests of an asymptotically normal ``difference`` (a - b) with ``se``."""

    difference: float
    se: float

    def ci(self, alpha: float = 0.05) -> tuple[float, float]:
        """Two-sided ``1 - alpha`` Wald interval of the difference: ``d -/+ z_{1-alpha/2} se``."""
        _check_alpha(alpha)
        half = _z_quantile(1.0 - alpha / 2.0) * self.se
        return self.difference - half, self.difference + half

    def non_inferiority(self, margin: float, alpha: float = 0.05) -> OneSidedTest:
        """One-sided test of H0: ``difference <= -margin`` against H1: ``> -margin``.

        ``z = (difference + margin) / se`` and ``p = 1 - Phi(z)`` (the p-value itself). ``a``
        passes (is "not worse by more than ``margin``") when ``p <= alpha``, which is the same as
        the one-sided ``1 - alpha`` lower bound ``difference - z_{1-alpha} se`` lying above
        ``-margin``. With ``se == 0`` (identical models) the difference is exact: z is
        +-infinity, or 0 when ``difference + margin == 0``.
        """
        _check_alpha(alpha)
        if margin < 0:
            raise ValueError(f"margin: expected a non-negative allowed loss, got {margin}")
        z = _safe_z(self.difference + margin, self.se)
        p = float(sps.norm.sf(z))
        return OneSidedTest(z=z, p_value=p, margin=float(margin), alpha=alpha, passed=p <= alpha)

    def superiority(self, alpha: float = 0.05) -> OneSidedTest:
        """One-sided test of H0: ``difference <= 0`` (``non_inferiority`` with margin 0)."""
        return self.non_inferiority(0.0, alpha)


@dataclass(frozen=True)
class DeLongResult(_WaldDifference):
    """Two correlated ROC AUCs on the same rows, and the distribution of their difference.

    ``difference = auc_a - auc_b`` (positive: ``a`` ranks better); ``covariance`` is the 2 x 2
    estimated covariance matrix of ``(auc_a, auc_b)``; ``variance = c' S c`` with
    ``c = (1, -1)``; ``z = difference / se`` and ``p_value`` is two-sided. ``ci``,
    ``non_inferiority`` and ``superiority`` are the Wald interval and z-tests on it.
    """

    auc_a: float
    auc_b: float
    difference: float
    variance: float
    se: float
    covariance: np.ndarray = field(repr=False)
    z: float
    p_value: float
    n_positive: int
    n_negative: int


def _safe_z(numerator: float, se: float) -> float:
    if se > 0:
        return float(numerator / se)
    return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)


def _placements(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def delong_paired(y, score_a, score_b, weights=None) -> DeLongResult:
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

    Raises ``ValueError`` unless each label has at least two rows with positive weight.
    """
    positive = _labels(y)
    n = len(positive)
    a = _scores("score_a", score_a, n)
    b = _scores("score_b", score_b, n)
    w = _weights(weights, n)
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
    z = _safe_z(difference, se)
    p = float(min(1.0, 2.0 * sps.norm.sf(abs(z))))
    return DeLongResult(auc_a=float(auc[0]), auc_b=float(auc[1]), difference=difference, variance=variance,
                        se=se, covariance=cov, z=z, p_value=p, n_positive=m_eff, n_negative=n_eff)


# ---------------------------------------------------------------------------------------------
# Poisson bootstrap: replicate counts
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _count_sampler() -> tuple[np.ndarray, np.uint32, np.ndarray, np.ndarray]:
    """Tables that turn one uniform 16-bit integer into four independent Poisson(1) counts.

    The joint outcomes ``(c1, c2, c3, c4)`` (each 0..20; the rest has probability < 1e-19) are
    listed by decreasing probability with their cumulative distribution ``F``. Inverse-CDF
    sampling maps a uniform ``x`` in [0, 1) to the outcome whose interval holds it. Cutting
    [0, 1) into 65,536 cells ``[u, u + 1) / 65536``, 98.5% of the cells lie inside one
    outcome's interval: for them the 16-bit ``u`` alone decides, through a lookup table of the
    four counts packed in one uint32. The other cells (a sentinel in the table) draw a float
    ``v`` and use ``x = (u + v) / 65536``, which is uniform within the cell, so the sampler is
    exact inverse-CDF sampling. This is about 20x faster than ``Generator.poisson``.
    """
    kmax = 20
    pmf = sps.poisson.pmf(np.arange(kmax + 1), 1.0)
    grid = np.stack(np.meshgrid(*[np.arange(kmax + 1)] * 4, indexing="ij"), axis=-1).reshape(-1, 4)
    prob = np.prod(pmf[grid], axis=1)
    keep = prob > 1e-24
    grid, prob = grid[keep], prob[keep]
    order = np.argsort(-prob, kind="stable")
    grid, prob = grid[order], prob[order]
    cdf = np.cumsum(prob)
    assert abs(1.0 - cdf[-1]) < 1e-12  # what is left out is below float resolution
    cdf /= cdf[-1]
    packed = np.ascontiguousarray(grid.astype(np.uint8)).view(np.uint32).reshape(-1)
    cells = np.arange(65536, dtype=float) / 65536.0
    first = np.minimum(np.searchsorted(cdf, cells, side="right"), len(cdf) - 1)
    last = np.minimum(np.searchsorted(cdf, np.nextafter(cells + 1.0 / 65536.0, 0.0), side="right"), len(cdf) - 1)
    sentinel = np.array([255, 255, 255, 255], dtype=np.uint8).view(np.uint32)[0]
    table = packed[first].copy()
    table[first != last] = sentinel
    return table, sentinel, cdf, packed


#: Rows drawn per call of the random generator (a fixed constant: part of what a seed means).
_DRAW_ROWS = 65536


def _chunk_counts(n: int, seed: int, chunk: int, out: np.ndarray | None = None) -> np.ndarray:
    """Poisson(1) counts of chunk ``chunk``: shape ``(n, CHUNK)``, uint8, from its own random stream.

    Drawn in pieces of :data:`_DRAW_ROWS` rows into ``out`` (reused between chunks: a fresh
    64 MB array per chunk costs more in page faults than the drawing itself).
    """
    table, sentinel, cdf, packed = _count_sampler()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk,)))
    if out is None:
        out = np.empty((n, CHUNK), dtype=np.uint8)
    packed_out = out.view(np.uint32)
    for lo in range(0, n, _DRAW_ROWS):
        hi = min(lo + _DRAW_ROWS, n)
        # Raw 64-bit outputs cut into 16-bit cells: uniform, and twice as fast as rng.integers.
        cells = rng.bit_generator.random_raw((hi - lo) * CHUNK // 16).view(np.uint16).reshape(hi - lo, CHUNK // 4)
        piece = packed_out[lo:hi]
        # Every uint16 is a valid index: mode="clip" skips the bounds check (5x faster).
        np.take(table, cells, out=piece, mode="clip")
        bad = np.flatnonzero(piece == sentinel)
        if bad.size:
            x = (cells.reshape(-1)[bad] + rng.random(bad.size)) / 65536.0
            piece.reshape(-1)[bad] = packed[np.minimum(np.searchsorted(cdf, x, side="right"), len(cdf) - 1)]
    return out


def poisson_replicate_counts(p_a, replicates: int, seed: int = 0) -> np.ndarray:
    """The Poisson(1) counts :func:`paired_bootstrap` gives each row, shape ``(replicates, n)``.

    Replicate ``r``'s weights are ``weights * counts[r]`` (in the rows' own order). The counts
    are drawn in the order of ``p_a`` (descending, stable), which keeps the bootstrap's memory
    access sequential; since they are independent draws, any fixed assignment to rows is the
    same Poisson bootstrap. For checks and small data: this materialises ``replicates x n``.
    """
    p = np.clip(np.asarray(p_a, dtype=float).reshape(-1), EPS, 1.0 - EPS)
    order = np.argsort(-p, kind="stable")
    counts = np.empty((replicates, len(p)), dtype=np.uint8)
    for chunk in range(-(-replicates // CHUNK)):
        lo, hi = chunk * CHUNK, min((chunk + 1) * CHUNK, replicates)
        counts[lo:hi][:, order] = _chunk_counts(len(p), seed, chunk)[:, : hi - lo].T
    return counts


# ---------------------------------------------------------------------------------------------
# Poisson bootstrap: metrics of many replicates at once
# ---------------------------------------------------------------------------------------------

def _cumsum_rows(x: np.ndarray) -> np.ndarray:
    """Cumulative sum along axis 0 of a C-ordered ``(K, R)`` array, in place.

    ``np.cumsum(x, axis=0)`` walks each column separately (one dependent add per element, and
    strided). A blocked scan instead adds whole rows, vectorised over the R replicates:
    cumulate within blocks of 32 rows (a cache-sized piece of blocks at a time), scan the block
    totals recursively, add each block's offset.
    """
    k = len(x)
    block, piece = 32, 64
    if k <= 2 * block:
        for i in range(1, k):
            x[i] += x[i - 1]
        return x
    full = k // block * block
    view = x[:full].reshape(k // block, block, x.shape[1])
    for start in range(0, len(view), piece):
        part = view[start:start + piece]
        for i in range(1, block):
            part[:, i] += part[:, i - 1]
    totals = _cumsum_rows(view[:, -1].copy())
    view[1:] += totals[:-1, None, :]
    if full < k:
        x[full] += totals[-1]
        for i in range(full + 1, k):
            x[i] += x[i - 1]
    return x


class _Family(NamedTuple):
    """Rows of a model's segment matrix: which segment each (ordered) row adds to, with what value."""

    ids: np.ndarray       # segment id of each contributing row, non-decreasing in the model's order
    rows: np.ndarray      # positions (in the model's order) of the contributing rows
    values: np.ndarray    # what each contributes per unit of count
    size: int             # number of segments


class _Tile(NamedTuple):
    start: int
    stop: int
    matrix: sp.csr_array                # (segments touched, stop - start)
    spans: tuple[tuple[int, int], ...]  # per family: [first, last + 1) segment ids touched
    continues: tuple[bool, ...]         # per family: its first segment is the previous tile's last


class _ModelPlan:
    """One model's score order and the sparse maps from counts to the sums its metrics need.

    Rows are sorted by descending score and cut into tie groups. A *P-group* is a tie group
    holding at least one positive row; ``K`` of them. For every replicate the plan computes

    * ``inc[k]``: the replicate's weight in rows after P-group ``k-1`` up to the end of P-group
      ``k`` (``inc[K]``: the rows after the last P-group), so ``cumsum(inc)[k]`` is the weight
      scored at or above P-group ``k``;
    * ``pos[k]``: the positive weight inside P-group ``k`` (``cumsum(pos)[k]``: true positives);
    * ``tie[k]``: the negative weight inside P-group ``k`` (ties with positives; ROC AUC only);
    * ``ece[b]``: ``sum count * w * (y - p)`` in equal-mass bin ``b`` (ECE only).

    All are linear in the counts, so one sparse matrix per tile of rows maps a ``(rows, R)``
    block of counts to them for R replicates at once.
    """

    def __init__(self, p: np.ndarray, positive: np.ndarray, w: np.ndarray, metrics: set[str], bins: int,
                 ece_bins: np.ndarray | None) -> None:
        n = len(p)
        self.order, _, group = tie_groups(p, descending=True)
        s, pos, ws = p[self.order], positive[self.order], w[self.order]
        families: dict[str, _Family] = {}
        self.ranking = bool(metrics & {"pr_auc", "roc_auc"})
        if self.ranking:
            group_has_pos = np.zeros(group[-1] + 1, dtype=bool)
            group_has_pos[group[pos]] = True
            pgroup_of_group = np.cumsum(group_has_pos) - 1          # P-group index (for P-groups)
            n_p = int(group_has_pos.sum())
            # The P-group whose end closes each row's segment: the first P-group at or after the row.
            closing = np.cumsum(group_has_pos)[group] - group_has_pos[group]  # P-groups strictly before
            everything = np.arange(n)
            families["inc"] = _Family(closing, everything, ws, n_p + 1)
            pos_rows = np.flatnonzero(pos)
            families["pos"] = _Family(pgroup_of_group[group[pos_rows]], pos_rows, ws[pos_rows], n_p)
            if "roc_auc" in metrics:
                tie_rows = np.flatnonzero(~pos & group_has_pos[group])
                families["tie"] = _Family(pgroup_of_group[group[tie_rows]], tie_rows, ws[tie_rows], n_p)
        if "ece" in metrics:
            # Bins grow with p; numbered from the top so that ids do not decrease in this order.
            b = bins - 1 - ece_bins[self.order]
            residual = positive[self.order].astype(float) - s
            families["ece"] = _Family(b, np.arange(n), ws * residual, bins)
        self.families = families
        self.tiles = self._tiles(n, families)
        # Families whose segments the tiles cover without a gap are written, not added to, so
        # their buffers need no zeroing per chunk (a pass over K x R floats saved).
        self.covered = set()
        for index, name in enumerate(families):
            spans = [t.spans[index] for t in self.tiles if t.spans[index][1] > t.spans[index][0]]
            edges = [0] + [last for _, last in spans]
            if spans and spans[-1][1] == families[name].size and all(
                    first in (edge, edge - 1) for (first, _), edge in zip(spans, edges)):
                self.covered.add(name)
        # The tiles hold everything the replicates need: keep only the sizes.
        self.families = {name: fam._replace(ids=None, rows=None, values=None) for name, fam in families.items()}

    @staticmethod
    def _tiles(n: int, families: dict[str, _Family]) -> list[_Tile]:
        tiles = []
        previous_last = [-1] * len(families)
        for start in range(0, n, TILE):
            stop = min(start + TILE, n)
            rows, cols, values, spans, continues = [], [], [], [], []
            offset = 0
            for index, fam in enumerate(families.values()):
                lo, hi = np.searchsorted(fam.rows, [start, stop])
                ids = fam.ids[lo:hi]
                if len(ids):
                    first, last = int(ids[0]), int(ids[-1]) + 1
                    continues.append(first == previous_last[index] - 1)
                    previous_last[index] = last
                else:
                    first = last = 0
                    continues.append(False)
                rows.append(ids - first + offset)
                cols.append(fam.rows[lo:hi] - start)
                values.append(fam.values[lo:hi])
                spans.append((first, last))
                offset += last - first
            # Entries are already in CSR order (families stacked, ids and rows ascending within
            # each), so the matrix is built from its arrays, without a sort.
            row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.intp)
            indptr = np.searchsorted(row, np.arange(offset + 1)).astype(np.int32)
            indices = (np.concatenate(cols) if cols else np.zeros(0)).astype(np.int32)
            data = np.concatenate(values) if values else np.zeros(0)
            matrix = sp.csr_array((data, indices, indptr), shape=(offset, stop - start))
            tiles.append(_Tile(start, stop, matrix, tuple(spans), tuple(continues)))
        return tiles

    def zero_sums(self, r: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((fam.size, r)) for name, fam in self.families.items()}

    def add_tile(self, tile: _Tile, part: np.ndarray, sums: dict[str, np.ndarray]) -> None:
        """Add one tile's counts (float64, ``(rows, R)``, this model's order) into ``sums``."""
        out = tile.matrix @ part
        offset = 0
        for name, (first, last), continues in zip(self.families, tile.spans, tile.continues):
            if last > first:
                block, target = out[offset:offset + last - first], sums[name]
                if name not in self.covered:
                    target[first:last] += block
                elif continues:
                    target[first] += block[0]
                    target[first + 1:last] = block[1:]
                else:
                    target[first:last] = block
            offset += last - first

    def finish(self, sums: dict[str, np.ndarray], metrics: Sequence[str], scratch: np.ndarray) -> dict[str, np.ndarray]:
        """PR AUC (weighted average precision) and ROC AUC per replicate from the segment sums.

        With P-groups in descending score order, ``pos_k`` their positive weight, ``TP_k =
        cumsum(pos)_k`` and ``ALL_k = cumsum(inc)_k`` the weight at or above P-group ``k``::

            AP  = sum_k pos_k * (TP_k / ALL_k) / P          (recall step x precision, as sklearn)
            AUC = (P N - sum_k pos_k FP_k + 1/2 sum_k pos_k tie_k) / (P N),   FP_k = ALL_k - TP_k

        (``N - FP_k`` negatives rank below P-group ``k``; ``tie_k`` tie with it, counting half.)
        Works in place: ``sums`` is spent; ``scratch`` is a float buffer of at least their size.
        """
        result = {}
        inc = _cumsum_rows(sums["inc"])
        pos = sums["pos"]
        tp = scratch[: pos.size].reshape(pos.shape)
        np.copyto(tp, pos)
        _cumsum_rows(tp)
        total = inc[-1].copy()
        p_total = tp[-1].copy() if len(tp) else np.zeros_like(total)
        at_or_above = inc[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            if "roc_auc" in metrics:
                n_total = total - p_total
                false_pos = np.einsum("kr,kr->r", pos, at_or_above) - np.einsum("kr,kr->r", pos, tp)
                ties = np.einsum("kr,kr->r", pos, sums["tie"])
                result["roc_auc"] = (p_total * n_total - false_pos + 0.5 * ties) / (p_total * n_total)
            if "pr_auc" in metrics:
                # ALL_k = 0 only where TP_k = 0 too, and only in a leading run of P-groups (ALL
                # grows with k): a tiny floor there turns 0/0 into 0.
                lead = 0
                while lead < len(at_or_above) and not at_or_above[lead].all():
                    lead += 1
                np.maximum(at_or_above[:lead], 1e-300, out=at_or_above[:lead])
                np.divide(tp, at_or_above, out=tp)
                result["pr_auc"] = np.einsum("kr,kr->r", pos, tp) / p_total
        return result


class _BootstrapPlan:
    """Everything about the two models that does not depend on the replicate, and reused buffers."""

    def __init__(self, metrics: Sequence[str], y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, w: np.ndarray,
                 bins: int) -> None:
        wanted = set(metrics)
        self.metrics = list(dict.fromkeys(metrics))
        bins_a = equal_mass_bins(p_a, w, bins) if "ece" in wanted else None
        bins_b = equal_mass_bins(p_b, w, bins) if "ece" in wanted else None
        self.a = _ModelPlan(p_a, y, w, wanted, bins, bins_a)
        self.b = _ModelPlan(p_b, y, w, wanted, bins, bins_b)
        # Row of the counts (drawn in a's order) that each row in b's order takes.
        rank_a = np.empty(len(p_a), dtype=np.intp)
        rank_a[self.a.order] = np.arange(len(p_a))
        self.b_at = rank_a[self.b.order]
        # Dense columns for the mean-type metrics and the total weight, in a's order.
        columns = [w]
        self.mean_columns: dict[str, tuple[int, int]] = {}
        yf = y.astype(float)
        for metric in self.metrics:
            if metric in ("log_loss", "brier"):
                self.mean_columns[metric] = (len(columns), len(columns) + 1)
                columns += [w * row_losses(metric, yf, p_a), w * row_losses(metric, yf, p_b)]
        self.dense = np.ascontiguousarray(np.stack(columns, axis=1)[self.a.order])
        self._buffers: dict[int, tuple] = {}

    def _buffers_for(self, r: int) -> tuple:
        if r not in self._buffers:
            sums_a, sums_b = self.a.zero_sums(r), self.b.zero_sums(r)
            largest = max([x.size for x in (*sums_a.values(), *sums_b.values())], default=0)
            self._buffers[r] = (sums_a, sums_b, np.empty(largest), np.empty((TILE, r)),
                                np.empty((TILE, r), dtype=np.uint8))
        return self._buffers[r]

    def values(self, counts: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{metric: (values of a, values of b)}``, one per column of ``counts`` (rows in a's order)."""
        r = counts.shape[1]
        sums_a, sums_b, scratch, part, gathered = self._buffers_for(r)
        for plan, sums in ((self.a, sums_a), (self.b, sums_b)):
            for name, x in sums.items():
                if name not in plan.covered:
                    x.fill(0.0)
        dense = np.zeros((self.dense.shape[1], r))
        for tile in self.a.tiles:
            rows = tile.stop - tile.start
            np.copyto(part[:rows], counts[tile.start:tile.stop])
            dense += self.dense[tile.start:tile.stop].T @ part[:rows]
            if sums_a:
                self.a.add_tile(tile, part[:rows], sums_a)
        if sums_b:
            for tile in self.b.tiles:
                rows = tile.stop - tile.start
                np.take(counts, self.b_at[tile.start:tile.stop], axis=0, out=gathered[:rows], mode="clip")
                np.copyto(part[:rows], gathered[:rows])
                self.b.add_tile(tile, part[:rows], sums_b)
        total = dense[0]
        ranking = [m for m in self.metrics if m in ("pr_auc", "roc_auc")]
        ranked_a = self.a.finish(sums_a, ranking, scratch) if ranking else {}
        ranked_b = self.b.finish(sums_b, ranking, scratch) if ranking else {}
        result = {}
        for metric in self.metrics:
            if metric in self.mean_columns:
                ia, ib = self.mean_columns[metric]
                result[metric] = (dense[ia] / total, dense[ib] / total)
            elif metric == "ece":
                result[metric] = (np.abs(sums_a["ece"]).sum(axis=0) / total, np.abs(sums_b["ece"]).sum(axis=0) / total)
            else:
                result[metric] = (ranked_a[metric], ranked_b[metric])
        return result


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
    replicates_a: np.ndarray = field(repr=False)
    replicates_b: np.ndarray = field(repr=False)

    @property
    def sign(self) -> float:
        return 1.0 if HIGHER_IS_BETTER[self.metric] else -1.0

    @property
    def improvements(self) -> np.ndarray:
        """The improvement in each replicate (non-finite replicates dropped)."""
        d = self.sign * (self.replicates_a - self.replicates_b)
        return d[np.isfinite(d)]

    def p_value(self, margin: float = 0.0) -> float:
        """One-sided p of H0: improvement <= -margin from these replicates (0: ``p_superiority``).

        Any margin can be tested on the same replicates, so one bootstrap serves several
        comparisons of one metric.
        """
        return _shifted_null_p(self.improvements, self.improvement, -margin)

    @property
    def superior(self) -> bool:
        return self.p_superiority <= self.alpha

    @property
    def non_inferior(self) -> bool:
        return self.p_non_inferiority <= self.alpha


def _prepare(y, p_a, p_b, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    positive = _labels(y)
    n = len(positive)
    a = np.clip(_scores("p_a", p_a, n), EPS, 1.0 - EPS)
    b = np.clip(_scores("p_b", p_b, n), EPS, 1.0 - EPS)
    w = _weights(weights, n)
    if not (np.any(positive & (w > 0)) and np.any(~positive & (w > 0))):
        raise ValueError("y: expected positive and negative rows with positive weight; a paired comparison "
                         "on one class only is meaningless")
    return positive, a, b, w


def paired_bootstrap_many(metrics: Sequence[str], y, p_a, p_b, weights=None, replicates: int = 1000, seed: int = 0,
                          alpha: float = 0.05, margin: float | Mapping[str, float] = 0.0,
                          bins: int = 15) -> dict[str, BootstrapResult]:
    """:func:`paired_bootstrap` of several metrics on the *same* replicates (cheaper than one by one).

    ``margin`` is one value for all metrics or one per metric (in each metric's own units); other
    margins can be tested afterwards with :meth:`BootstrapResult.p_value`. For a given seed each
    metric's result is that of a call of :func:`paired_bootstrap` on the same counts: equal up
    to rounding in the last bits (log loss and Brier share one matrix product whose summation
    order depends on how many columns it has), and deterministic for a given list of metrics.
    """
    unknown = [m for m in metrics if m not in BOOTSTRAP_METRICS]
    if unknown or not metrics:
        raise ValueError(f"metric: expected one or more of {list(BOOTSTRAP_METRICS)}, got {list(metrics)}")
    _check_alpha(alpha)
    if replicates < 1:
        raise ValueError(f"replicates: expected at least 1, got {replicates}")
    margins = {m: float(margin[m] if isinstance(margin, Mapping) else margin) for m in metrics}
    if any(v < 0 for v in margins.values()):
        raise ValueError(f"margin: expected a non-negative allowed loss, got {margins}")
    positive, a, b, w = _prepare(y, p_a, p_b, weights)
    n = len(positive)
    reps = {m: (np.empty(replicates), np.empty(replicates)) for m in dict.fromkeys(metrics)}
    # Thousands of small matrix products: a multi-threaded BLAS only adds hand-offs to them (100x
    # slower on a busy 2-core machine), so they run on one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        plan = _BootstrapPlan(metrics, positive, a, b, w, bins)
        observed = plan.values(np.ones((n, 1), dtype=np.uint8))
        buffer = np.empty((n, CHUNK), dtype=np.uint8)
        for chunk in range(-(-replicates // CHUNK)):
            lo, hi = chunk * CHUNK, min((chunk + 1) * CHUNK, replicates)
            counts = _chunk_counts(n, seed, chunk, out=buffer)
            if hi - lo < CHUNK:
                counts = np.ascontiguousarray(counts[:, : hi - lo])
            for metric, (va, vb) in plan.values(counts).items():
                reps[metric][0][lo:hi] = va
                reps[metric][1][lo:hi] = vb
    results = {}
    for metric in plan.metrics:
        va, vb = observed[metric]
        results[metric] = _summarise(metric, float(va[0]), float(vb[0]), reps[metric][0], reps[metric][1],
                                     margins[metric], alpha, seed)
    return results


def paired_bootstrap(metric: str, y, p_a, p_b, weights=None, replicates: int = 1000, seed: int = 0,
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
        :func:`ml_tasks.training.calibration.expected_calibration_error` (15 bins). The bins are fixed by
        the full sample's weighted quantiles and kept for every replicate (re-cutting them per
        replicate would add the bins' own jitter to the difference). ECE is biased upwards by
        noise in each bin, by more for a model with sharper bins; read its test as a guide.

    **Speed.** Counts are drawn 64 replicates at a time (4 counts per 16-bit random number, see
    :func:`_count_sampler`) as a ``(n, 64)`` uint8 block in ``a``'s score order. Each metric is
    linear in the counts up to a final division: log loss and Brier are a dense product
    ``losses' @ counts``; the ranking metrics need, per tie group holding positives, the weight
    at or above it and its own positive weight, which one sparse matrix per 4,096-row tile maps
    from the counts (``b``'s rows are gathered in ``b``'s order), followed by cumulative sums
    over those groups (:meth:`_ModelPlan.finish`). Nothing of size ``replicates x n`` is held:
    besides the plan (a few floats per row), memory is ``n x 64`` bytes of counts plus, for the
    ranking metrics, five ``(groups x 64)`` float arrays reused from chunk to chunk (for 1M rows
    with 10% positives the whole call peaks about 630 MB above its inputs).

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


def _summarise(metric: str, value_a: float, value_b: float, reps_a: np.ndarray, reps_b: np.ndarray, margin: float,
               alpha: float, seed: int) -> BootstrapResult:
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


def _shifted_null_p(d: np.ndarray, observed: float, bar: float) -> float:
    """``(1 + #{d* >= 2 d - bar}) / (1 + R)``: see the tests in :func:`paired_bootstrap`."""
    return float((1 + np.count_nonzero(d >= 2.0 * observed - bar)) / (1 + len(d)))


# ---------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class McNemarResult(_WaldDifference):
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
    table: np.ndarray
    discordant: int
    exact: bool
    statistic: float
    p_value: float
    p_value_a_better: float
    weighted_table: np.ndarray
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


def mcnemar_at_threshold(y, p_a, p_b, threshold: float = 0.5, weights=None) -> McNemarResult:
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
    :func:`delong_paired`). A non-inferiority margin has no count test, so it is tested with
    this z: :meth:`non_inferiority`.
    """
    positive = _labels(y)
    n = len(positive)
    a = _scores("p_a", p_a, n)
    b = _scores("p_b", p_b, n)
    w = _weights(weights, n)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("weights: expected a positive total weight")
    right_a = (a >= threshold) == positive
    right_b = (b >= threshold) == positive
    cells = [right_a & right_b, right_a & ~right_b, ~right_a & right_b, ~right_a & ~right_b]
    table = np.array([[np.count_nonzero(cells[0]), np.count_nonzero(cells[1])],
                      [np.count_nonzero(cells[2]), np.count_nonzero(cells[3])]])
    n10, n01 = int(table[0, 1]), int(table[1, 0])
    discordant = n10 + n01
    exact = discordant < MCNEMAR_EXACT_BELOW
    if discordant == 0:
        statistic, p_value, p_one = 0.0, 1.0, 1.0
    else:
        res = mcnemar(table, exact=exact, correction=True)
        statistic, p_value = float(res.statistic), float(res.pvalue)
        p_one = float(sps.binomtest(n10, discordant, 0.5, alternative="greater").pvalue)
    weighted_table = np.array([[w[cells[0]].sum(), w[cells[1]].sum()], [w[cells[2]].sum(), w[cells[3]].sum()]])
    d = cells[1].astype(float) - cells[2].astype(float)
    difference = float(np.dot(w, d)) / total
    se = math.sqrt(float(np.sum((w * (d - difference)) ** 2))) / total
    return McNemarResult(threshold=float(threshold), table=table, discordant=discordant, exact=exact,
                         statistic=statistic, p_value=p_value, p_value_a_better=p_one, weighted_table=weighted_table,
                         accuracy_a=float(np.dot(w, right_a)) / total, accuracy_b=float(np.dot(w, right_b)) / total,
                         difference=difference, se=se, equal_weights=bool(np.ptp(w) <= 1e-12 * float(np.max(w))))


# ---------------------------------------------------------------------------------------------
# Many checks: Holm
# ---------------------------------------------------------------------------------------------

class HolmDecision(NamedTuple):
    adjusted_p: float
    reject: bool


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, HolmDecision]:
    """Holm's step-down correction: family-wise error <= alpha across all the named checks.

    Sort the ``m`` p-values, ``p_(1) <= ... <= p_(m)``; reject ``H_(1), ..., H_(k)`` for the
    largest ``k`` with ``p_(i) <= alpha / (m - i + 1)`` for every ``i <= k``. Equivalently the
    adjusted p-value ``max_{j <= i} min(1, (m - j + 1) p_(j))`` is compared with ``alpha``
    (Holm 1979). Valid under any dependence between the checks, which is what a gate with
    several metrics compared on the same rows has.

    Uses ``multipletests(..., method="holm")``: its default, ``'hs'``, is Holm–Šidák, which is
    slightly more powerful but assumes independent or positively dependent tests.
    """
    _check_alpha(alpha)
    names = list(p_values)
    if not names:
        return {}
    p = np.array([p_values[k] for k in names], dtype=float)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p_values: expected probabilities in [0, 1], got {dict(zip(names, p.tolist()))}")
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    return {k: HolmDecision(float(adj), bool(rej)) for k, adj, rej in zip(names, adjusted, reject)}


# ---------------------------------------------------------------------------------------------
# Backtest folds
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FoldConsistency:
    """Does the challenger win across backtest folds?

    ``wins`` / ``losses`` / ``ties`` count folds with improvement > 0, < 0, == 0;
    ``win_fraction = (wins + ties / 2) / n_folds``: a tied fold (the same recipe retrained on the
    same rows scores the same) is no evidence either way, so it is half a win, not a loss.
    ``p_value`` is one-sided (H0: the improvement is not positive in distribution) from
    ``test``. ``min_folds`` is the fewest non-tied folds with which that test can reach
    ``alpha``; ``reachable`` says whether this many folds can.
    ``passed``: ``win_fraction >= min_win_fraction`` and ``p_value <= alpha``.
    """

    n_folds: int
    wins: int
    losses: int
    ties: int
    win_fraction: float
    test: str
    p_value: float
    alpha: float
    min_win_fraction: float
    min_folds: int
    reachable: bool
    passed: bool


def fold_consistency(diffs: Sequence[float], min_win_fraction: float = 0.5, alpha: float = 0.05,
                     test: Literal["sign", "wilcoxon"] = "sign") -> FoldConsistency:
    """Win fraction and a one-sided exact test over per-fold improvements (positive = a better).

    ``diffs`` must already be direction-aware improvements (e.g. ``-(loss_a - loss_b)``).

    ``sign``
        Exact sign test: of the ``n`` folds with a non-zero improvement, ``wins ~
        Binomial(n, 1/2)`` under H0, ``p = P(X >= wins)``. Uses only the direction of each fold.
    ``wilcoxon``
        Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, ``alternative="greater"``): also
        uses how large each fold's improvement is relative to the others. ``zero_method=
        "wilcox"`` (scipy's default) drops folds with a zero improvement before ranking, as the
        sign test does, so a tied fold counts for neither side and both tests see the same
        ``n``. Without ties among the ``|d|`` the p-value is exact (``method="exact"``); scipy's
        exact distribution assumes distinct ``|d|``, so with ties it uses the exact permutation
        distribution (all ``2^n`` sign flips, ``n <= 16``) or the normal approximation beyond.

    Both have the same smallest attainable p-value, ``2^-n`` (every fold favours the
    challenger): with 5 folds, 1/32 = 0.031 one-sided. See :func:`min_folds_for`.
    """
    _check_alpha(alpha)
    if not 0.0 <= min_win_fraction <= 1.0:
        raise ValueError(f"min_win_fraction: expected a fraction in [0, 1], got {min_win_fraction}")
    if test not in ("sign", "wilcoxon"):
        raise ValueError(f"test: expected 'sign' or 'wilcoxon', got {test!r}")
    d = np.asarray(diffs, dtype=float).reshape(-1)
    if len(d) == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"diffs: expected one finite improvement per fold, got {d.tolist()}")
    wins, losses = int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0))
    ties = len(d) - wins - losses
    nonzero = d[d != 0]
    if len(nonzero) == 0:
        p = 1.0
    elif test == "sign":
        p = float(sps.binomtest(wins, len(nonzero), 0.5, alternative="greater").pvalue)
    else:
        magnitudes = np.abs(nonzero)
        if len(np.unique(magnitudes)) == len(magnitudes):
            method: object = "exact"
        elif len(nonzero) <= 16:
            method = sps.PermutationMethod(n_resamples=np.inf)
        else:
            method = "asymptotic"
        p = float(sps.wilcoxon(nonzero, alternative="greater", zero_method="wilcox", method=method).pvalue)
    min_folds = min_folds_for(alpha, one_sided=True)
    win_fraction = (wins + 0.5 * ties) / len(d)
    return FoldConsistency(n_folds=len(d), wins=wins, losses=losses, ties=ties, win_fraction=win_fraction, test=test,
                           p_value=p, alpha=alpha, min_win_fraction=min_win_fraction, min_folds=min_folds,
                           reachable=len(nonzero) >= min_folds,
                           passed=bool(win_fraction >= min_win_fraction and p <= alpha))


# ---------------------------------------------------------------------------------------------
# Slices
# ---------------------------------------------------------------------------------------------

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
