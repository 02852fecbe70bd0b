"""The sampling engine: stratified reservoirs fed one record batch at a time.

:class:`StratifiedReservoir` puts the pieces together for every batch, with whole-batch
(vectorised) numpy/pyarrow operations only:

1. **Stratum codes.** :class:`~ml_tasks.data.sampling.strata.StratumEncoder` gives every row its
   stratum id.
2. **Which rows enter a reservoir.** Uniform mode asks each stratum's Algorithm L schedule which
   of its scheduled positions fall inside this batch; weighted mode draws priorities and merges
   the rows that beat the stratum's threshold (:mod:`ml_tasks.data.sampling.reservoirs`).
3. **Copying the rows.** The entering rows are copied out of the batch with one ``take`` into
   the candidate buffer, which is compacted when evicted rows pile up, so it never holds more
   than three times the sample (:attr:`StratifiedReservoir.peak_buffer_rows` records the peak).
4. **The result.** The live rows come back in their original order (sorted by global position)
   with ``_weight`` (:data:`ml_tasks.core.columns.WEIGHT`), the inverse of their inclusion
   probability.

:func:`reservoir_sample_batches` runs the engine over any iterable of record batches;
:mod:`ml_tasks.data.sampling.parquet` runs it over a Parquet file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ml_tasks.core.columns import WEIGHT
from ml_tasks.data.sampling.allocate import non_negative_int
from ml_tasks.data.sampling.reservoirs import NO_EVENT, AlgorithmL, CandidateBuffer, PriorityReservoir
from ml_tasks.data.sampling.strata import RowGroups, StratumEncoder, StratumKey, stratum_rng
from ml_tasks.io.arrow_stream import at_most

__all__ = ["SampleResult", "StratifiedReservoir", "StratumStats", "check_columns", "check_requested", "keep_columns",
           "reservoir_sample_batches"]


@dataclass(frozen=True)
class StratumStats:
    """What the pass saw and kept of one stratum.

    Attributes
    ----------
    population : int
        Rows of the stratum in the input.
    sampled : int
        Rows of the stratum in the sample: ``min(quota, population)``.
    weight : float
        Uniform mode: ``population / sampled``, the ``_weight`` of every sampled row of the
        stratum. Weighted mode: the mean ``_weight`` of its sampled rows. ``0.0`` when nothing
        was sampled.
    """

    population: int
    sampled: int
    weight: float


@dataclass(frozen=True)
class SampleResult:
    """A drawn sample.

    Attributes
    ----------
    table : pyarrow.Table
        The sampled rows in their original order, with the input's columns and ``_weight``
        (float64), the inverse inclusion probability: weighted sums over the sample estimate
        population totals.
    strata : dict of stratum key to StratumStats
        Every stratum seen in the input (first appearance order), then strata that had a quota
        but no rows (population 0).
    rows_scanned : int
        Rows read from the input.
    peak_buffer_rows : int
        Most rows the candidate buffer held at once (live + evicted, not yet compacted); at
        most three times the sample size.
    """

    table: pa.Table
    strata: dict[StratumKey, StratumStats]
    rows_scanned: int
    peak_buffer_rows: int = 0


class StratifiedReservoir:
    """Stratified reservoir sample of a stream of record batches, fed one batch at a time.

    :func:`reservoir_sample_batches` and
    :func:`~ml_tasks.data.sampling.parquet.reservoir_sample_parquet` wrap this class; use it
    directly to sample while doing something else with the same batches, or to watch the
    buffer (:attr:`peak_buffer_rows`, :attr:`buffer_rows`) between batches.

    Parameters
    ----------
    strata : list of str
        Columns whose value combinations define the strata (may be empty: one stratum ``()``).
    quotas : mapping of stratum key to int
        Rows to keep per stratum (see :func:`~ml_tasks.data.sampling.allocate.allocate`).
        Strata absent from ``quotas`` get 0; a quota above a stratum's population keeps the
        whole stratum. With a single strata column a key may be given bare (``1`` for ``(1,)``).
    seed : int
        Non-negative seed; the same input, batches and seed give the same sample.
    importance_weight : str, optional
        Column of positive, finite importance weights: draw within each stratum with
        probability proportional to it (priority sampling) instead of uniformly.
    schema : pyarrow.Schema, optional
        Schema of the emitted rows. Batches may carry dictionary-encoded versions of its
        columns (as ``ParquetFile(read_dictionary=...)`` reads them); sampled rows are cast
        back. Default: the first batch's schema.

    Examples
    --------
    >>> import pyarrow as pa
    >>> sampler = StratifiedReservoir(["g"], {("a",): 2, ("b",): 1}, seed=0)
    >>> for batch in pa.table({"g": list("aabbaab"), "v": range(7)}).to_batches(max_chunksize=3):
    ...     sampler.update(batch)
    >>> result = sampler.result()
    >>> result.table.num_rows, {k: s.population for k, s in result.strata.items()}
    (3, {('a',): 4, ('b',): 3})
    """

    def __init__(self, strata: Sequence[str], quotas: Mapping[Any, int], *, seed: int,
                 importance_weight: str | None = None, schema: pa.Schema | None = None) -> None:
        self.strata = list(strata)
        if len(set(self.strata)) != len(self.strata):
            raise ValueError(f"strata: expected distinct column names, got {self.strata}")
        self.quotas = _normalise_quotas(quotas, len(self.strata))
        self.seed = non_negative_int(seed, "seed")
        self.importance_weight = importance_weight
        self.schema = schema
        self.rows_scanned = 0
        #: Rows that entered a reservoir so far. Uniform mode: every replacement Algorithm L
        #: scheduled (each costs three random draws), expected ``k * (1 + H_N - H_k)``, about
        #: ``k * (1 + ln(N / k))`` per stratum - not ``N``. Weighted mode: rows that were members
        #: at the end of their batch.
        self.rows_entered = 0
        #: Rows copied into the candidate buffer: ``rows_entered`` less the rows a later row of
        #: the same batch replaced again (those are never copied).
        self.rows_copied = 0
        self._encoder = StratumEncoder(self.strata)
        self._buffer = CandidateBuffer()
        # Per stratum (index = stratum id).
        self._quota: list[int] = []
        self._offset: list[int] = []
        self._schedules: list[AlgorithmL] = []  # uniform mode
        self._priorities: list[PriorityReservoir] = []  # weighted mode
        self._seen = np.zeros(0, dtype=np.int64)
        self._next_event = np.zeros(0, dtype=np.int64)
        # Per reservoir slot (all strata's slots side by side).
        self._slots = 0
        self._slot_row = np.zeros(0, dtype=np.int64)  # buffer index, -1 while empty
        self._slot_position = np.zeros(0, dtype=np.int64)  # row number in the whole stream
        self._slot_stratum = np.zeros(0, dtype=np.int64)
        self._slot_importance = np.zeros(0, dtype=np.float64)
        self._slot_latest = np.zeros(0, dtype=np.int64)  # scratch for de-duplicating slots
        self._garbage = 0
        self._plain_schema: pa.Schema | None = None

    # -- public -------------------------------------------------------------------------------

    @property
    def peak_buffer_rows(self) -> int:
        """Most rows the candidate buffer has held at once."""
        return self._buffer.peak_rows

    @property
    def buffer_rows(self) -> int:
        """Rows in the candidate buffer now (live and evicted)."""
        return self._buffer.rows

    @property
    def compactions(self) -> int:
        """How many times the buffer was compacted."""
        return self._buffer.compactions

    @property
    def sample_size(self) -> int:
        """Reservoir slots of the strata seen so far (the sum of their quotas)."""
        return self._slots

    def update(self, batch: pa.RecordBatch) -> None:
        """Consume one batch."""
        if self._plain_schema is None:
            check_columns(batch.schema, self.strata, self.importance_weight, "the batches")
            self.schema = self.schema or batch.schema
            self._plain_schema = pa.schema([_plain_field(f) for f in self.schema])
        n = batch.num_rows
        if n == 0:
            return
        codes, counts = self._encoder.encode(batch)
        self._grow_strata()
        if self.importance_weight is None:
            self._update_uniform(batch, codes, counts)
        else:
            self._update_weighted(batch, codes, counts, self.importance_weight)
        self._seen += counts
        self.rows_scanned += n

    def result(self) -> SampleResult:
        """The sample so far, rows in original order, with ``_weight``."""
        rows, live = self._live()
        positions = self._slot_position[live]
        # Buffer order is stream order (rows are appended in order, compaction keeps it).
        assert np.all(positions[1:] > positions[:-1]), "candidate buffer out of stream order"
        stratum = self._slot_stratum[live]
        population = self._seen[stratum].astype(np.float64)
        if self.importance_weight is None:
            sampled = np.minimum(np.asarray(self._quota, dtype=np.int64), self._seen)
            weights = population / sampled[stratum]
        else:
            tau = np.array([s.tau for s in self._priorities], dtype=np.float64)[stratum]
            importance = self._slot_importance[live]
            # Horvitz-Thompson weight of priority sampling; 1 while the stratum fits whole.
            weights = np.where(np.isfinite(tau), np.maximum(importance, tau) / importance, 1.0)
        schema = self._output_schema()
        if self._buffer.chunks:
            table = pa.Table.from_batches(self._buffer.select(rows), schema=self._buffer.chunks[0].schema)
            table = table.cast(schema) if not table.schema.equals(schema) else table
        else:
            table = schema.empty_table()
        table = table.append_column(pa.field(WEIGHT, pa.float64()), pa.array(weights, type=pa.float64()))
        kept = np.bincount(stratum, minlength=len(self._quota))
        weight_sum = np.bincount(stratum, weights=weights, minlength=len(self._quota))
        stats: dict[StratumKey, StratumStats] = {}
        for h, key in enumerate(self._encoder.keys):
            sampled_h, population_h = int(kept[h]), int(self._seen[h])
            if not sampled_h:
                weight_h = 0.0
            elif self.importance_weight is None:
                weight_h = population_h / sampled_h  # exactly the rows' weight
            else:
                weight_h = float(weight_sum[h] / sampled_h)
            stats[key] = StratumStats(population_h, sampled_h, weight_h)
        for key in self.quotas:
            stats.setdefault(key, StratumStats(0, 0, 0.0))
        return SampleResult(table=table, strata=stats, rows_scanned=self.rows_scanned,
                            peak_buffer_rows=self.peak_buffer_rows)

    # -- per batch ----------------------------------------------------------------------------

    def _update_uniform(self, batch: pa.RecordBatch, codes: np.ndarray, counts: np.ndarray) -> None:
        end = self._seen + counts
        due = np.flatnonzero(self._next_event < end)  # strata with a replacement in this batch
        if not len(due):
            return
        groups = RowGroups(codes, counts, len(due))
        found, slots = [], []
        for h in due.tolist():  # over strata, not rows
            schedule = self._schedules[h]
            positions, slot = schedule.until(int(end[h]))
            # Position p of the stratum's stream is its (p - seen)-th row in this batch.
            found.append(groups.rows(h)[positions - self._seen[h]])
            slots.append(self._offset[h] + slot)
            self._next_event[h] = schedule.next_position
        slot_ids, rows = np.concatenate(slots), np.concatenate(found)
        self.rows_entered += len(rows)
        # A slot hit twice in one batch keeps only the later row: copy just that one. (Later
        # in the stratum is later in the batch; ufunc.at applies every index, in order.)
        latest = self._slot_latest
        np.maximum.at(latest, slot_ids, rows)
        keep = latest[slot_ids] == rows
        latest[slot_ids] = -1
        self._store(batch, slot_ids[keep], rows[keep])

    def _update_weighted(self, batch: pa.RecordBatch, codes: np.ndarray, counts: np.ndarray,
                         weight_column: str) -> None:
        importance = _importance(batch, weight_column, self.rows_scanned)
        sampled = [h for h in np.flatnonzero(counts).tolist() if self._quota[h]]
        groups = RowGroups(codes, counts, len(sampled))
        slot_ids, rows, values = [], [], []
        for h in sampled:  # over strata, not rows
            reservoir = self._priorities[h]
            members = groups.rows(h)  # this stratum's rows, in order
            # One key per row from the stratum's own generator, in row order.
            priority = importance[members] / (1.0 - reservoir.rng.random(len(members)))
            candidates = np.flatnonzero(priority > reservoir.tau)
            if not len(candidates):
                continue
            entering, slots, _ = reservoir.merge(priority[candidates])
            chosen = members[candidates[entering]]
            slot_ids.append(self._offset[h] + slots)
            rows.append(chosen)
            values.append(importance[chosen])
        if slot_ids:
            slot_ids_all = np.concatenate(slot_ids)
            self.rows_entered += len(slot_ids_all)
            self._store(batch, slot_ids_all, np.concatenate(rows))
            self._slot_importance[slot_ids_all] = np.concatenate(values)

    def _store(self, batch: pa.RecordBatch, slot_ids: np.ndarray, rows: np.ndarray) -> None:
        """Copy ``rows`` of the batch (distinct) into the buffer as the rows of ``slot_ids``."""
        if not len(rows):
            return
        # Rows in batch order, so the buffer stays in stream order: a scatter over the batch
        # is cheaper than sorting the (row, slot) pairs.
        slot_at = np.full(batch.num_rows, -1, dtype=np.int64)
        slot_at[rows] = slot_ids
        rows = np.flatnonzero(slot_at >= 0)
        slot_ids = slot_at[rows]
        taken = batch.take(pa.array(rows))
        self.rows_copied += len(rows)
        self._garbage += int(np.count_nonzero(self._slot_row[slot_ids] >= 0))
        start = self._buffer.append(taken)
        self._slot_row[slot_ids] = start + np.arange(len(rows), dtype=np.int64)
        self._slot_position[slot_ids] = self.rows_scanned + rows
        if self._garbage > self._slots:
            # Down to half the sample size in garbage, so compactions do not follow each other
            # batch after batch.
            rows_live, live = self._live()
            self._slot_row[live], self._garbage = self._buffer.compact(rows_live, self._slots // 2)

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """Buffer indices of the live rows, ascending, and their slots."""
        slot_of = np.full(self._buffer.rows, -1, dtype=np.int64)
        filled = np.flatnonzero(self._slot_row >= 0)
        slot_of[self._slot_row[filled]] = filled
        rows = np.flatnonzero(slot_of >= 0)
        return rows, slot_of[rows]

    # -- bookkeeping --------------------------------------------------------------------------

    def _grow_strata(self) -> None:
        """Set up reservoirs for strata the encoder has just discovered."""
        new_keys = self._encoder.keys[len(self._quota):]
        if not new_keys:
            return
        weighted = self.importance_weight is not None
        ids, next_events = [], []
        for key in new_keys:
            k = self.quotas.get(key, 0)
            rng = stratum_rng(self.seed, key)
            if weighted:
                self._priorities.append(PriorityReservoir(k, rng))
                next_events.append(NO_EVENT)  # weighted mode has no schedule
            else:
                schedule = AlgorithmL(k, rng)
                self._schedules.append(schedule)
                next_events.append(schedule.next_position)
            ids.append(np.full(k, len(self._quota), dtype=np.int64))
            self._quota.append(k)
            self._offset.append(self._slots)
            self._slots += k
        added = self._slots - len(self._slot_row)
        self._seen = np.concatenate((self._seen, np.zeros(len(new_keys), dtype=np.int64)))
        self._next_event = np.concatenate((self._next_event, np.array(next_events, dtype=np.int64)))
        self._slot_row = np.concatenate((self._slot_row, np.full(added, -1, dtype=np.int64)))
        self._slot_position = np.concatenate((self._slot_position, np.zeros(added, dtype=np.int64)))
        self._slot_stratum = np.concatenate((self._slot_stratum, *ids))
        self._slot_importance = np.concatenate((self._slot_importance, np.zeros(added)))
        self._slot_latest = np.concatenate((self._slot_latest, np.full(added, -1, dtype=np.int64)))

    def _output_schema(self) -> pa.Schema:
        if self._plain_schema is not None:
            return self._plain_schema
        if self.schema is None:  # nothing was fed: at least the strata columns
            return pa.schema([pa.field(name, pa.null()) for name in self.strata])
        return pa.schema([_plain_field(f) for f in self.schema])


def _plain_field(field: pa.Field) -> pa.Field:
    """The field with dictionary encoding undone (the sample keeps the snapshot's types)."""
    return field.with_type(field.type.value_type) if pa.types.is_dictionary(field.type) else field


def _importance(batch: pa.RecordBatch, name: str, offset: int) -> np.ndarray:
    column = batch.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise ValueError(f"importance weight column {name!r}: expected numbers, got type {column.type}")
    if column.null_count:
        first = offset + int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(f"importance weight column {name!r}: expected positive finite weights, "
                         f"got {column.null_count} nulls (first at row {first})")
    values = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"importance weight column {name!r}: expected positive finite weights, got "
                         f"{int(bad.sum())} bad values (first {values[first]!r} at row {offset + first})")
    return values


