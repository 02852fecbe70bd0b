"""What the warehouse tests share: run a query to one table, run statements, the spec's types."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from sqlalchemy import create_engine, text

from ml_tasks.core.spec import ModelSpec
from ml_tasks.io.warehouse import stream_query

PG_ENGINES = ["adbc", "copy_csv", "sqlalchemy"]


def collect(url: str, sql: str, params: dict[str, Any] | None = None, column_types: dict[str, Any] | None = None,
            **kwargs: Any) -> pa.Table:
    """Every batch of the query as one table, after checking there was one schema and at least one batch."""
    batches = list(stream_query(url, sql, params or {}, column_types or {}, **kwargs))
    assert batches, "stream_query must yield at least one batch"
    assert len({b.schema for b in batches}) == 1, "all batches share one schema"
    return pa.Table.from_batches(batches)


def execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def spec_column_types(spec: ModelSpec) -> dict[str, str]:
    """The types extract.coerce_types gives the spec's columns."""
    cols = spec.columns
    types = dict.fromkeys((cols.timestamp, cols.label_observed_at), "timestamp")
    types |= dict.fromkeys(spec.features.numeric, "float64")
    types |= dict.fromkeys(spec.features.categorical, "string")
    types |= {name: "int64" for name in (cols.id, cols.label, cols.entity) if name}
    return types

