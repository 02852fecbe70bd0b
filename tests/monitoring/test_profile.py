"""Binned profiles from Parquet batches: the same PSI as the report's in-memory drift, the same
profile whatever the batch size, and memory that holds a batch, not the file."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.data.drift import population_stability
from ml_tasks.monitoring.profile import MAX_CATEGORIES, PARQUET_OPTIONS, ProfileCounter, build_profile, psi


def frame(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    x = rng.normal(shift, 1.0, rows)
    x[rng.random(rows) < 0.02] = np.nan  # missing values have a bin of their own
    return pd.DataFrame({"x": x, "c": rng.choice(["a", "b", "c", "d"], rows, p=[0.4, 0.3, 0.2, 0.1]),
                         "y": (rng.random(rows) < 0.1).astype(int)})


def parquet(path, data: pd.DataFrame, row_group: int) -> pq.ParquetFile:
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False), path, row_group_size=row_group)
    return pq.ParquetFile(path, **PARQUET_OPTIONS)  # as the monitor opens a snapshot


def profile_of(file: pq.ParquetFile, batch_size: int):
    return build_profile(lambda: file.iter_batches(batch_size=batch_size), file.metadata.num_rows, ["x"], ["c"], "y")


def test_streamed_psi_equals_the_reports_in_memory_psi(tmp_path):
    rng = np.random.default_rng(0)
    reference, current = frame(rng, 20_000), frame(rng, 5_000, shift=0.3)
    profile = profile_of(parquet(tmp_path / "ref.parquet", reference, 3_000), batch_size=1_000)
    counter = ProfileCounter(profile.features, "y")
    for batch in pa.Table.from_pandas(current).to_batches(max_chunksize=700):
        counter.add(batch)
    streamed = psi(profile, counter.profile())
    assert streamed["x"] == pytest.approx(population_stability(reference["x"], current["x"]), rel=1e-12)
    assert streamed["c"] == pytest.approx(population_stability(reference["c"], current["c"]), rel=1e-12)
    assert profile.features["x"].null_rate == pytest.approx(reference["x"].isna().mean())
    assert profile.positive_rate == pytest.approx(reference["y"].mean())


def test_the_profile_does_not_depend_on_how_the_rows_are_batched(tmp_path):
    file = parquet(tmp_path / "ref.parquet", frame(np.random.default_rng(1), 30_000), 4_096)
    assert profile_of(file, 1_000) == profile_of(file, 7_777)


def test_rare_categories_and_values_never_seen_share_one_bin():
    rows = [f"v{i:03d}" for i in range(MAX_CATEGORIES + 20) for _ in range(i + 1)]
    batch = pa.record_batch({"c": rows, "y": [0] * len(rows)})
    profile = build_profile(lambda: [batch], len(rows), [], ["c"], "y")
    kept = profile.features["c"]
    assert len(kept.categories) == MAX_CATEGORIES and "v000" not in kept.categories  # the rarest go to "other"
    counter = ProfileCounter(profile.features, "y")
    counter.add(pa.record_batch({"c": ["unseen", "v000", None], "y": [0, 0, 1]}))
    assert counter.profile().features["c"].counts[-2:] == [2, 1]  # other: unseen and v000; missing: None


def peak_memory(file: pq.ParquetFile, batch_size: int) -> tuple[int, int, int]:
    """Profile ``file``: the peak of Python/numpy allocations, of Arrow's while reading, and the largest batch."""
    largest, arrow = [0], [0]
    arrow_before = pa.total_allocated_bytes()

    def batches():
        for batch in file.iter_batches(batch_size=batch_size):
            largest.append(batch.num_rows)
            arrow.append(pa.total_allocated_bytes() - arrow_before)
            yield batch

    tracemalloc.start()
    profile = build_profile(batches, file.metadata.num_rows, ["x"], ["c"], "y")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert profile.rows == file.metadata.num_rows
    return peak, max(arrow), max(largest)


def test_profiling_memory_does_not_grow_with_the_rows(tmp_path):
    batch_size = 65_536
    rng = np.random.default_rng(2)
    small = peak_memory(parquet(tmp_path / "small.parquet", frame(rng, 250_000), batch_size), batch_size)
    large = peak_memory(parquet(tmp_path / "large.parquet", frame(rng, 1_000_000), batch_size), batch_size)
    assert small[2] <= batch_size and large[2] <= batch_size
    # Measured: Python/numpy peaks of 2.3 and 2.4 MB, Arrow's 5.4 MB for both: four times the rows,
    # the same memory (a frame of the large file's three columns alone would be 24 MB).
    assert large[0] < 1.5 * small[0]
    assert large[1] < 1.5 * small[1]
