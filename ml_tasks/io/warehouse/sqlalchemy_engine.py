"""The ``sqlalchemy`` engine: any database SQLAlchemy can reach, as Arrow record batches.

``text()`` with driver-bound parameters, ``stream_results=True`` and ``yield_per``, each chunk
turned into Arrow column by column with :func:`pyarrow.array`. Several times slower than the
PostgreSQL ``COPY`` engines, because every value passes through a Python object, but it works
on every database SQLAlchemy can reach: it is the only engine for SQLite and the other dialects.

Like the other engines it yields raw record batches (any size, the types pyarrow infers from
the driver's values), at least one, with zero rows for an empty result;
:func:`ml_tasks.io.warehouse.stream_query` conforms and slices them.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

__all__ = ["sqlalchemy_batches"]


def sqlalchemy_batches(url: str, sql: str, params: Mapping[str, Any],
                       batch_rows: int) -> Generator[pa.RecordBatch, None, None]:
    """The query's rows in batches of ``batch_rows`` rows, read through a streaming cursor."""
    from sqlalchemy import DateTime, bindparam, create_engine, text

    # DateTime tells SQLAlchemy to send datetimes in the dialect's storage format, which for
    # SQLite is the text it compares against.
    statement = text(sql).bindparams(
        *(bindparam(name, type_=DateTime()) for name, value in params.items() if isinstance(value, datetime)))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # stream_results: a server-side cursor where the driver has one, so the driver never
            # holds the whole result.
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(statement, params)
            names = list(result.keys())
            produced = False
            for rows in result.partitions(batch_rows):
                produced = True
                yield pa.RecordBatch.from_arrays(
                    [_python_column(values) for values in zip(*rows, strict=True)], names=names)
            if not produced:
                yield pa.RecordBatch.from_arrays([pa.array([], pa.null()) for _ in names], names=names)
    finally:
        engine.dispose()


def _python_column(values: Sequence[Any]) -> pa.Array:
    """Arrow array from one column of driver values; the type is inferred by pyarrow in C."""
    try:
        return pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # Mixed kinds in one column (SQLite stores any value in any column) or a type pyarrow
        # does not know: take each value's text. The column's target type then parses it or
        # names the values that cannot be parsed.
        return pa.array([None if v is None else str(v) for v in values], pa.large_string())
