"""The Parquet entry points: the same sample as the batch engine, counts, errors naming the file."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.core.columns import WEIGHT
from ml_tasks.data.sampling import (
    count_strata_parquet,
    reservoir_sample_batches,
    reservoir_sample_parquet,
)
from tests.data.sampling.population import BATCH, STRATA, N


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


def test_a_failure_mid_file_stops_the_read_ahead_thread(tmp_path):
    """A bad importance weight in the last row group fails the sample after the background reader
    has started; the error names the column and no reader thread is left behind."""
    weights = np.ones(40_000)
    weights[-1] = -1.0
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"g": np.arange(40_000) % 2, "w": weights}), path, row_group_size=1_000)
    with pytest.raises(ValueError, match="importance weight column 'w'.*at row 39999"):
        reservoir_sample_parquet(path, ["g"], {(0,): 5, (1,): 5}, seed=0, importance_weight="w", batch_rows=1_000)
    assert not [t for t in threading.enumerate() if t.name == "refit-reservoir-read-ahead"]


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

