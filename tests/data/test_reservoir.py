"""The one-pass stratified reservoir sampler (ml_tasks.data.reservoir).

Statistics, not only shapes: on a known synthetic population (200k rows, a ~5 % label, a
segment with a rare level) and over many seeds, every stratum gets exactly its quota, every
row's inclusion frequency is its quota / population within binomial error (including the rows
where Algorithm L's fill ends and rows on batch boundaries, where an off-by-one would show),
and the reweighted label rate, mean and totals match the population within bounds derived from
the standard error. Tolerances are z-scores on standard errors (computed from the population
or from the seeds), never bare magic numbers; with z = 5 a correct sampler fails one of these
checks about once in a million runs.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ml_tasks.core.columns import WEIGHT
from ml_tasks.data.reservoir import (
    StratifiedReservoir,
    StratumStats,
    allocate,
    count_strata_parquet,
    reservoir_sample_batches,
    reservoir_sample_parquet,
)

Z = 5.0  # two-sided z bound: a false alarm per check has probability ~6e-7
N = 200_000
STRATA = ["label", "segment"]
SEGMENTS = np.array(["web", "branch", "mobile"])
SEEDS = 200
WEIGHTED_SEEDS = 120  # the weighted checks use errors estimated from the seeds themselves
BATCH = 7_919  # odd, so batch boundaries fall at different places in every stratum


def make_population(rows: int = N, seed: int = 20_240_601) -> pa.Table:
    rng = np.random.default_rng(seed)
    segment = rng.choice(3, rows, p=[0.62, 0.35, 0.03])  # "mobile" is the rare level
    label = (rng.random(rows) < np.array([0.04, 0.05, 0.12])[segment]).astype(np.int64)
    x = rng.gamma(2.0, 50.0, rows) + 40.0 * label + 25.0 * (segment == 2)
    importance = rng.choice([1.0, 3.0], rows)
    return pa.table({
        "row": np.arange(rows, dtype=np.int64),
        "label": label,
        "segment": pa.array(SEGMENTS[segment]),
        "x": x,
        "w": importance,
    })


def stratum_counts(table: pa.Table) -> dict[tuple, int]:
    grouped = table.group_by(STRATA).aggregate([("row", "count")])
    return {(lab, seg): n for lab, seg, n in zip(*(grouped.column(c).to_pylist() for c in [*STRATA, "row_count"]))}


def stratum_of(table: pa.Table) -> tuple[np.ndarray, list[tuple]]:
    """Stratum index per row and the keys, for numpy bookkeeping in the tests."""
    keys = sorted(stratum_counts(table))
    index = {k: i for i, k in enumerate(keys)}
    pairs = zip(table.column("label").to_pylist(), table.column("segment").to_pylist())
    return np.array([index[p] for p in pairs]), keys


@pytest.fixture(scope="module")
def population() -> pa.Table:
    return make_population()


@pytest.fixture(scope="module")
def counts(population) -> dict[tuple, int]:
    return stratum_counts(population)


@pytest.fixture(scope="module")
def quotas(counts) -> dict[tuple, int]:
    return allocate(counts, 2_000, floor=150)


@pytest.fixture(scope="module")
def uniform_runs(population, quotas):
    """The uniform sampler over SEEDS seeds: inclusion counts per row, per-run estimates."""
    batches = population.to_batches(max_chunksize=BATCH)
    included = np.zeros(N, dtype=np.int64)
    runs = []
    for seed in range(SEEDS):
        result = reservoir_sample_batches(batches, STRATA, quotas, seed=seed)
        rows = result.table.column("row").to_numpy()
        included[rows] += 1
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


def pc_equal(table: pa.Table, key: tuple) -> np.ndarray:
    return (np.asarray(table.column("label").to_numpy()) == key[0]) & (
        np.asarray(table.column("segment").to_pylist(), dtype=object) == key[1])


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
    batches = [table.slice(a, b - a).to_batches()[0] for a, b in zip(cuts[:-1], cuts[1:])]
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
        checked = {0, 1, k - 2, k - 1, k, k + 1, len(members) - 1} | {r for r, row in enumerate(members) if row in boundary}
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
    assert all(c <= e and c <= k * 7 for c, e in zip(copied, entered))


# ---------------------------------------------------------------------------------------------
# Weighted mode (priority sampling)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weighted_runs(population, quotas):
    batches = population.to_batches(max_chunksize=BATCH)
    included = np.zeros(N, dtype=np.int64)
    results = []
    for seed in range(WEIGHTED_SEEDS):
        result = reservoir_sample_batches(batches, STRATA, quotas, seed=seed, importance_weight="w")
        included[result.table.column("row").to_numpy()] += 1
        results.append(result)
    return included, results


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
            assert abs(values.mean() - truth[name]) <= Z * max(se, 1e-9 * truth[name]), (key, name, values.mean(), truth[name], se)


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
    for column, truth in zip(estimates.T, (x.sum(), 40.0)):
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


# ---------------------------------------------------------------------------------------------
# Memory, reproducibility, the Parquet entry point
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("importance_weight", [None, "w"])
def test_candidate_buffer_stays_within_three_times_the_sample_whatever_the_stream_length(population, quotas,
                                                                                          importance_weight):
    sample = sum(quotas.values())
    peaks = []
    for repeats in (1, 4):  # 200k rows, then 800k rows through the same reservoirs
        sampler = StratifiedReservoir(STRATA, quotas, seed=1, importance_weight=importance_weight)
        for _ in range(repeats):
            for batch in population.to_batches(max_chunksize=1_000):
                sampler.update(batch)
                assert sampler.buffer_rows <= 3 * sampler.sample_size
        assert sampler.compactions > 0  # the bound holds because the buffer was compacted
        result = sampler.result()
        assert result.table.num_rows == sample
        assert result.peak_buffer_rows == sampler.peak_buffer_rows <= 3 * sample
        peaks.append(sampler.peak_buffer_rows)
    assert peaks[1] <= 3 * sample and peaks[1] < 4 * peaks[0]


def test_same_seed_gives_the_same_sample_and_another_seed_another(population, quotas):
    batches = population.to_batches(max_chunksize=BATCH)
    for importance_weight in (None, "w"):
        first = reservoir_sample_batches(batches, STRATA, quotas, seed=11, importance_weight=importance_weight)
        again = reservoir_sample_batches(batches, STRATA, quotas, seed=11, importance_weight=importance_weight)
        other = reservoir_sample_batches(batches, STRATA, quotas, seed=12, importance_weight=importance_weight)
        assert first.table.equals(again.table) and first.strata == again.strata
        assert not first.table.column("row").equals(other.table.column("row"))


def test_the_sample_does_not_depend_on_how_the_stream_is_cut_into_batches(population, quotas):
    """Not promised by the API (only the same batch size is), but true by construction: each
    stratum's schedule and keys come from its own generator, in its own row order."""
    for importance_weight in (None, "w"):
        samples = [reservoir_sample_batches(population.to_batches(max_chunksize=size), STRATA, quotas, seed=4,
                                            importance_weight=importance_weight).table for size in (BATCH, 50_000, N)]
        assert samples[0].equals(samples[1]) and samples[0].equals(samples[2])


