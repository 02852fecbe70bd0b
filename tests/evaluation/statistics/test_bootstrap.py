"""The paired Poisson bootstrap (ml_tasks.evaluation.statistics.bootstrap): every replicate equal to
scikit-learn on its weights, the shifted-null tests, reproducibility, and error rates under the null."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from ml_tasks.evaluation.metrics import EPS, equal_mass_bins, expected_calibration_error
from ml_tasks.evaluation.statistics.bootstrap import BOOTSTRAP_METRICS, paired_bootstrap, paired_bootstrap_many
from ml_tasks.evaluation.statistics.poisson_counts import poisson_replicate_counts
from tests.evaluation.statistics.simulated import equally_good, latent_pair, sigmoid


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
    results = paired_bootstrap_many(list(BOOTSTRAP_METRICS), y, p_a, p_b, w, replicates=70, seed=3)
    clipped = {"a": np.clip(p_a, EPS, 1 - EPS), "b": np.clip(p_b, EPS, 1 - EPS)}
    counts = poisson_replicate_counts(p_a, 70, seed=3)
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


def test_bootstrap_signs_the_improvement_and_tests_against_the_shifted_null(scored):
    y, p_a, p_b, w = scored
    for metric in BOOTSTRAP_METRICS:
        r = paired_bootstrap(metric, y, p_a, p_b, w, replicates=300, seed=0, alpha=0.1, margin=0.02)
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
    many = paired_bootstrap_many(["pr_auc", "brier"], y, p_a, p_b, w, replicates=100, seed=5)
    one = paired_bootstrap("pr_auc", y, p_a, p_b, w, replicates=100, seed=5)
    np.testing.assert_array_equal(one.replicates_a, many["pr_auc"].replicates_a)
    shorter = paired_bootstrap("pr_auc", y, p_a, p_b, w, replicates=30, seed=5)
    np.testing.assert_array_equal(shorter.replicates_b, one.replicates_b[:30])
    other = paired_bootstrap("pr_auc", y, p_a, p_b, w, replicates=30, seed=6)
    assert not np.array_equal(other.replicates_b, shorter.replicates_b)


def test_bootstrap_false_promotion_rate_under_the_null():
    rng = np.random.default_rng(31)
    seeds = 200
    promoted = {"log_loss": 0, "pr_auc": 0}
    for seed in range(seeds):
        y, p_a, p_b = equally_good(rng, 1500)
        for metric, r in paired_bootstrap_many(list(promoted), y, p_a, p_b, replicates=200, seed=seed).items():
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
    r = paired_bootstrap("log_loss", y, p_a, p_b, replicates=300, seed=0, margin=0.01)
    assert -0.01 < r.improvement < 0                  # worse, but well within the margin
    assert r.non_inferior and not r.superior
    tight = paired_bootstrap("log_loss", y, p_a, p_b, replicates=300, seed=0, margin=-r.improvement / 4)
    assert not tight.non_inferior                     # a margin smaller than the loss fails


def test_bootstrap_input_errors_name_the_argument(scored):
    y, p_a, p_b, w = scored
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap("accuracy", y, p_a, p_b)
    with pytest.raises(ValueError, match="p_b: 2 scores"):
        paired_bootstrap("brier", y, p_a, p_b[:2])
    with pytest.raises(ValueError, match="y: expected positive and negative"):
        paired_bootstrap("brier", y, p_a, p_b, weights=np.zeros(len(y)))
    with pytest.raises(ValueError, match="y: expected positive and negative"):
        paired_bootstrap("pr_auc", np.zeros(len(y)), p_a, p_b)
    with pytest.raises(ValueError, match="weights"):
        paired_bootstrap("brier", y, p_a, p_b, weights=-w)
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap("brier", y, p_a, p_b, alpha=1.5)


def test_superiority_with_a_minimum_improvement_shifts_the_null_above_zero(scored):
    y, p_a, p_b, w = scored
    r = paired_bootstrap("log_loss", y, p_a, p_b, w, replicates=300, seed=2)
    assert r.p_superior(0.0) == r.p_superiority == r.p_value(0.0)
    d = r.improvements
    for gain in (0.001, 0.01, abs(r.improvement)):
        expected = (1 + np.count_nonzero(d >= 2 * r.improvement - gain)) / (1 + len(d))
        assert r.p_superior(gain) == expected
    assert r.p_superior(abs(r.improvement) * 2) >= r.p_superior(0.0)
    with pytest.raises(ValueError, match="min_improvement"):
        r.p_superior(-0.01)
