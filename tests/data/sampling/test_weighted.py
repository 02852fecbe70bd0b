"""Weighted mode (priority sampling): exact quotas, Horvitz-Thompson weights, unbiased totals,
inclusion in proportion to the importance weight, bad weights named."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.core.columns import WEIGHT
from ml_tasks.data.sampling import reservoir_sample_batches
from tests.data.sampling.population import Z, pc_equal, sample_many, stratum_counts, stratum_of

WEIGHTED_SEEDS = 120  # the weighted checks use errors estimated from the seeds themselves


@pytest.fixture(scope="module")
def weighted_runs(population, quotas):
    """The weighted sampler (importance column ``w``) over WEIGHTED_SEEDS seeds."""
    return sample_many(population, quotas, WEIGHTED_SEEDS, importance_weight="w")


def test_weighted_mode_keeps_exact_quotas_and_horvitz_thompson_weights(weighted_runs, quotas, counts):
    _, results = weighted_runs
    for result in results:
        assert stratum_counts(result.table) == quotas
        weight = result.table.column(WEIGHT).to_numpy()
        assert np.all(weight >= 1.0)
        for key, stat in result.strata.items():
            assert stat.population == counts[key] and stat.sampled == quotas[key]
            assert stat.weight == pytest.approx(weight[pc_equal(result.table, key)].mean())


def test_weighted_mode_totals_are_unbiased(weighted_runs, population, quotas):
    """sum(_weight * x) estimates each stratum's total of x, and sum(_weight) its row count:
    the mean over the seeds is within Z standard errors (from the seeds) of the truth."""
    _, results = weighted_runs
    stratum, keys = stratum_of(population)
    x = population.column("x").to_numpy()
    for h, key in enumerate(keys):
        truth = {"x": x[stratum == h].sum(), "rows": float((stratum == h).sum())}
        estimates = {"x": [], "rows": []}
        for result in results:
            mask = pc_equal(result.table, key)
            weight = result.table.column(WEIGHT).to_numpy()[mask]
            estimates["x"].append((weight * result.table.column("x").to_numpy()[mask]).sum())
            estimates["rows"].append(weight.sum())
        for name, values in estimates.items():
            values = np.array(values)
            se = values.std(ddof=1) / math.sqrt(len(values))
            assert abs(values.mean() - truth[name]) <= Z * max(se, 1e-9 * truth[name]), \
                (key, name, values.mean(), truth[name], se)


def test_weighted_mode_is_unbiased_even_for_tiny_quotas():
    """With k = 3 of 40 rows, using the k-th instead of the (k+1)-th largest priority as tau (a
    classic off-by-one) would bias the totals by tens of percent; exact priority sampling
    weights are unbiased for any k."""
    seeds = 2_000
    rng = np.random.default_rng(8)
    importance = rng.uniform(0.2, 5.0, 40)
    x = importance * rng.uniform(0.5, 1.5, 40) + rng.uniform(0, 3, 40)
    table = pa.table({"g": np.zeros(40, dtype=np.int64), "x": x, "imp": importance})
    batches = table.to_batches(max_chunksize=16)
    estimates = np.empty((seeds, 2))
    for seed in range(seeds):
        result = reservoir_sample_batches(batches, ["g"], {(0,): 3}, seed=seed, importance_weight="imp")
        weight = result.table.column(WEIGHT).to_numpy()
        estimates[seed] = (weight * result.table.column("x").to_numpy()).sum(), weight.sum()
    for column, truth in zip(estimates.T, (x.sum(), 40.0), strict=True):
        se = column.std(ddof=1) / math.sqrt(seeds)
        assert abs(column.mean() - truth) <= Z * se, (column.mean(), truth, se)


def test_weighted_mode_includes_rows_in_proportion_to_their_weight(weighted_runs, population, quotas, counts):
    """In the big strata no row is certain (w < tau), so P(include) = E[min(1, w / tau')] is
    exactly proportional to w: rows of weight 3 are included three times as often."""
    included, _ = weighted_runs
    stratum, keys = stratum_of(population)
    w = population.column("w").to_numpy()
    for key in [(0, "web"), (0, "branch")]:
        h = keys.index(key)
        heavy, light = included[(stratum == h) & (w == 3.0)], included[(stratum == h) & (w == 1.0)]
        rate_heavy, rate_light = heavy.mean(), light.mean()
        ratio = rate_heavy / rate_light
        # Delta method with Poisson counts (within a run the counts are negatively correlated,
        # which only makes the true error smaller).
        se = ratio * math.sqrt(1 / heavy.sum() + 1 / light.sum())
        assert abs(ratio - 3.0) <= Z * se, (key, ratio, se)


def test_weighted_mode_rejects_bad_weights_naming_the_column():
    base = {"g": [0, 0, 1, 1], "x": [1.0, 2.0, 3.0, 4.0]}
    for bad in ([1.0, 0.0, 1.0, 1.0], [1.0, -2.0, 1.0, 1.0], [1.0, float("nan"), 1.0, 1.0],
                [1.0, float("inf"), 1.0, 1.0], [1.0, None, 1.0, 1.0]):
        table = pa.table({**base, "imp": pa.array(bad, pa.float64())})
        with pytest.raises(ValueError, match="importance weight column 'imp'"):
            reservoir_sample_batches(table.to_batches(), ["g"], {(0,): 1, (1,): 1}, seed=0, importance_weight="imp")


def test_weighted_mode_keeps_small_strata_whole_with_weight_one():
    table = pa.table({"g": [0] * 5 + [1] * 50, "imp": np.linspace(0.5, 5.0, 55)})
    result = reservoir_sample_batches(table.to_batches(max_chunksize=7), ["g"], {(0,): 10, (1,): 5}, seed=3,
                                      importance_weight="imp")
    weights = result.table.column(WEIGHT).to_numpy()
    groups = result.table.column("g").to_numpy()
    assert np.all(weights[groups == 0] == 1.0) and (groups == 0).sum() == 5
    assert (groups == 1).sum() == 5 and np.all(weights[groups == 1] >= 1.0)

