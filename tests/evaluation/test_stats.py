"""Tests of the gate's statistics (ml_tasks.evaluation.stats): exactness against slow references and
scikit-learn, error rates under the null, power under a known improvement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from ml_tasks.core.spec import min_folds_for
from ml_tasks.evaluation import stats
from ml_tasks.evaluation.metrics import (
    EPS,
    equal_mass_bins,
    expected_calibration_error,
    tie_groups,
)

# ---------------------------------------------------------------------------------------------
# Slow reference and data
# ---------------------------------------------------------------------------------------------

def delong_slow(y, scores, weights=None):
    """DeLong from the Mann–Whitney kernel over all (positive, negative) pairs: O(m n) memory.

    ``scores`` is ``(k, n)``. Unweighted: the textbook formulas (DeLong et al. 1988),
    ``S = cov(V10) / m + cov(V01) / n`` with ``ddof=1``. Weighted: the formula documented in
    ``stats.delong_paired`` written out with explicit pair sums. Returns ``(auc, S)``.
    """
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    x, z = scores[:, y], scores[:, ~y]
    psi = (x[:, :, None] > z[:, None, :]) + 0.5 * (x[:, :, None] == z[:, None, :])   # (k, m, n)
    if weights is None:
        m, n = x.shape[1], z.shape[1]
        v10 = psi.mean(axis=2)
        v01 = psi.mean(axis=1)
        auc = psi.mean(axis=(1, 2))
        s = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
        return auc, s
    weights = np.asarray(weights, dtype=float)
    wp, wn = weights[y], weights[~y]
    big_w, big_v = wp.sum(), wn.sum()
    v10 = np.einsum("kmn,n->km", psi, wn) / big_v
    v01 = np.einsum("kmn,m->kn", psi, wp) / big_w
    auc = np.einsum("kmn,m,n->k", psi, wp, wn) / (big_w * big_v)
    m_eff, n_eff = np.count_nonzero(wp > 0), np.count_nonzero(wn > 0)
    k = len(scores)
    s = np.zeros((k, k))
    for r in range(k):
        for q in range(k):
            s[r, q] = (m_eff / (m_eff - 1) * np.sum(wp**2 * (v10[r] - auc[r]) * (v10[q] - auc[q])) / big_w**2
                       + n_eff / (n_eff - 1) * np.sum(wn**2 * (v01[r] - auc[r]) * (v01[q] - auc[q])) / big_v**2)
    return auc, s


def binormal(rng, n, auc_a, auc_b, prevalence=0.3, rho=0.5):
    """Scores with exactly known AUCs: ``s_k = mu_k y + e_k``, ``e_k ~ N(0, 1)``, corr(e_a, e_b) = rho.

    A positive's score is ``N(mu, 1)`` and a negative's ``N(0, 1)``, so AUC = Phi(mu / sqrt 2).
    """
    y = (rng.random(n) < prevalence).astype(int)
    shared = rng.normal(size=n)
    mu_a, mu_b = (math.sqrt(2) * sps.norm.ppf(auc) for auc in (auc_a, auc_b))
    e_a = rho * shared + math.sqrt(1 - rho**2) * rng.normal(size=n)
    e_b = rho * shared + math.sqrt(1 - rho**2) * rng.normal(size=n)
    return y, mu_a * y + e_a, mu_b * y + e_b


def latent_pair(rng, n, prevalence, separation, noise_a, noise_b):
    """Labels and two correlated scores: a shared latent ``separation * y + N(0, 1)`` plus each
    model's own noise ``noise_k * N(0, 1)``; the less noisy model is the better one."""
    y = (rng.random(n) < prevalence).astype(int)
    latent = separation * y + rng.normal(size=n)
    return y, latent + noise_a * rng.normal(size=n), latent + noise_b * rng.normal(size=n)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def equally_good(rng, n, prevalence=0.3):
    """Two models equally good in every metric: the same signal plus independent noise of equal variance."""
    y, a, b = latent_pair(rng, n, prevalence, separation=1.2, noise_a=0.8, noise_b=0.8)
    return y, sigmoid(a - 1.5), sigmoid(b - 1.5)


@pytest.fixture(scope="module")
def tied_data():
    y, a, b = latent_pair(np.random.default_rng(7), 700, prevalence=0.35, separation=0.9, noise_a=0.6, noise_b=0.9)
    return y, np.round(a, 1), np.round(b, 2)                 # many ties, within and across classes


