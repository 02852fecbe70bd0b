"""One-pass, bounded-memory stratified reservoir sampling over a Parquet snapshot.

The sample stage draws a stratified sample (label x segment columns) from a snapshot that may
be far larger than memory. This package does it in one streaming pass over the snapshot's
record batches, with memory proportional to the *sample*, not to the snapshot:

* :func:`count_strata_parquet` counts the rows per stratum, reading only the strata columns,
  and :func:`allocate` turns those populations into per-stratum quotas (proportional with a
  floor, optional target label shares and a cap);
* :func:`reservoir_sample_parquet` streams a Parquet file and keeps a reservoir per stratum;
  :func:`reservoir_sample_batches` is the same engine over any iterable of record batches, and
  :class:`StratifiedReservoir` is that engine as an object fed one batch at a time.

Every sampled row carries ``_weight`` (:data:`ml_tasks.core.columns.WEIGHT`), the inverse of
its inclusion probability, so weighted sums over the sample estimate population totals. The
same input and seed give the same sample.

Modules, in the order a batch meets them
----------------------------------------
:mod:`~ml_tasks.data.sampling.allocate`
    Quotas per stratum from the strata's populations.
:mod:`~ml_tasks.data.sampling.strata`
    Every row's stratum id, with whole-batch operations; each stratum's own random generator.
:mod:`~ml_tasks.data.sampling.reservoirs`
    Algorithm L (uniform) and priority sampling (weighted) per stratum, and the candidate
    buffer holding the rows; why they are written here and not taken from a library.
:mod:`~ml_tasks.data.sampling.engine`
    :class:`StratifiedReservoir`, which runs them batch by batch, and
    :func:`reservoir_sample_batches`.
:mod:`~ml_tasks.data.sampling.parquet`
    The Parquet entry points.

Examples
--------
>>> import pyarrow as pa
>>> table = pa.table({"label": [0, 1] * 500, "x": range(1000)})
>>> quotas = allocate({(0,): 500, (1,): 500}, size=100)
>>> quotas
{(0,): 50, (1,): 50}
>>> result = reservoir_sample_batches(table.to_batches(max_chunksize=128), ["label"], quotas, seed=7)
>>> result.table.num_rows, result.rows_scanned, result.strata[(1,)].weight
(100, 1000, 10.0)
"""

from __future__ import annotations

from ml_tasks.data.sampling.allocate import allocate
from ml_tasks.data.sampling.engine import SampleResult, StratifiedReservoir, StratumStats, reservoir_sample_batches
from ml_tasks.data.sampling.parquet import count_strata_parquet, reservoir_sample_parquet
from ml_tasks.data.sampling.strata import StratumKey

__all__ = [
    "SampleResult",
    "StratifiedReservoir",
    "StratumKey",
    "StratumStats",
    "allocate",
    "count_strata_parquet",
    "reservoir_sample_batches",
    "reservoir_sample_parquet",
]