def test_parquet_sampling_matches_the_batch_engine_and_restores_column_types(tmp_path, population, quotas, counts):
    path = tmp_path / "snapshot.parquet"
    pq.write_table(population, path, row_group_size=30_000)
    assert count_strata_parquet(path, STRATA) == counts
    result = reservoir_sample_parquet(path, STRATA, quotas, seed=9, batch_rows=10_000)
    expected = reservoir_sample_batches(population.to_batches(max_chunksize=BATCH), STRATA, quotas, seed=9)
    assert result.table.equals(expected.table)  # segment read dictionary-encoded, returned as string
    assert result.strata == expected.strata and result.rows_scanned == N
    only = reservoir_sample_parquet(path, STRATA, quotas, seed=9, columns=["x"])
    assert only.table.column_names == ["label", "segment", "x", WEIGHT]


def test_strata_missing_from_quotas_get_none_and_big_quotas_keep_the_whole_stratum():
    table = pa.table({"g": ["a"] * 30 + ["b"] * 20 + [None] * 10, "v": range(60)})
    result = reservoir_sample_batches(table.to_batches(max_chunksize=16), ["g"], {"a": 100, None: 4, "zzz": 5}, seed=0)
    assert result.strata[("a",)] == StratumStats(30, 30, 1.0)
    assert result.strata[("b",)] == StratumStats(20, 0, 0.0)
    assert result.strata[(None,)] == StratumStats(10, 4, 2.5)
    assert result.strata[("zzz",)] == StratumStats(0, 0, 0.0)
    assert list(result.strata) == [("a",), ("b",), (None,), ("zzz",)]  # data order, then the rest
    groups = result.table.column("g").to_pylist()
    assert groups.count("a") == 30 and groups.count(None) == 4 and "b" not in groups