def _normalise_quotas(quotas: Mapping[Any, int], width: int) -> dict[StratumKey, int]:
    normalised: dict[StratumKey, int] = {}
    for key, quota in quotas.items():
        tuple_key = key if isinstance(key, tuple) else (key,)
        if len(tuple_key) != width:
            raise ValueError(f"quotas: key {key!r} has {len(tuple_key)} values, "
                             f"expected one per strata column ({width})")
        normalised[tuple_key] = non_negative_int(quota, f"quotas[{key!r}]")
    return normalised


def check_columns(schema: pa.Schema, strata: Sequence[str], importance_weight: str | None, source: str) -> None:
    """A ValueError naming a strata or importance column ``schema`` (of ``source``) lacks, or a
    :data:`~ml_tasks.core.columns.WEIGHT` column it already has."""
    names = set(schema.names)
    for name in strata:
        if name not in names:
            raise ValueError(f"strata column {name!r} is not in {source} (columns: {', '.join(schema.names)})")
    if importance_weight is not None and importance_weight not in names:
        raise ValueError(f"importance weight column {importance_weight!r} is not in {source} "
                         f"(columns: {', '.join(schema.names)})")
    if WEIGHT in names:
        raise ValueError(f"column {WEIGHT!r} is already in {source}; the sample adds it (rename the input column)")



