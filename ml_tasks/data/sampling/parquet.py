"""The sampler's Parquet entry points: count a snapshot's strata, and sample it in one pass.

Reading a snapshot that may be far larger than memory, three choices keep the pass fast and
its memory proportional to the sample:

* String strata columns are read dictionary-encoded (Parquet already stores them that way),
  which saves hashing every value; the sample gets the file's own types back.
* ``pre_buffer=False`` and a 1 MiB buffered stream (:func:`_open`): pyarrow's default pre-reads
  every row group's column chunks, so its memory would grow with the file.
* The next batches are decoded on a background thread while the sampler works on this one
  (:func:`ml_tasks.io.arrow_stream.read_ahead`). Parquet decoding and the sampler's
  numpy/pyarrow work both release the GIL, so on a machine with spare cores they overlap
  (about a fifth off the wall time on 2 cores); at most two decoded batches wait.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks.data.sampling.engine import (
    SampleResult,
    check_columns,
    check_requested,
    keep_columns,
    reservoir_sample_batches,
)
from ml_tasks.data.sampling.strata import StratumEncoder, StratumKey
from ml_tasks.io.arrow_stream import read_ahead

__all__ = ["count_strata_parquet", "reservoir_sample_parquet"]

_READER = "refit-reservoir-read-ahead"  # the read-ahead thread's name


def reservoir_sample_parquet(
    path: str | Path,
    strata: list[str],
    quotas: Mapping[StratumKey, int],
    *,
    seed: int,
    importance_weight: str | None = None,
    batch_rows: int = 131_072,
    columns: list[str] | None = None,
) -> SampleResult:
    """Stratified reservoir sample of a Parquet file, in one streaming pass.

    Memory is proportional to the sample (plus one row group being decoded), not to the file.
    String strata columns are read dictionary-encoded (Parquet already stores them that way),
    which saves hashing every value; the sample gets the file's own types back.

    Parameters
    ----------
    path : str or Path
        The Parquet file.
    strata, quotas, seed, importance_weight
        See :class:`~ml_tasks.data.sampling.engine.StratifiedReservoir` (quotas e.g. from
        :func:`~ml_tasks.data.sampling.allocate.allocate` over the strata's counts).
    batch_rows : int, default 131_072
        Rows per record batch read. The same ``batch_rows`` and seed always give the same
        sample.
    columns : list of str, optional
        Columns to read and keep (plus the strata and importance columns). Default: all.

    Returns
    -------
    SampleResult
        As :func:`~ml_tasks.data.sampling.engine.reservoir_sample_batches` returns it; the
        sample's columns have the file's types.

    Raises
    ------
    ValueError
        A strata, importance or requested column is not in the file (the message names it and
        the file), or an importance weight is not positive and finite.

    Examples
    --------
    >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> path = tempfile.mkdtemp() + "/snapshot.parquet"
    >>> pq.write_table(pa.table({"y": [0, 0, 0, 1] * 250, "x": range(1000)}), path)
    >>> result = reservoir_sample_parquet(path, ["y"], {(0,): 30, (1,): 10}, seed=1)
    >>> result.table.column_names, result.strata[(0,)]
    (['y', 'x', '_weight'], StratumStats(population=750, sampled=30, weight=25.0))
    """
    schema = pq.read_schema(path)
    check_columns(schema, strata, importance_weight, f"Parquet file {str(path)!r}")
    keep = list(schema.names) if columns is None else keep_columns(columns, strata, importance_weight)
    check_requested(schema, keep, f"Parquet file {str(path)!r}")
    read = [name for name in schema.names if name in set(keep)]
    file = _open(path, _string_columns(schema, strata))
    with _batches(file, batch_rows, read) as batches:
        return reservoir_sample_batches(batches, strata, quotas, seed=seed, importance_weight=importance_weight,
                                        schema=pa.schema([schema.field(name) for name in read]))


def count_strata_parquet(path: str | Path, strata: list[str], *, batch_rows: int = 131_072) -> dict[StratumKey, int]:
    """Rows per stratum of a Parquet file, in one streaming pass over the strata columns only.

    Feed the result to :func:`~ml_tasks.data.sampling.allocate.allocate` to get the quotas for
    :func:`reservoir_sample_parquet`; the keys are built exactly as the sampler builds them, so
    they match.

    Examples
    --------
    >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> path = tempfile.mkdtemp() + "/snapshot.parquet"
    >>> pq.write_table(pa.table({"y": [0, 0, 0, 1] * 250, "seg": ["a", "b"] * 500}), path)
    >>> count_strata_parquet(path, ["y", "seg"])
    {(0, 'a'): 500, (0, 'b'): 250, (1, 'b'): 250}
    """
    schema = pq.read_schema(path)
    check_columns(schema, strata, None, f"Parquet file {str(path)!r}")
    file = _open(path, _string_columns(schema, strata))
    if not strata:
        return {(): file.metadata.num_rows} if file.metadata.num_rows else {}
    encoder = StratumEncoder(strata)
    counts = np.zeros(0, dtype=np.int64)
    with _batches(file, batch_rows, list(strata)) as batches:
        for batch in batches:
            if not batch.num_rows:
                continue
            found = encoder.count(batch)
            counts = np.concatenate((counts, np.zeros(len(found) - len(counts), dtype=np.int64))) + found
    return {key: int(n) for key, n in zip(encoder.keys, counts, strict=True)}


def _open(path: str | Path, dictionary_columns: list[str]) -> pq.ParquetFile:
    """A Parquet reader whose memory does not grow with the file.

    ``pre_buffer=False``: with pyarrow's default (True) ``iter_batches`` pre-reads the column
    chunks of every row group it will visit - a 1.6 GiB file costs 1.6 GiB of memory - while a
    buffered stream reads each column chunk as it is decoded, and is no slower locally.
    """
    return pq.ParquetFile(path, read_dictionary=dictionary_columns, pre_buffer=False, buffer_size=1 << 20)


def _batches(file: pq.ParquetFile, batch_rows: int,
             columns: list[str]) -> closing[Generator[pa.RecordBatch, None, None]]:
    """The file's ``columns`` in batches of ``batch_rows`` rows, decoded ahead on a background
    thread; leaving the ``with`` block stops the thread."""
    return closing(read_ahead(lambda: file.iter_batches(batch_size=batch_rows, columns=columns), name=_READER))


def _string_columns(schema: pa.Schema, names: Sequence[str]) -> list[str]:
    """String columns among ``names``: read them dictionary-encoded (Parquet stores them so)."""
    return [name for name in names if pa.types.is_string(schema.field(name).type)
            or pa.types.is_large_string(schema.field(name).type)]