# ---------------------------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------------------------

def test_tie_groups_sort_stably_and_group_equal_scores():
    scores = np.array([0.3, 0.1, 0.3, 0.2, 0.1])
    up = tie_groups(scores)
    np.testing.assert_array_equal(up.order, [1, 4, 3, 0, 2])
    np.testing.assert_array_equal(up.starts, [0, 2, 3])
    np.testing.assert_array_equal(up.group, [0, 0, 1, 2, 2])
    down = tie_groups(scores, descending=True)
    np.testing.assert_array_equal(down.order, [0, 2, 3, 1, 4])
    np.testing.assert_array_equal(down.group, [0, 0, 1, 2, 2])
    assert len(tie_groups(np.zeros(0)).starts) == 0


def test_delong_matches_slow_reference_unweighted(tied_data):
    y, a, b = tied_data
    fast = stats.delong_paired(y, a, b)
    auc, s = delong_slow(y, np.vstack([a, b]))
    assert fast.auc_a == pytest.approx(auc[0], abs=1e-12) and fast.auc_b == pytest.approx(auc[1], abs=1e-12)
    np.testing.assert_allclose(fast.covariance, s, rtol=0, atol=1e-12)
    assert fast.variance == pytest.approx(s[0, 0] + s[1, 1] - 2 * s[0, 1], abs=1e-8)
    assert fast.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    # Unit weights take the same path: identical numbers.
    unit = stats.delong_paired(y, a, b, weights=np.ones(len(y)))
    assert (unit.difference, unit.variance) == (fast.difference, fast.variance)


def test_delong_weighted_matches_slow_reference_and_sklearn(tied_data):
    y, a, b = tied_data
    rng = np.random.default_rng(3)
    w = rng.choice([0.5, 1.0, 2.0, 7.5], size=len(y))
    w[:4] = 0.0                                              # zero-weight rows drop out
    fast = stats.delong_paired(y, a, b, weights=w)
    auc, s = delong_slow(y, np.vstack([a, b]), w)
    np.testing.assert_allclose([fast.auc_a, fast.auc_b], auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.covariance, s, rtol=0, atol=1e-12)
    assert fast.variance == pytest.approx(s[0, 0] + s[1, 1] - 2 * s[0, 1], abs=1e-8)
    assert fast.auc_b == pytest.approx(roc_auc_score(y, b, sample_weight=w), abs=1e-12)


def test_integer_weights_repeat_rows_for_the_auc_but_not_for_the_variance(tied_data):
    y, a, b = tied_data
    w = np.random.default_rng(5).integers(1, 4, size=len(y))
    weighted = stats.delong_paired(y, a, b, weights=w)
    rep = np.repeat(np.arange(len(y)), w)
    repeated = stats.delong_paired(y[rep], a[rep], b[rep])
    slow_auc, slow_s = delong_slow(y[rep], np.vstack([a[rep], b[rep]]))
    # The statistic: a row of weight 3 counts as three rows.
    assert weighted.auc_a == pytest.approx(repeated.auc_a, abs=1e-12)
    assert weighted.difference == pytest.approx(slow_auc[0] - slow_auc[1], abs=1e-12)
    # The variance: sampling weights, not frequency weights. Repeating rows pretends to have seen
    # sum(w) rows and understates it; the weighted estimate follows the documented formula.
    _, s = delong_slow(y, np.vstack([a, b]), w)
    assert weighted.variance == pytest.approx(s[0, 0] + s[1, 1] - 2 * s[0, 1], abs=1e-8)
    assert repeated.variance == pytest.approx(slow_s[0, 0] + slow_s[1, 1] - 2 * slow_s[0, 1], abs=1e-8)
    assert weighted.variance > 1.5 * repeated.variance


def test_constant_weights_change_nothing(tied_data):
    y, a, b = tied_data
    plain = stats.delong_paired(y, a, b)
    scaled = stats.delong_paired(y, a, b, weights=np.full(len(y), 3.0))
    assert scaled.difference == pytest.approx(plain.difference, abs=1e-12)
    assert scaled.variance == pytest.approx(plain.variance, rel=1e-10)


