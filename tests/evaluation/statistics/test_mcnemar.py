"""McNemar's test and the weighted accuracy difference (ml_tasks.evaluation.statistics.mcnemar): equal to
statsmodels on counts, weights for the estimates only."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

from ml_tasks.evaluation.statistics.mcnemar import accuracy_test, mcnemar_at_threshold


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
    r = mcnemar_at_threshold(y, p_a, p_b, threshold=0.5)
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
    unit = mcnemar_at_threshold(y, p_a, p_b)
    heavy = mcnemar_at_threshold(y, p_a, p_b, weights=np.full(len(y), 50.0))
    assert heavy.p_value == unit.p_value and heavy.p_value_a_better == unit.p_value_a_better   # counts
    assert (heavy.difference, heavy.se) == pytest.approx((unit.difference, unit.se))          # scale-free
    np.testing.assert_allclose(heavy.weighted_table, 50.0 * np.array(table))
    # Integer weights: the estimates of repeated rows; the SE of a weighted sample, not of sum(w) rows.
    w = np.random.default_rng(4).integers(1, 4, size=len(y))
    weighted = mcnemar_at_threshold(y, p_a, p_b, weights=w)
    rep = np.repeat(np.arange(len(y)), w)
    repeated = mcnemar_at_threshold(y[rep], p_a[rep], p_b[rep])
    assert (weighted.accuracy_a, weighted.accuracy_b) == pytest.approx((repeated.accuracy_a, repeated.accuracy_b))
    assert weighted.difference == pytest.approx(repeated.difference)
    assert weighted.p_value == unit.p_value
    assert weighted.se > 1.2 * repeated.se
    ni = weighted.non_inferiority(0.02, alpha=0.05)
    assert ni.z == pytest.approx((weighted.difference + 0.02) / weighted.se)
    with pytest.raises(ValueError, match="total weight"):
        mcnemar_at_threshold(y, p_a, p_b, weights=np.zeros(len(y)))


def test_accuracy_superiority_with_a_minimum_improvement_is_a_z_test_against_it():
    y, p_a, p_b = _decisions([[300, 60], [35, 200]])
    r = mcnemar_at_threshold(y, p_a, p_b)
    *_, p_count, test_count = accuracy_test(y, p_a, p_b, 0.5, 0.0, 0.05)
    *_, p_gain, test_gain = accuracy_test(y, p_a, p_b, 0.5, 0.0, 0.05, min_improvement=0.03)
    assert test_count.startswith("McNemar") and p_count == r.p_value_a_better
    assert test_gain.startswith("paired z") and p_gain == r.superiority(0.05, 0.03).p_value
    assert p_gain == pytest.approx(sps.norm.sf((r.difference - 0.03) / r.se))
    with pytest.raises(ValueError, match="not both"):
        accuracy_test(y, p_a, p_b, 0.5, 0.01, 0.05, min_improvement=0.03)