def test_empty_input_gives_an_empty_sample_with_the_weight_column(tmp_path):
    schema = pa.schema([("g", pa.int64()), ("v", pa.float64())])
    result = reservoir_sample_batches([], ["g"], {(0,): 3}, seed=0, schema=schema)
    assert result.table.num_rows == 0 and result.table.column_names == ["g", "v", WEIGHT]
    assert result.rows_scanned == 0
    path = tmp_path / "empty.parquet"
    pq.write_table(schema.empty_table(), path)
    assert reservoir_sample_parquet(path, ["g"], {(0,): 3}, seed=0).table.column_names == ["g", "v", WEIGHT]


def test_missing_columns_and_bad_quotas_fail_naming_them(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"label": [0, 1], "x": [1.0, 2.0]}), path)
    with pytest.raises(ValueError, match="strata column 'segment'"):
        reservoir_sample_parquet(path, ["label", "segment"], {}, seed=0)
    with pytest.raises(ValueError, match="importance weight column 'imp'"):
        reservoir_sample_parquet(path, ["label"], {}, seed=0, importance_weight="imp")
    with pytest.raises(ValueError, match="column 'nope'"):
        reservoir_sample_parquet(path, ["label"], {}, seed=0, columns=["nope"])
    with pytest.raises(ValueError, match="strata column 'segment'"):
        count_strata_parquet(path, ["segment"])
    batches = pa.table({"label": [0, 1]}).to_batches()
    with pytest.raises(ValueError, match="strata column 'segment'"):
        reservoir_sample_batches(batches, ["segment"], {}, seed=0)
    with pytest.raises(ValueError, match=r"quotas: key \(0, 'a'\) has 2 values"):
        reservoir_sample_batches(batches, ["label"], {(0, "a"): 1}, seed=0)
    with pytest.raises(ValueError, match=r"quotas\[\(0,\)\]"):
        reservoir_sample_batches(batches, ["label"], {(0,): -1}, seed=0)
    with pytest.raises(ValueError, match="'_weight' is already"):
        reservoir_sample_batches(pa.table({"label": [0], WEIGHT: [1.0]}).to_batches(), ["label"], {}, seed=0)


# ---------------------------------------------------------------------------------------------
# allocate
# ---------------------------------------------------------------------------------------------

