"""The engine over record batches: bounded buffer, reproducibility, batch cutting, quotas."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ml_tasks.data.sampling import StratifiedReservoir, StratumStats, reservoir_sample_batches
from tests.data.sampling.population import BATCH, STRATA, N


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


def test_batch_rows_cuts_big_batches_into_the_slices_smaller_batches_would_give(population, quotas):
    whole = population.to_batches()  # one batch of N rows
    cut = reservoir_sample_batches(whole, STRATA, quotas, seed=5, batch_rows=BATCH)
    expected = reservoir_sample_batches(population.to_batches(max_chunksize=BATCH), STRATA, quotas, seed=5)
    assert cut.table.equals(expected.table) and cut.strata == expected.strata and cut.rows_scanned == N
    with pytest.raises(ValueError, match="batch_rows: expected a positive integer, got 0"):
        reservoir_sample_batches(whole, STRATA, quotas, seed=5, batch_rows=0)


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

