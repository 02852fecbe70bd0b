"""DeLong's test (ml_tasks.evaluation.statistics.delong): exact against a brute-force pair count and
scikit-learn, weights as sampling weights, the Wald tests, error rates under the null and power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from ml_tasks.evaluation.statistics.bootstrap import paired_bootstrap
from ml_tasks.evaluation.statistics.delong import delong_paired
from tests.evaluation.statistics.simulated import binormal, equally_good, latent_pair


def delong_slow(y, scores, weights=None):
    """DeLong from the Mann–Whitney kernel over all (positive, negative) pairs: O(m n) memory.

    ``scores`` is ``(k, n)``. Unweighted: the textbook formulas (DeLong et al. 1988),
    ``S = cov(V10) / m + cov(V01) / n`` with ``ddof=1``. Weighted: the formula documented in
    ``delong_paired`` written out with explicit pair sums. Returns ``(auc, S)``.
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


@pytest.fixture(scope="module")
def tied_data():
    y, a, b = latent_pair(np.random.default_rng(7), 700, prevalence=0.35, separation=0.9, noise_a=0.6, noise_b=0.9)
    return y, np.round(a, 1), np.round(b, 2)                 # many ties, within and across classes


def test_delong_matches_slow_reference_unweighted(tied_data):
    y, a, b = tied_data
    fast = delong_paired(y, a, b)
    auc, s = delong_slow(y, np.vstack([a, b]))
    assert fast.auc_a == pytest.approx(auc[0], abs=1e-12) and fast.auc_b == pytest.approx(auc[1], abs=1e-12)
    np.testing.assert_allclose(fast.covariance, s, rtol=0, atol=1e-12)
    assert fast.variance == pytest.approx(s[0, 0] + s[1, 1] - 2 * s[0, 1], abs=1e-8)
    assert fast.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    # Unit weights take the same path: identical numbers.
    unit = delong_paired(y, a, b, weights=np.ones(len(y)))
    assert (unit.difference, unit.variance) == (fast.difference, fast.variance)


def test_delong_weighted_matches_slow_reference_and_sklearn(tied_data):
    y, a, b = tied_data
    rng = np.random.default_rng(3)
    w = rng.choice([0.5, 1.0, 2.0, 7.5], size=len(y))
    w[:4] = 0.0                                              # zero-weight rows drop out
    fast = delong_paired(y, a, b, weights=w)
    auc, s = delong_slow(y, np.vstack([a, b]), w)
    np.testing.assert_allclose([fast.auc_a, fast.auc_b], auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.covariance, s, rtol=0, atol=1e-12)
    assert fast.variance == pytest.approx(s[0, 0] + s[1, 1] - 2 * s[0, 1], abs=1e-8)
    assert fast.auc_b == pytest.approx(roc_auc_score(y, b, sample_weight=w), abs=1e-12)


def test_integer_weights_repeat_rows_for_the_auc_but_not_for_the_variance(tied_data):
    y, a, b = tied_data
    w = np.random.default_rng(5).integers(1, 4, size=len(y))
    weighted = delong_paired(y, a, b, weights=w)
    rep = np.repeat(np.arange(len(y)), w)
    repeated = delong_paired(y[rep], a[rep], b[rep])
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
    plain = delong_paired(y, a, b)
    scaled = delong_paired(y, a, b, weights=np.full(len(y), 3.0))
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
        r = delong_paired(y[keep], a[keep], b[keep], weights=1.0 / pi[keep])
        diffs.append(r.difference)
        ses.append(r.se)
        rep = np.repeat(np.flatnonzero(keep), np.round(1.0 / pi[keep]).astype(int))
        naive.append(delong_paired(y[rep], a[rep], b[rep]).se)
    ratio = np.std(diffs, ddof=1) / np.sqrt(np.mean(np.square(ses)))
    assert 0.86 < ratio < 1.14, ratio                       # SD of an SD from 300 draws: ~4%
    assert np.mean(naive) < 0.75 * np.std(diffs, ddof=1)    # frequency weights would be overconfident


def test_delong_interval_and_one_sided_tests_are_wald_on_the_difference():
    rng = np.random.default_rng(2)
    y, a, b = binormal(rng, 4000, 0.78, 0.75)
    r = delong_paired(y, a, b)
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
    r = delong_paired(y, a, a)
    assert r.difference == 0.0 and r.se == 0.0 and r.p_value == 1.0
    assert not r.superiority().passed
    assert r.non_inferiority(0.001).passed       # exactly equal is within any positive margin