populations = st.lists(st.integers(0, 5_000), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(populations, st.integers(0, 20_000), st.integers(0, 300), st.one_of(st.none(), st.integers(0, 3_000)))
def test_allocate_respects_size_floor_cap_and_population(sizes, size, floor, cap):
    counts = {(i,): n for i, n in enumerate(sizes)}
    got = allocate(counts, size, floor=floor, cap=cap)
    assert list(got) == list(counts) and got == allocate(counts, size, floor=floor, cap=cap)
    high = {k: n if cap is None else min(n, cap) for k, n in counts.items()}
    low = {k: min(floor, high[k]) for k in counts}
    total = sum(got.values())
    assert all(0 <= got[k] <= high[k] for k in counts)
    assert total == min(size, sum(high.values()))
    if sum(low.values()) <= size:
        assert all(got[k] >= low[k] for k in counts)
        # Strata strictly between their bounds are allocated in proportion to their size.
        inner = [k for k in counts if low[k] < got[k] < high[k]]
        for a in inner:
            for b in inner:
                assert got[a] / counts[a] <= got[b] / counts[b] + 1 / counts[a] + 1 / counts[b] + 1e-9
        # A stratum at its floor gets less than one row more than its proportional share
        # (it may have been rounded down to the floor): lam < (floor + 1) / N.
        for a in (k for k in counts if got[k] == low[k] < high[k]):
            for b in inner:
                assert (got[b] - 1) / counts[b] <= (got[a] + 1) / counts[a] + 1e-9
    else:
        # Floors do not fit: as equal as possible, small strata kept whole first.
        short = [k for k in counts if got[k] < low[k]]
        assert all(got[k] <= min(got[s] for s in short) + 1 for k in counts if short)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 50_000), min_size=2, max_size=4), st.lists(st.integers(1, 50_000), min_size=2, max_size=4),
       st.floats(0.0, 1.0), st.integers(10, 2_000))
def test_allocate_label_shares_set_each_labels_share_and_split_it_by_population(zeros, ones, share, size):
    counts = {**{(0, f"s{i}"): n for i, n in enumerate(zeros)}, **{(1, f"s{i}"): n for i, n in enumerate(ones)}}
    got = allocate(counts, size, label_shares={1: share})
    assert sum(got.values()) == min(size, sum(counts.values())) or share in (0.0, 1.0)
    assert all(0 <= got[k] <= counts[k] for k in counts)
    target = share * size
    positives = sum(n for k, n in got.items() if k[0] == 1)
    if target <= sum(ones) and size - target <= sum(zeros):  # neither label runs out of rows
        assert abs(positives - target) <= len(ones) + len(zeros)
        for label, group in ((0, zeros), (1, ones)):
            label_total = sum(n for k, n in got.items() if k[0] == label)
            for i, n in enumerate(group):
                assert abs(got[(label, f"s{i}")] - label_total * n / sum(group)) <= len(group) + 1


def test_allocate_examples_floor_cap_and_label_position():
    counts = {("web", 0): 9_000, ("web", 1): 400, ("app", 0): 550, ("app", 1): 50}
    assert allocate(counts, 1_000) == {("web", 0): 900, ("web", 1): 40, ("app", 0): 55, ("app", 1): 5}
    floored = allocate(counts, 1_000, floor=100)
    assert floored[("app", 1)] == 50 and floored[("web", 1)] == 100 and sum(floored.values()) == 1_000
    capped = allocate(counts, 1_000, cap=500)
    assert capped[("web", 0)] == 500 and sum(capped.values()) == 1_000
    shares = allocate(counts, 1_000, label_shares={1: 0.4}, label_position=1)
    assert sum(n for k, n in shares.items() if k[1] == 1) == 400
    assert shares[("web", 1)] == 356 and shares[("app", 1)] == 44  # 400 split 400 : 50
    assert allocate(counts, 10**9) == counts
    assert allocate({}, 10) == {}
    assert allocate({(0,): 5, (1,): 5, (2,): 100}, 9, floor=4) == {(0,): 3, (1,): 3, (2,): 3}


def test_allocate_rejects_bad_parameters_naming_them():
    with pytest.raises(ValueError, match="size"):
        allocate({(0,): 1}, -1)
    with pytest.raises(ValueError, match="floor"):
        allocate({(0,): 1}, 1, floor=-2)
    with pytest.raises(ValueError, match="label_shares"):
        allocate({(0,): 1}, 1, label_shares={0: 0.7, 1: 0.6})
    with pytest.raises(ValueError, match=r"label_shares\[1\]"):
        allocate({(0,): 1}, 1, label_shares={1: -0.1})
    with pytest.raises(ValueError, match="label_position=3"):
        allocate({(0,): 1}, 1, label_shares={0: 0.5}, label_position=3)