def test_weighted_delong_se_is_calibrated_under_a_sampling_design():
    """Rows kept with probability pi(label, segment), weighted 1/pi: the SE matches the spread."""
    rng = np.random.default_rng(11)
    diffs, ses, naive = [], [], []
    for _ in range(300):
        n = 12_000
        segment = rng.random(n) < 0.5
        y = (rng.random(n) < np.where(segment, 0.4, 0.1)).astype(int)
        shared = rng.normal(size=n)
        a = 1.0 * y + 0.8 * segment * y + shared + 0.7 * rng.normal(size=n)
        b = 1.1 * y + shared + 0.7 * rng.normal(size=n)
        pi = np.where(y == 1, 0.6, np.where(segment, 0.05, 0.3))
        keep = rng.random(n) < pi
        r = stats.delong_paired(y[keep], a[keep], b[keep], weights=1.0 / pi[keep])
        diffs.append(r.difference)
        ses.append(r.se)
        rep = np.repeat(np.flatnonzero(keep), np.round(1.0 / pi[keep]).astype(int))
        naive.append(stats.delong_paired(y[rep], a[rep], b[rep]).se)
    ratio = np.std(diffs, ddof=1) / np.sqrt(np.mean(np.square(ses)))
    assert 0.86 < ratio < 1.14, ratio                       # SD of an SD from 300 draws: ~4%
    assert np.mean(naive) < 0.75 * np.std(diffs, ddof=1)    # frequency weights would be overconfident


def test_delong_tests_and_interval():
    rng = np.random.default_rng(2)
    y, a, b = binormal(rng, 4000, 0.78, 0.75)
    r = stats.delong_paired(y, a, b)
    assert r.z == pytest.approx(r.difference / r.se)
    assert r.p_value == pytest.approx(2 * sps.norm.sf(abs(r.z)))
    low, high = r.ci(0.05)
    assert (low + high) / 2 == pytest.approx(r.difference)
    assert high - low == pytest.approx(2 * 1.959963984540054 * r.se)
    ni = r.non_inferiority(0.01, alpha=0.05)
    assert ni.z == pytest.approx((r.difference + 0.01) / r.se)
    assert ni.p_value == pytest.approx(sps.norm.sf(ni.z))      # the p-value itself, not log10
    assert 0.0 <= ni.p_value <= 1.0
    assert r.superiority().p_value == pytest.approx(sps.norm.sf(r.z))
    with pytest.raises(ValueError, match="margin"):
        r.non_inferiority(-0.01)


def test_identical_models_have_zero_variance_and_never_promote():
    y, a, _ = binormal(np.random.default_rng(4), 500, 0.7, 0.7)
    r = stats.delong_paired(y, a, a)
    assert r.difference == 0.0 and r.se == 0.0 and r.p_value == 1.0
    assert not r.superiority().passed
    assert r.non_inferiority(0.001).passed       # exactly equal is within any positive margin


def test_delong_false_promotion_rate_under_the_null():
    rng = np.random.default_rng(20240601)
    seeds = 400
    promoted = 0
    for _ in range(seeds):
        y, p_a, p_b = equally_good(rng, 2000)
        promoted += stats.delong_paired(y, p_a, p_b).superiority(0.05).passed
    rate = promoted / seeds
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / seeds), rate


def test_delong_power_for_a_real_improvement_of_two_points():
    rng = np.random.default_rng(99)
    seeds = 100
    promoted = 0
    for _ in range(seeds):
        y, a, b = binormal(rng, 50_000, 0.77, 0.75, prevalence=0.1, rho=0.6)
        promoted += stats.delong_paired(y, a, b).superiority(0.05).passed
    assert promoted / seeds >= 0.8


def test_delong_non_inferiority_within_and_beyond_the_margin():
    rng = np.random.default_rng(8)
    y, a, b = binormal(rng, 200_000, 0.795, 0.80, prevalence=0.2, rho=0.7)   # a is 0.005 worse
    r = stats.delong_paired(y, a, b)
    assert r.se < 0.002
    assert r.non_inferiority(margin=0.01).passed            # within the margin
    assert not r.non_inferiority(margin=0.001).passed       # beyond it
    assert not r.superiority().passed


