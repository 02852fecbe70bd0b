"""The champion's scores as they were served: read from the scoring table, not computed again.

A spec with a ``scoring:`` section has ``score_<model>`` write the champion's scores to its
destination table (:mod:`ml_tasks.scoring.destination`: one row per id, with the version that
scored it). Where that table exists, the monitor judges the champion on those scores: they are
what the users of the scores actually got, and reading them costs a query instead of loading and
running the model. Rows the table lacks, or that another version scored (an id scored before the
champion moved, or never scored at all), are scored by the champion itself; each health record
says how many rows came from each source.

Memory: the id and score of every row the champion's version scored, 16 bytes a row, kept sorted
by id for :func:`numpy.searchsorted` lookups (a million served rows are 16 MB). The table is read
through :func:`ml_tasks.io.warehouse.stream_query`, the reader every stage uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

#: Scores a batch's rows (a frame of the query's columns) with the champion.
Scorer = Callable[[pd.DataFrame], npt.NDArray[np.float64]]


@dataclass(frozen=True)
class ServedScores:
    """One version's served scores from ``table``: ids sorted ascending, scores in the same order."""

    table: str
    version: str
    ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]

    def lookup(self, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """Which of ``ids`` were served, and their scores (NaN where not)."""
        found = np.zeros(len(ids), dtype=bool)
        scores = np.full(len(ids), np.nan)
        if len(self.ids) and len(ids):
            at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
            found = self.ids[at] == ids
            scores[found] = self.scores[at[found]]
        return found, scores


def read_served_scores(warehouse_url: str, table: str, version: str) -> ServedScores | None:
    """The scores ``version`` wrote to ``table``, or None when the table does not exist (yet)."""
    from ml_tasks.io.warehouse import stream_query

    if not _table_exists(warehouse_url, table):
        return None
    batches = list(stream_query(warehouse_url, f"SELECT id, score FROM {table} WHERE model_version = :version",
                                {"version": version}, {"id": "int64", "score": "float64"}))
    frame = pa.Table.from_batches(batches) if batches else pa.table({"id": pa.array([], pa.int64()),
                                                                     "score": pa.array([], pa.float64())})
    ids = np.asarray(frame.column("id").to_numpy(), dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    return ServedScores(table, version, ids[order], np.asarray(frame.column("score").to_numpy(), dtype=float)[order])


def _table_exists(warehouse_url: str, table: str) -> bool:
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    schema, _, name = table.rpartition(".")
    engine = create_engine(warehouse_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return bool(inspect(conn).has_table(name, schema=schema or None))
    finally:
        engine.dispose()


class WindowScorer:
    """Scores of a window's batches: served ones where the table has them, the champion's otherwise.

    The champion is loaded (``load_champion``) only when a batch has a row the table lacks, so a
    window the scoring DAG covered whole never loads the model. ``served_rows`` and
    ``scored_rows`` count the rows from each source.
    """

    def __init__(self, id_column: str, served: ServedScores | None, load_champion: Callable[[], Scorer]) -> None:
        self._id_column = id_column
        self._served = served
        self._load_champion = load_champion
        self._champion: Scorer | None = None
        self.served_rows = 0
        self.scored_rows = 0

    def __call__(self, batch: pa.RecordBatch) -> npt.NDArray[np.float64]:
        if self._served is None:
            self.scored_rows += batch.num_rows
            return self._score(batch)
        ids = np.asarray(batch.column(self._id_column).to_numpy(zero_copy_only=False), dtype=np.int64)
        found, scores = self._served.lookup(ids)
        self.served_rows += int(found.sum())
        missing = ~found
        if missing.any():
            self.scored_rows += int(missing.sum())
            scores[missing] = self._score(batch.filter(pa.array(missing)))
        return scores

    def _score(self, batch: pa.RecordBatch) -> npt.NDArray[np.float64]:
        if self._champion is None:
            self._champion = self._load_champion()
        return np.asarray(self._champion(batch.to_pandas()), dtype=float)