def reservoir_sample_batches(
    batches: Iterable[pa.RecordBatch],
    strata: list[str],
    quotas: Mapping[StratumKey, int],
    *,
    seed: int,
    importance_weight: str | None = None,
    batch_rows: int | None = None,
    columns: list[str] | None = None,
    schema: pa.Schema | None = None,
) -> SampleResult:
    """Stratified reservoir sample of a stream of record batches, in one pass.

    Parameters
    ----------
    batches : iterable of pyarrow.RecordBatch
        The population, in order; read once.
    strata, quotas, seed, importance_weight
        See :class:`StratifiedReservoir`.
    batch_rows : int, optional
        Slice larger batches (zero-copy) into pieces of at most this many rows, bounding the
        per-batch scratch memory (codes, sort order). Default: use the batches as they come.
    columns : list of str, optional
        Columns to keep in the sample; the strata and importance columns are always kept.
        Default: all.
    schema : pyarrow.Schema, optional
        Output schema, see :class:`StratifiedReservoir`; also gives the empty result its
        columns when there are no batches.

    Returns
    -------
    SampleResult

    Raises
    ------
    ValueError
        A strata, importance or requested column is missing (the message names it), an
        importance weight is not positive and finite, or a quota is not a non-negative int.
    """
    keep = None if columns is None else keep_columns(columns, strata, importance_weight)
    if schema is not None:
        check_columns(schema, strata, importance_weight, "the schema")
        if keep is not None:
            schema = pa.schema([schema.field(name) for name in schema.names if name in keep])
    sampler = StratifiedReservoir(strata, quotas, seed=seed, importance_weight=importance_weight, schema=schema)
    if batch_rows is not None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows: expected a positive integer, got {batch_rows!r}")
        batches = at_most(batches, batch_rows)
    for batch in batches:
        if keep is not None:
            check_requested(batch.schema, keep)
            batch = batch.select([name for name in batch.schema.names if name in keep])
        sampler.update(batch)
    return sampler.result()


def keep_columns(columns: Sequence[str], strata: Sequence[str], importance_weight: str | None) -> list[str]:
    """``columns`` and then the strata and importance columns it lacks: what the sample keeps."""
    extra = [*strata, *([importance_weight] if importance_weight else [])]
    return [*columns, *[name for name in extra if name not in columns]]


def check_requested(schema: pa.Schema, keep: Sequence[str], source: str = "the batches") -> None:
    """A ValueError naming the first column of ``keep`` that ``schema`` (of ``source``) lacks."""
    names = set(schema.names)
    for name in keep:
        if name not in names:
            raise ValueError(f"column {name!r} (in columns=) is not in {source} (columns: {', '.join(schema.names)})")

