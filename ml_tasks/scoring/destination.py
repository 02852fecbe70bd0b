"""The tables batch scoring writes: created when missing, checked when present, and one interval
replaced at a time, in one transaction.

Every destination has the same five columns, one row per id::

    id BIGINT PRIMARY KEY, score DOUBLE PRECISION, model_version TEXT, run_key TEXT, scored_at TIMESTAMP

(``scored_at`` is naive UTC, the warehouse's convention). A table that exists with other columns
is an error naming it, its columns and the expected ones: scores are never written into a
table someone else owns.

How a run writes
----------------
:func:`score_writer` opens one connection for the whole run. Scores are first *staged* chunk
by chunk into a temporary table per destination (``COPY … FROM STDIN`` of CSV that pyarrow
writes on PostgreSQL; ``executemany`` elsewhere), so memory holds one chunk at a time. Then
:meth:`ScoreWriter.replace` deletes, per destination, the rows of this run key (a re-run of the
interval) and of every staged id (an id scored again in a later interval), and inserts the
staged rows with the version, run key and time, all in one transaction: a reader sees the
interval's old rows or its new ones, never both and never none, and a failed run leaves the
tables as they were.

Why not ``DataFrame.to_sql``: it sends every value through a Python object and an ``INSERT``,
and it cannot replace an interval atomically (``bench/bench_score.py`` measures the difference).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from ml_tasks.io.warehouse.urls import parse_url

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

#: The columns of every destination table, in order.
COLUMNS = ("id", "score", "model_version", "run_key", "scored_at")


class DestinationError(RuntimeError):
    """A destination table cannot take the scores; the message names it and what was expected."""


@dataclass(frozen=True)
class Stamp:
    """What every row a model scored in this run carries besides its id and score."""

    model_version: str
    run_key: str
    scored_at: datetime


def writer_url(url: str) -> str:
    """``url`` with psycopg 3 as the PostgreSQL driver: the one whose ``COPY`` the writer streams into."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def score_table(name: str) -> Table:
    """The destination ``name`` (``table`` or ``schema.table``) as SQLAlchemy describes it."""
    from sqlalchemy import BigInteger, Column, DateTime, Double, Index, MetaData, String, Table

    schema, _, table = name.rpartition(".")
    return Table(table, MetaData(),
                 Column("id", BigInteger, primary_key=True, autoincrement=False),
                 Column("score", Double, nullable=False),
                 Column("model_version", String, nullable=False),
                 Column("run_key", String, nullable=False),
                 Column("scored_at", DateTime, nullable=False),
                 # A re-run deletes its interval by run key: without an index that scans the table.
                 Index(f"{table}_rk", "run_key"),
                 schema=schema or None)


def ensure_table(conn: Connection, name: str) -> Table:
    """The destination ``name``, created when missing; a :class:`DestinationError` when it exists
    with other columns."""
    from sqlalchemy import inspect

    table = score_table(name)
    inspector = inspect(conn)
    if not inspector.has_table(table.name, schema=table.schema):
        table.create(conn)
        return table
    found = [str(column["name"]) for column in inspector.get_columns(table.name, schema=table.schema)]
    if sorted(found) != sorted(COLUMNS):
        raise DestinationError(f"destination table {name!r} exists with columns {found}; expected exactly "
                               f"{list(COLUMNS)} (set scoring.destination to another table, or drop or rename "
                               f"this one)")
    return table


class ScoreWriter:
    """Stages one run's scores per destination, then replaces the interval's rows (:func:`score_writer`)."""

    def __init__(self, conn: Connection, targets: dict[str, Table]) -> None:
        self._conn = conn
        self._targets = targets
        self._stages = {name: _stage_table(conn, index) for index, name in enumerate(targets)}
        self._copy = conn.dialect.name == "postgresql"

    def stage(self, name: str, ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> None:
        """Add one chunk of ``name``'s scores (not visible in ``name`` until :meth:`replace`)."""
        stage = self._stages[name]
        if self._copy:
            _copy_into(self._conn, stage.name, ids, scores)
        elif len(ids):
            self._conn.execute(stage.insert(), [{"id": i, "score": s}
                                                for i, s in zip(ids.tolist(), scores.tolist(), strict=True)])

    def replace(self, run_key: str, stamps: dict[str, Stamp]) -> dict[str, int]:
        """Replace each destination's rows of ``run_key`` and of the staged ids with the staged rows, in one
        transaction; the rows removed per destination."""
        from sqlalchemy.exc import IntegrityError

        # The staged rows are this connection's alone (temporary tables): committing them changes nothing
        # anyone sees, and keeps them for naming the duplicates should the replacement fail.
        self._conn.commit()
        removed = {}
        try:
            for name, target in self._targets.items():
                removed[name] = self._replace_one(target, self._stages[name], run_key, stamps[name])
        except IntegrityError:
            self._conn.rollback()
            raise DestinationError(self._duplicates()) from None
        self._conn.commit()
        return removed

    def _replace_one(self, target: Table, stage: Table, run_key: str, stamp: Stamp) -> int:
        from sqlalchemy import DateTime, String, delete, literal, or_, select

        gone = self._conn.execute(delete(target).where(
            or_(target.c.run_key == run_key, target.c.id.in_(select(stage.c.id)))))
        self._conn.execute(target.insert().from_select(list(COLUMNS), select(
            stage.c.id, stage.c.score, literal(stamp.model_version, String), literal(run_key, String),
            literal(stamp.scored_at, DateTime))))
        return int(gone.rowcount)

    def _duplicates(self) -> str:
        """Why the insert failed: the query returned some id more than once (a few are named)."""
        from sqlalchemy import func, select

        stage = next(iter(self._stages.values()))
        ids = self._conn.execute(select(stage.c.id).group_by(stage.c.id).having(func.count() > 1).limit(3)).scalars()
        return (f"the scoring query returned id(s) {list(ids)} more than once; expected one row per id "
                f"(columns.id) in an interval")


@contextmanager
def score_writer(url: str, tables: list[str]) -> Iterator[ScoreWriter]:
    """A :class:`ScoreWriter` for ``tables`` at ``url``, each created or checked first.

    The staged rows live only on this connection: leaving without :meth:`ScoreWriter.replace`
    (an error while scoring) rolls them back and leaves every destination as it was.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    # NullPool: the temporary stage tables go with the connection, never to the next user of a pool.
    engine = create_engine(writer_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            targets = {name: ensure_table(conn, name) for name in tables}
            conn.commit()
            yield ScoreWriter(conn, targets)
    finally:
        engine.dispose()


def _stage_table(conn: Connection, index: int) -> Table:
    from sqlalchemy import BigInteger, Column, Double, MetaData, Table

    stage = Table(f"refit_scores_stage_{index}", MetaData(), Column("id", BigInteger), Column("score", Double),
                  prefixes=["TEMPORARY"])
    stage.create(conn)
    return stage


def _copy_into(conn: Connection, table: str, ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> None:
    """``COPY`` one chunk into ``table`` as CSV written by pyarrow (in C++, exact to the last bit)."""
    buffer = io.BytesIO()
    pacsv.write_csv(pa.table({"id": ids, "score": scores}), buffer, pacsv.WriteOptions(include_header=False))
    raw: Any = conn.connection.driver_connection  # psycopg 3 (writer_url): its COPY takes the bytes
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} (id, score) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())
