"""Uniform mode (Algorithm L): exact quotas, inclusion probabilities, unbiased reweighting.

Statistics, not only shapes: over many seeds every stratum gets exactly its quota, every row's
inclusion frequency is its quota / population within binomial error (including the rows where
Algorithm L's fill ends and rows on batch boundaries, where an off-by-one would show), and the
reweighted label rate, mean and totals match the population within bounds derived from the
standard error.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from ml_tasks.core.columns import WEIGHT
from ml_tasks.data.sampling import StratifiedReservoir, StratumStats
from tests.data.sampling.population import N, Z, pc_equal, sample_many, stratum_counts, stratum_of

SEEDS = 200


@pytest.fixture(scope="module")
def uniform_runs(population, quotas):
    """The uniform sampler over SEEDS seeds: inclusion counts per row, per-run estimates."""
    included, results = sample_many(population, quotas, SEEDS)
    runs = []
    for result in results:
        weight = result.table.column(WEIGHT).to_numpy()
        x = result.table.column("x").to_numpy()
        runs.append({
            "result": result,
            "label_rate": np.average(result.table.column("label").to_numpy(), weights=weight),
            "mean_x": np.average(x, weights=weight),
            "rate_x_over_150": np.average(x > 150, weights=weight),
        })
    return included, runs


# ---------------------------------------------------------------------------------------------
# Uniform mode: exact quotas, inclusion probabilities, unbiased reweighting
# ---------------------------------------------------------------------------------------------


def test_every_stratum_gets_exactly_its_quota_and_the_inverse_inclusion_weight(uniform_runs, counts, quotas):
    _, runs = uniform_runs
    for run in runs:
        result = run["result"]
        assert result.rows_scanned == N
        assert {k: s.sampled for k, s in result.strata.items()} == quotas
        assert {k: s.population for k, s in result.strata.items()} == counts
        got = stratum_counts(result.table)
        assert got == quotas
        # Every row of a stratum carries population / sampled, and they add up to the population.
        table = result.table
        for key, quota in quotas.items():
            mask = pc_equal(table, key)
            weights = table.column(WEIGHT).to_numpy()[mask]
            assert np.allclose(weights, counts[key] / quota)
            assert result.strata[key] == StratumStats(counts[key], quota, counts[key] / quota)
        assert table.column(WEIGHT).to_numpy().sum() == pytest.approx(N)


def test_sample_rows_keep_their_original_order_and_columns(uniform_runs, population):
    _, runs = uniform_runs
    table = runs[0]["result"].table
    assert table.column_names == [*population.column_names, WEIGHT]
    assert table.schema.field("segment").type == pa.string()
    assert table.schema.field(WEIGHT).type == pa.float64()
    rows = table.column("row").to_numpy()
    assert np.all(np.diff(rows) > 0)
    # The sampled rows are the population's rows, unchanged.
    assert table.drop_columns([WEIGHT]).equals(population.take(pa.array(rows)))


def test_every_row_is_included_with_probability_quota_over_population(uniform_runs, population, quotas, counts):
    """Chi-square over all rows of each stratum, plus binomial tests on the rows where an
    Algorithm L off-by-one would show: the first rows, the last fill position (quota - 1), the
    first replacement candidates (quota, quota + 1), the middle and the last row."""
    included, _ = uniform_runs
    stratum, keys = stratum_of(population)
    tracked_p_values = []
    for h, key in enumerate(keys):
        members = np.flatnonzero(stratum == h)
        p = quotas[key] / counts[key]
        c = included[members]
        expected, variance = SEEDS * p, SEEDS * p * (1 - p)
        # Sum of squared z-scores: mean n, variance n * (2 + 1/variance) (binomial kurtosis).
        chi = float(((c - expected) ** 2 / variance).sum())
        n = len(members)
        assert abs(chi - n) <= Z * math.sqrt(n * (2 + 1 / variance)), (key, chi, n)
        k = quotas[key]
        for position in {0, 1, k - 1, k, k + 1, n // 2, n - 1}:
            count = int(c[position])
            tracked_p_values.append((min(1.0, 2 * min(stats.binom.cdf(count, SEEDS, p),
                                                       stats.binom.sf(count - 1, SEEDS, p))), key, position))
    worst = min(tracked_p_values)
    assert worst[0] > 1e-6 / len(tracked_p_values) * 100, worst  # Bonferroni, family-wise 1e-4


def test_reweighted_label_rate_equals_the_population_rate_exactly(uniform_runs, population):
    """The label is a strata column, so reweighting recovers its rate with no sampling error."""
    _, runs = uniform_runs
    truth = population.column("label").to_numpy().mean()
    assert all(run["label_rate"] == pytest.approx(truth, rel=1e-12) for run in runs)


def test_reweighted_mean_and_rate_match_the_population_within_standard_error(uniform_runs, population, counts,
                                                                             quotas):
    """For columns the strata do not fix (the mean of x, the share of rows with x > 150):
    per-run estimates stay within Z standard errors of the population value, their mean over
    the seeds within Z standard errors of the mean, and their spread matches the stratified
    simple-random-sampling variance computed from the population."""
    _, runs = uniform_runs
    stratum, keys = stratum_of(population)
    x = population.column("x").to_numpy()
    for values, estimate in ((x, "mean_x"), ((x > 150).astype(float), "rate_x_over_150")):
        truth = values.mean()
        variance = 0.0
        for h, key in enumerate(keys):
            y = values[stratum == h]
            n_h, big_n = quotas[key], counts[key]
            variance += (big_n / N) ** 2 * (1 - n_h / big_n) * y.var(ddof=1) / n_h
        se = math.sqrt(variance)
        got = np.array([run[estimate] for run in runs])
        assert np.all(np.abs(got - truth) <= Z * se), (estimate, truth, se, got.min(), got.max())
        assert abs(got.mean() - truth) <= Z * se / math.sqrt(SEEDS), (estimate, got.mean(), truth)
        # Sample variance of SEEDS draws: relative SE sqrt(2 / (SEEDS - 1)).
        ratio = got.var(ddof=1) / variance
        assert abs(ratio - 1) <= Z * math.sqrt(2 / (SEEDS - 1)), (estimate, ratio)


def test_inclusion_is_uniform_across_batch_boundaries_and_the_end_of_the_fill():
    """A small population sampled many times, so every single position is tested tightly:
    two interleaved strata cut into irregular batches (so boundaries fall at every kind of
    place, including inside and right after Algorithm L's fill), per-position binomial tests
    on the rows around every boundary and the fill, chi-square over all rows, and no drift
    between the first and second half of a stratum."""
    seeds, size = 1_000, 600
    rng = np.random.default_rng(5)
    group = np.where(rng.random(size) < 2 / 3, "a", "b")
    table = pa.table({"g": group, "i": np.arange(size)})
    quotas = {("a",): 40, ("b",): 25}
    cuts = np.unique(np.concatenate(([0, size], np.cumsum(rng.integers(1, 80, size)))))
    cuts = cuts[cuts <= size]
    batches = [table.slice(a, b - a).to_batches()[0] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    included = np.zeros(size, dtype=np.int64)
    for seed in range(seeds):
        sampler = StratifiedReservoir(["g"], quotas, seed=seed)
        for batch in batches:
            sampler.update(batch)
        included[sampler.result().table.column("i").to_numpy()] += 1
    boundary = {j for cut in cuts for j in (cut - 1, cut) if 0 <= j < size}
    p_values = []
    for name, k in (("a", 40), ("b", 25)):
        members = np.flatnonzero(group == name)
        p = k / len(members)
        c = included[members]
        assert c.sum() == seeds * k
        checked = {0, 1, k - 2, k - 1, k, k + 1, len(members) - 1}
        checked |= {r for r, row in enumerate(members) if row in boundary}
        for position in checked:
            count = int(c[position])
            p_values.append(2 * min(stats.binom.cdf(count, seeds, p), stats.binom.sf(count - 1, seeds, p)))
        # Chi-square with n - 1 degrees of freedom (the counts sum to seeds * k exactly).
        n = len(members)
        chi = float(((c - seeds * p) ** 2 / (seeds * p * (1 - p))).sum()) * (n - 1) / n
        assert stats.chi2.sf(chi, n - 1) > 1e-6 and stats.chi2.cdf(chi, n - 1) > 1e-6, (name, chi, n)
        half = n // 2
        diff = c[:half].mean() - c[half:].mean()
        se = math.sqrt(seeds * p * (1 - p) * (1 / half + 1 / (n - half)))
        assert abs(diff) <= Z * se, (name, diff, se)
    assert min(p_values) > 1e-4 / len(p_values), min(p_values)  # Bonferroni, family-wise 1e-4


def test_rows_entering_the_reservoir_grow_like_k_log_n_over_k_not_like_n():
    """Algorithm L touches a stratum's rows only at scheduled replacements: row t enters with
    probability min(1, k/t), independently, so k (1 + H_N - H_k) rows enter (about
    k (1 + ln(N/k))), each for three random draws - not N."""
    rows, k, seeds = 400_000, 200, 20
    table = pa.table({"g": np.zeros(rows, dtype=np.int64)})
    entered, copied = [], []
    for seed in range(seeds):
        sampler = StratifiedReservoir(["g"], {(0,): k}, seed=seed)
        for batch in table.to_batches(max_chunksize=65_536):
            sampler.update(batch)
        entered.append(sampler.rows_entered)
        copied.append(sampler.rows_copied)
    t = np.arange(k + 1, rows + 1)
    expected = k + (k / t).sum()
    se = math.sqrt(((k / t) * (1 - k / t)).sum() / seeds)
    assert abs(np.mean(entered) - expected) <= Z * se, (np.mean(entered), expected, se)
    assert expected < rows / 200
    # Rows replaced again within their batch are never copied: at most k per batch.
    assert all(c <= e and c <= k * 7 for c, e in zip(copied, entered, strict=True))