def test_delong_p_value_agrees_with_a_large_paired_bootstrap():
    rng = np.random.default_rng(12)
    y, a, b = binormal(rng, 4000, 0.765, 0.75, rho=0.5)
    r = stats.delong_paired(y, a, b)
    p_a, p_b = sps.norm.cdf(a - 1), sps.norm.cdf(b - 1)      # monotone: same AUCs, in (0, 1)
    boot = stats.paired_bootstrap("roc_auc", y, p_a, p_b, replicates=2000, seed=1)
    assert boot.value_a == pytest.approx(r.auc_a, abs=1e-12)
    assert boot.se == pytest.approx(r.se, rel=0.1)
    assert boot.p_superiority == pytest.approx(r.superiority().p_value, abs=0.02)


def test_delong_input_errors():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.linspace(0, 1, 6)
    with pytest.raises(ValueError, match="y: expected binary"):
        stats.delong_paired(y * 2, s, s)
    with pytest.raises(ValueError, match="score_b: 5 scores for 6"):
        stats.delong_paired(y, s, s[:5])
    with pytest.raises(ValueError, match="score_a: expected finite"):
        stats.delong_paired(y, np.r_[np.nan, s[1:]], s)
    with pytest.raises(ValueError, match="weights"):
        stats.delong_paired(y, s, s, weights=-np.ones(6))
    with pytest.raises(ValueError, match="at least 2 positive"):
        stats.delong_paired(y, s, s, weights=[1, 1, 1, 0, 0, 1])


# ---------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(1)
    y, a, b = latent_pair(rng, 3000, prevalence=0.2, separation=1.0, noise_a=0.7, noise_b=0.9)
    p_a = np.round(sigmoid(a - 1.5), 2)                                               # ties
    p_b = sigmoid(b - 1.5)
    p_b[:3] = [0.0, 1.0, 1e-9]                                                        # clipped
    w = rng.choice([1.0, 2.5, 7.0], size=len(y))
    w[5:10] = 0.0
    return y, p_a, p_b, w


SKLEARN = {
    "log_loss": lambda y, p, w: log_loss(y, p, sample_weight=w, labels=[0, 1]),
    "brier": lambda y, p, w: brier_score_loss(y, p, sample_weight=w),
    "pr_auc": lambda y, p, w: average_precision_score(y, p, sample_weight=w),
    "roc_auc": lambda y, p, w: roc_auc_score(y, p, sample_weight=w),
}


def test_bootstrap_values_equal_sklearn_for_the_sample_and_each_replicate(scored):
    y, p_a, p_b, w = scored
    results = stats.paired_bootstrap_many(list(stats.BOOTSTRAP_METRICS), y, p_a, p_b, w, replicates=70, seed=3)
    clipped = {"a": np.clip(p_a, EPS, 1 - EPS), "b": np.clip(p_b, EPS, 1 - EPS)}
    counts = stats.poisson_replicate_counts(p_a, 70, seed=3)
    bins = {k: equal_mass_bins(p, w, 15) for k, p in clipped.items()}

    def ece_fixed_bins(p, weights, b):          # ECE with the full sample's bins
        mass = np.bincount(b, weights=weights, minlength=15)
        gap = np.bincount(b, weights=weights * (y - p), minlength=15)
        return np.abs(gap).sum() / mass.sum()

    for metric, r in results.items():
        reference = SKLEARN.get(metric)
        if metric == "ece":
            assert r.value_a == pytest.approx(expected_calibration_error(y, clipped["a"], w), abs=1e-12)
            assert r.value_b == pytest.approx(expected_calibration_error(y, clipped["b"], w), abs=1e-12)
        else:
            assert r.value_a == pytest.approx(reference(y, clipped["a"], w), abs=1e-12), metric
            assert r.value_b == pytest.approx(reference(y, clipped["b"], w), abs=1e-12), metric
        for k in (0, 1, 63, 64, 69):                           # both chunks, both ends
            wk = w * counts[k]
            for model, values in (("a", r.replicates_a), ("b", r.replicates_b)):
                expected = (ece_fixed_bins(clipped[model], wk, bins[model]) if metric == "ece"
                            else reference(y, clipped[model], wk))
                assert values[k] == pytest.approx(expected, abs=1e-12), (metric, model, k)