def test_delong_false_promotion_rate_under_the_null():
    rng = np.random.default_rng(20240601)
    seeds = 400
    promoted = 0
    for _ in range(seeds):
        y, p_a, p_b = equally_good(rng, 2000)
        promoted += delong_paired(y, p_a, p_b).superiority(0.05).passed
    rate = promoted / seeds
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / seeds), rate


def test_delong_power_for_a_real_improvement_of_two_points():
    rng = np.random.default_rng(99)
    seeds = 100
    promoted = 0
    for _ in range(seeds):
        y, a, b = binormal(rng, 50_000, 0.77, 0.75, prevalence=0.1, rho=0.6)
        promoted += delong_paired(y, a, b).superiority(0.05).passed
    assert promoted / seeds >= 0.8


def test_delong_non_inferiority_within_and_beyond_the_margin():
    rng = np.random.default_rng(8)
    y, a, b = binormal(rng, 200_000, 0.795, 0.80, prevalence=0.2, rho=0.7)   # a is 0.005 worse
    r = delong_paired(y, a, b)
    assert r.se < 0.002
    assert r.non_inferiority(margin=0.01).passed            # within the margin
    assert not r.non_inferiority(margin=0.001).passed       # beyond it
    assert not r.superiority().passed


def test_delong_p_value_agrees_with_a_large_paired_bootstrap():
    rng = np.random.default_rng(12)
    y, a, b = binormal(rng, 4000, 0.765, 0.75, rho=0.5)
    r = delong_paired(y, a, b)
    p_a, p_b = sps.norm.cdf(a - 1), sps.norm.cdf(b - 1)      # monotone: same AUCs, in (0, 1)
    boot = paired_bootstrap("roc_auc", y, p_a, p_b, replicates=2000, seed=1)
    assert boot.value_a == pytest.approx(r.auc_a, abs=1e-12)
    assert boot.se == pytest.approx(r.se, rel=0.1)
    assert boot.p_superiority == pytest.approx(r.superiority().p_value, abs=0.02)


def test_delong_input_errors_name_the_argument():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.linspace(0, 1, 6)
    with pytest.raises(ValueError, match="y: expected binary"):
        delong_paired(y * 2, s, s)
    with pytest.raises(ValueError, match="score_b: 5 scores for 6"):
        delong_paired(y, s, s[:5])
    with pytest.raises(ValueError, match="score_a: expected finite"):
        delong_paired(y, np.r_[np.nan, s[1:]], s)
    with pytest.raises(ValueError, match="weights"):
        delong_paired(y, s, s, weights=-np.ones(6))
    with pytest.raises(ValueError, match="at least 2 positive"):
        delong_paired(y, s, s, weights=[1, 1, 1, 0, 0, 1])


def test_a_zero_variance_with_a_difference_uses_the_worst_case_se_of_the_smaller_class():
    y = np.r_[np.ones(8), np.zeros(20)]
    perfect = np.r_[np.linspace(0.6, 0.9, 8), np.linspace(0.1, 0.5, 20)]
    constant = np.full(28, 0.3)
    plain = delong_paired(y, perfect, constant)
    assert plain.variance == 0.0 and plain.se_bounded and plain.se == pytest.approx(1 / math.sqrt(8))
    assert plain.z == pytest.approx(0.5 * math.sqrt(8)) and 0.0 < plain.p_value < 1.0
    # Under weights the smaller class's Kish effective size (sum w)^2 / sum w^2 counts.
    w = np.r_[np.array([1.0, 1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0]), np.ones(20)]
    weighted = delong_paired(y, perfect, constant, weights=w)
    assert weighted.se_bounded and weighted.se == pytest.approx(1 / math.sqrt(20**2 / 68))
    # Identical models keep their exact zero: no bound, the difference is 0 in any resample.
    assert not delong_paired(y, perfect, perfect).se_bounded


def test_superiority_with_a_minimum_improvement_tests_the_gain_against_it():
    rng = np.random.default_rng(2)
    y, a, b = binormal(rng, 4000, 0.78, 0.75)
    r = delong_paired(y, a, b)
    at_zero, at_gain = r.superiority(0.05), r.superiority(0.05, min_improvement=0.02)
    assert at_zero == r.non_inferiority(0.0, 0.05)                  # the old numbers, bit for bit
    assert at_gain.z == pytest.approx((r.difference - 0.02) / r.se) and at_gain.p_value > at_zero.p_value
    assert at_gain.margin == -0.02
    with pytest.raises(ValueError, match="min_improvement"):
        r.superiority(0.05, min_improvement=-0.01)
