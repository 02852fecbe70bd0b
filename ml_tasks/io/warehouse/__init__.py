"""Stream a parameterised query's result out of a SQL warehouse as typed Arrow record batches.

:func:`stream_query` is the one entry point. It takes a SQLAlchemy-style query (``:name``
placeholders, as in ``include/sql/*.sql``), the parameter values and the Arrow types the model
spec wants for some columns, and yields :class:`pyarrow.RecordBatch` objects of at most
``batch_rows`` rows. Memory stays bounded by a few batches whatever the size of the result, so
a result of any size can go to Parquet::

    batches = stream_query(url, sql, {"window_start": start, "as_of": as_of},
                           {"applied_at": "timestamp", "income": "float64", "region": "string"})
    first = next(batches)
    with pyarrow.parquet.ParquetWriter("snapshot.parquet", first.schema) as writer:
        writer.write_batch(first)
        for batch in batches:
            writer.write_batch(batch)

How a query travels
-------------------
1. An *engine* runs the query and yields raw record batches of any size, with its own types
   (below).
2. :class:`~ml_tasks.io.warehouse.types.Conformer` casts each batch to the types the spec asks
   for and keeps one schema across batches (:mod:`ml_tasks.io.warehouse.types` lists the
   conversions and the errors that name a column).
3. :func:`ml_tasks.io.arrow_stream.at_most` slices batches down to ``batch_rows``, and
   :func:`ml_tasks.io.arrow_stream.read_ahead` runs all of it on a background thread, two
   batches ahead of the caller. The thread opens, uses and closes the connection itself,
   because some drivers (sqlite3) refuse to share a connection across threads.

Engines
-------
``engine="auto"`` picks the first name :func:`available_engines` returns for the URL's dialect.
Another name chooses an engine explicitly, for tests and ``bench/bench_extract.py``.

``adbc`` (PostgreSQL, what ``auto`` picks there)
    Binary ``COPY`` decoded into Arrow in C++ by the ADBC libpq driver, read only when the next
    batch is asked for: about as fast as raw binary COPY and as ConnectorX, in bounded memory
    (:mod:`ml_tasks.io.warehouse.postgres`).
``copy_csv`` (PostgreSQL, used by ``auto`` when the ADBC driver is not installed)
    psycopg 3 CSV ``COPY`` parsed block by block by :func:`pyarrow.csv.read_csv`; needs only
    psycopg and pyarrow (:mod:`ml_tasks.io.warehouse.postgres`).
``sqlalchemy`` (every dialect; the only engine for SQLite and the others)
    A streaming SQLAlchemy cursor, each chunk turned into Arrow column by column. Several times
    slower, because every value passes through a Python object
    (:mod:`ml_tasks.io.warehouse.sqlalchemy_engine`).

ConnectorX is not an engine: it either loads the whole result or reads ahead without a limit
(the measurements are in :mod:`ml_tasks.io.warehouse.postgres`). Numbers for every engine are
in ``bench/bench_extract.py``'s output.

Values are always bound by the driver, or quoted by psycopg for ``COPY``, which cannot bind
parameters ("Parameters and COPY" in :mod:`ml_tasks.io.warehouse.postgres`): our code never
formats a value into SQL text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from ml_tasks.io.arrow_stream import at_most, read_ahead
from ml_tasks.io.warehouse.postgres import adbc_batches, copy_csv_batches
from ml_tasks.io.warehouse.sqlalchemy_engine import sqlalchemy_batches
from ml_tasks.io.warehouse.types import (
    ColumnTypes,
    Conformer,
    ExtractTypeError,
    TargetType,
    checked_target_types,
)
from ml_tasks.io.warehouse.urls import parse_url

__all__ = ["ENGINES", "ColumnTypes", "ExtractTypeError", "TargetType", "available_engines", "stream_query"]

#: An engine: (url, sql, bound parameter values, batch_rows) to raw record batches, at least one.
Engine = Callable[[str, str, Mapping[str, Any], int], Generator[pa.RecordBatch, None, None]]

_READERS: dict[str, Engine] = {
    "adbc": adbc_batches,
    "copy_csv": copy_csv_batches,
    "sqlalchemy": sqlalchemy_batches,
}

#: Every engine name :func:`stream_query` knows, in order of preference on PostgreSQL.
ENGINES: tuple[str, ...] = tuple(_READERS)


def available_engines(url: str) -> list[str]:
    """Names of the engines that can read from ``url``, fastest first.

    ``engine="auto"`` uses the first one. On PostgreSQL this is ``["adbc", "copy_csv",
    "sqlalchemy"]``, without ``adbc`` when ``adbc_driver_postgresql`` is not installed. On every
    other dialect it is ``["sqlalchemy"]``.

    >>> available_engines("sqlite:///warehouse.db")
    ['sqlalchemy']
    """
    if _backend(url) != "postgresql":
        return ["sqlalchemy"]
    engines = ["copy_csv", "sqlalchemy"]
    if _adbc_installed():
        engines.insert(0, "adbc")
    return engines


def stream_query(
    url: str,
    sql: str,
    params: Mapping[str, datetime | int | float | str],
    column_types: ColumnTypes,
    *,
    batch_rows: int = 131_072,
    engine: str = "auto",
) -> Iterator[pa.RecordBatch]:
    """Yield the query's rows as record batches of at most ``batch_rows`` rows.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the warehouse, e.g. ``sqlite:///warehouse.db`` or
        ``postgresql+psycopg://user@host:5432/db``. The PostgreSQL COPY engines connect with
        psycopg 3 or libpq, whatever driver the URL names.
    sql : str
        One SELECT with SQLAlchemy-style ``:name`` placeholders. The values are always bound
        by the driver, or quoted by it for COPY (see the package docstring). Our code never
        formats them into the text. Write ``\\:`` for a literal colon, as with ``text()``.
    params : mapping
        A value for every placeholder; extra keys are ignored. Timezone-aware datetimes are
        converted to naive UTC, the warehouse's convention. Naive datetimes are bound as
        ``DateTime``, so SQLite compares them in the text format it stores.
    column_types : mapping of column name to ``"timestamp"``, ``"float64"``, ``"int64"`` or ``"string"``
        The Arrow type these columns must have (see :mod:`ml_tasks.io.warehouse.types`). Other
        columns keep the engine's type. Every column named must exist in the result.
    batch_rows : int, default 131_072
        Upper bound on rows per batch. Engines may yield smaller batches.
    engine : str, default "auto"
        ``"auto"`` or one of :func:`available_engines`.

    Yields
    ------
    pyarrow.RecordBatch
        All batches have the same schema. At least one batch comes out, with zero rows for an
        empty result, so the schema is always known.

    Raises
    ------
    ValueError
        At call time: a URL that is not a SQLAlchemy URL (the message shows it with its password
        hidden), an unknown or unavailable engine, a missing parameter, an unknown type name in
        ``column_types``, or ``batch_rows < 1``.
    ExtractTypeError
        While iterating: a column named in ``column_types`` is missing or holds a value that
        cannot be converted.

    Errors from the database driver (a syntax error, a missing table) are raised while
    iterating too, unchanged: a caller that shows them passes them through
    :func:`ml_tasks.core.redact.redact` first, as :mod:`ml_tasks.data.extract` does.

    Notes
    -----
    A background thread reads up to two batches ahead while the caller works on the current
    one. Stopping early, by ``break`` or ``close()``, stops that thread and closes the
    connection, which aborts the query on the server.
    """
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    targets = checked_target_types(column_types)
    read = _READERS[_choose_engine(url, engine)]
    bound = _bound_params(sql, params)

    def produce() -> Generator[pa.RecordBatch, None, None]:
        # Runs on the read-ahead thread; closing it there closes the engine's connection there.
        conform = Conformer(targets)
        with closing(read(url, sql, bound, batch_rows)) as raw:
            yield from at_most(map(conform, raw), batch_rows)

    return read_ahead(produce, name="refit-extract-reader")


def _backend(url: str) -> str:
    return parse_url(url).get_backend_name()


@functools.cache
def _adbc_installed() -> bool:
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        return False
    return True


def _choose_engine(url: str, engine: str) -> str:
    engines = available_engines(url)
    if engine == "auto":
        return engines[0]
    if engine not in engines:
        raise ValueError(f"engine {engine!r} cannot read from a {_backend(url)} warehouse; "
                         f"expected 'auto' or one of {engines}")
    return engine


def _bound_params(sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The value of every placeholder in ``sql``, aware datetimes as naive UTC; a missing one is an error."""
    names = _placeholders(sql)
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(f"query parameter(s) {', '.join(repr(m) for m in missing)} have no value; "
                         f"the query uses {', '.join(repr(n) for n in names)}, got {sorted(params)}")
    return {name: _naive_utc(params[name]) for name in names}


def _placeholders(sql: str) -> list[str]:
    """Bind parameter names in ``sql``, parsed by SQLAlchemy's own ``text()`` rules.

    Parsing them with SQLAlchemy gives ``::`` casts and ``\\:`` escapes the same meaning here
    as in the rest of the pipeline. As with ``text()``, a ``:name`` inside a string literal or
    a comment counts as a placeholder too.
    """
    from sqlalchemy import text

    return list(text(sql).compile().params)


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value