def test_bootstrap_direction_difference_and_tests(scored):
    y, p_a, p_b, w = scored
    for metric in stats.BOOTSTRAP_METRICS:
        r = stats.paired_bootstrap(metric, y, p_a, p_b, w, replicates=300, seed=0, alpha=0.1, margin=0.02)
        sign = 1 if metric in ("pr_auc", "roc_auc") else -1
        assert r.difference == pytest.approx(r.value_a - r.value_b)
        assert r.improvement == pytest.approx(sign * r.difference)
        d = r.improvements
        assert len(d) == r.replicates == 300
        np.testing.assert_allclose([r.ci_low, r.ci_high], np.quantile(d, [0.05, 0.95]))
        for bar, p in ((0.0, r.p_superiority), (-0.02, r.p_non_inferiority)):
            # the shifted-null p-value: share of bar + (d* - d) at or above d, with the +1
            assert p == pytest.approx((1 + np.sum(bar + d - r.improvement >= r.improvement)) / 301)
        assert r.p_non_inferiority <= r.p_superiority
        assert r.superior == (r.p_superiority <= 0.1)
        # Any margin from the same replicates: the gate tests several comparisons of one metric so.
        assert (r.p_value(), r.p_value(0.02)) == (r.p_superiority, r.p_non_inferiority)
        assert r.p_value(0.05) <= r.p_non_inferiority


def test_bootstrap_is_reproducible_and_shared_across_metrics(scored):
    y, p_a, p_b, w = scored
    many = stats.paired_bootstrap_many(["pr_auc", "brier"], y, p_a, p_b, w, replicates=100, seed=5)
    one = stats.paired_bootstrap("pr_auc", y, p_a, p_b, w, replicates=100, seed=5)
    np.testing.assert_array_equal(one.replicates_a, many["pr_auc"].replicates_a)
    shorter = stats.paired_bootstrap("pr_auc", y, p_a, p_b, w, replicates=30, seed=5)
    np.testing.assert_array_equal(shorter.replicates_b, one.replicates_b[:30])
    other = stats.paired_bootstrap("pr_auc", y, p_a, p_b, w, replicates=30, seed=6)
    assert not np.array_equal(other.replicates_b, shorter.replicates_b)


def test_poisson_counts_are_poisson_one():
    counts = stats.poisson_replicate_counts(np.zeros(40_000), 64, seed=9).ravel()
    values, observed = np.unique(counts, return_counts=True)
    expected = sps.poisson.pmf(np.arange(8), 1.0) * counts.size
    binned = np.r_[[observed[values == k].sum() for k in range(7)], observed[values >= 7].sum()]
    expected[7] = counts.size - expected[:7].sum()
    chi2 = np.sum((binned - expected) ** 2 / expected)
    assert sps.chi2.sf(chi2, df=7) > 1e-4
    assert counts.mean() == pytest.approx(1.0, abs=5 * 1 / math.sqrt(counts.size))


def test_bootstrap_false_promotion_rate_under_the_null():
    rng = np.random.default_rng(31)
    seeds = 200
    promoted = {"log_loss": 0, "pr_auc": 0}
    for seed in range(seeds):
        y, p_a, p_b = equally_good(rng, 1500)
        for metric, r in stats.paired_bootstrap_many(list(promoted), y, p_a, p_b, replicates=200, seed=seed).items():
            promoted[metric] += r.superior
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / seeds)
    for metric, count in promoted.items():
        assert count / seeds <= bound, (metric, count / seeds)


def test_bootstrap_non_inferiority_within_and_beyond_the_margin():
    rng = np.random.default_rng(17)
    n = 20_000
    logit = rng.normal(-1.0, 1.5, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    p_b = 1 / (1 + np.exp(-logit))                    # the true probabilities
    p_a = 1 / (1 + np.exp(-1.15 * logit))             # slightly over-confident: a bit worse
    r = stats.paired_bootstrap("log_loss", y, p_a, p_b, replicates=300, seed=0, margin=0.01)
    assert -0.01 < r.improvement < 0                  # worse, but well within the margin
    assert r.non_inferior and not r.superior
    tight = stats.paired_bootstrap("log_loss", y, p_a, p_b, replicates=300, seed=0, margin=-r.improvement / 4)
    assert not tight.non_inferior                     # a margin smaller than the loss fails


def test_bootstrap_input_errors(scored):
    y, p_a, p_b, w = scored
    with pytest.raises(ValueError, match="metric"):
        stats.paired_bootstrap("accuracy", y, p_a, p_b)
    with pytest.raises(ValueError, match="p_b: 2 scores"):
        stats.paired_bootstrap("brier", y, p_a, p_b[:2])
    with pytest.raises(ValueError, match="y: expected positive and negative"):
        stats.paired_bootstrap("brier", y, p_a, p_b, weights=np.zeros(len(y)))
    with pytest.raises(ValueError, match="y: expected positive and negative"):
        stats.paired_bootstrap("pr_auc", np.zeros(len(y)), p_a, p_b)
    with pytest.raises(ValueError, match="weights"):
        stats.paired_bootstrap("brier", y, p_a, p_b, weights=-w)
    with pytest.raises(ValueError, match="alpha"):
        stats.paired_bootstrap("brier", y, p_a, p_b, alpha=1.5)


# ---------------------------------------------------------------------------------------------
# McNemar, Holm, folds, Simpson
# ---------------------------------------------------------------------------------------------

def _decisions(table):
    """Rows whose decisions at 0.5 give ``table`` = [[both right, only a], [only b, both wrong]]."""
    (both, only_a), (only_b, neither) = table
    y = np.ones(both + only_a + only_b + neither, dtype=int)
    p_a = np.r_[np.full(both + only_a, 0.9), np.full(only_b + neither, 0.1)]
    p_b = np.r_[np.full(both, 0.9), np.full(only_a, 0.1), np.full(only_b, 0.9), np.full(neither, 0.1)]
    return y, p_a, p_b


@pytest.mark.parametrize("table", [[[40, 12], [3, 45]], [[300, 60], [35, 200]]])
def test_mcnemar_matches_statsmodels(table):
    y, p_a, p_b = _decisions(table)
    r = stats.mcnemar_at_threshold(y, p_a, p_b, threshold=0.5)
    np.testing.assert_array_equal(r.table, table)
    exact = table[0][1] + table[1][0] < 25
    reference = mcnemar(np.array(table), exact=exact, correction=True)
    assert r.exact == exact
    assert r.statistic == pytest.approx(reference.statistic)
    assert r.p_value == pytest.approx(reference.pvalue)
    assert r.p_value_a_better == pytest.approx(sps.binom.sf(table[0][1] - 1, r.discordant, 0.5))
    # Without weights the estimates are the plain ones, and se is Nam's paired-proportions SE.
    n, d = len(y), (table[0][1] - table[1][0]) / len(y)
    assert r.difference == pytest.approx(d) and r.accuracy_a - r.accuracy_b == pytest.approx(d)
    assert r.accuracy_a == pytest.approx((table[0][0] + table[0][1]) / n)
    assert r.se == pytest.approx(math.sqrt((table[0][1] + table[1][0]) / n**2 - d**2 / n))
    np.testing.assert_array_equal(r.weighted_table, table)


def test_mcnemar_weighted_counts_for_the_test_and_weights_for_the_estimates():
    table = [[300, 60], [35, 200]]
    y, p_a, p_b = _decisions(table)
    unit = stats.mcnemar_at_threshold(y, p_a, p_b)
    heavy = stats.mcnemar_at_threshold(y, p_a, p_b, weights=np.full(len(y), 50.0))
    assert heavy.p_value == unit.p_value and heavy.p_value_a_better == unit.p_value_a_better   # counts
    assert (heavy.difference, heavy.se) == pytest.approx((unit.difference, unit.se))          # scale-free
    np.testing.assert_allclose(heavy.weighted_table, 50.0 * np.array(table))
    # Integer weights: the estimates of repeated rows; the SE of a weighted sample, not of sum(w) rows.
    w = np.random.default_rng(4).integers(1, 4, size=len(y))
    weighted = stats.mcnemar_at_threshold(y, p_a, p_b, weights=w)
    rep = np.repeat(np.arange(len(y)), w)
    repeated = stats.mcnemar_at_threshold(y[rep], p_a[rep], p_b[rep])
    assert (weighted.accuracy_a, weighted.accuracy_b) == pytest.approx((repeated.accuracy_a, repeated.accuracy_b))
    assert weighted.difference == pytest.approx(repeated.difference)
    assert weighted.p_value == unit.p_value
    assert weighted.se > 1.2 * repeated.se
    ni = weighted.non_inferiority(0.02, alpha=0.05)
    assert ni.z == pytest.approx((weighted.difference + 0.02) / weighted.se)
    with pytest.raises(ValueError, match="total weight"):
        stats.mcnemar_at_threshold(y, p_a, p_b, weights=np.zeros(len(y)))


def test_holm_uses_holm_not_holm_sidak():
    p = {"auc": 0.01272, "log_loss": 0.2, "brier": 0.3, "slice:young": 0.4}
    result = stats.holm(p, alpha=0.05)
    assert result["auc"].adjusted_p == pytest.approx(4 * 0.01272)          # 0.05088 > 0.05
    assert not result["auc"].reject
    reject_hs, adjusted_hs, _, _ = multipletests(list(p.values()), alpha=0.05)   # the default 'hs'
    assert reject_hs[0] and adjusted_hs[0] < 0.05                           # Holm–Šidák would reject
    reject, adjusted, _, _ = multipletests(list(p.values()), alpha=0.05, method="holm")
    assert [d.adjusted_p for d in result.values()] == pytest.approx(list(adjusted))
    assert [d.reject for d in result.values()] == list(reject)
    assert stats.holm({}) == {}
    with pytest.raises(ValueError, match="p_values"):
        stats.holm({"x": 1.2})


def test_sign_and_wilcoxon_with_five_folds_all_positive():
    for test in ("sign", "wilcoxon"):
        r = stats.fold_consistency([0.01, 0.02, 0.005, 0.03, 0.012], alpha=0.05, test=test)
        assert r.p_value == pytest.approx(1 / 32)
        assert r.win_fraction == 1.0 and r.passed and r.reachable and r.min_folds == 5
    assert min_folds_for(0.05, one_sided=True) == 5
    assert min_folds_for(0.05, one_sided=False) == 6
    assert min_folds_for(1 / 32, one_sided=True) == 5
    assert min_folds_for(0.01, one_sided=True) == 7


def test_fold_consistency_losses_ties_and_unreachable_alpha():
    r = stats.fold_consistency([0.01, -0.02, 0.0, 0.03, 0.012], min_win_fraction=0.5, test="sign")
    assert (r.wins, r.losses, r.ties) == (3, 1, 1)
    assert r.win_fraction == pytest.approx(3.5 / 5)                        # a tie is half a win
    assert r.p_value == pytest.approx(sps.binom.sf(2, 4, 0.5))              # ties dropped: 3 of 4
    assert not r.passed
    w = stats.fold_consistency([0.01, -0.02, 0.0, 0.03, 0.012], test="wilcoxon")
    expected = sps.wilcoxon([0.01, -0.02, 0.03, 0.012], alternative="greater", method="exact").pvalue
    assert w.p_value == pytest.approx(expected)
    few = stats.fold_consistency([0.1, 0.2, 0.3, 0.4], alpha=0.05)
    assert few.p_value == pytest.approx(1 / 16) and not few.reachable and not few.passed
    tied = stats.fold_consistency([0.01, 0.01, 0.02, 0.03, -0.005, 0.04], test="wilcoxon")
    assert 0 < tied.p_value < 0.1                                           # exact permutation with ties
    with pytest.raises(ValueError, match="test"):
        stats.fold_consistency([0.1], test="t")


def test_simpson_pattern():
    assert stats.simpson_pattern(0.01, {"young": -0.002, "old": -0.004}) == stats.BETTER_OVERALL_WORSE_IN_EVERY_SLICE
    assert stats.simpson_pattern(-0.01, {"a": 0.002, "b": 0.1, "c": 0.3}) == stats.WORSE_OVERALL_BETTER_IN_EVERY_SLICE
    assert stats.simpson_pattern(0.01, {"young": -0.002, "old": 0.004}) is None
    assert stats.simpson_pattern(0.01, {"young": -0.002, "old": 0.0}) is None       # a zero breaks "every"
    assert stats.simpson_pattern(0.01, {"only": -0.002}) is None                     # one slice is no pattern
    assert stats.simpson_pattern(0.0, {"a": -0.002, "b": -0.1}) is None
    with pytest.raises(ValueError):
        stats.simpson_pattern(float("nan"), {"a": 1.0, "b": 2.0})
