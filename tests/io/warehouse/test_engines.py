"""Every engine returns the same rows with the same types, and binds values, never splices them.

Runs on PostgreSQL (all three engines) and SQLite (the generic one).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from sqlalchemy import create_engine, text

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.data.demo_warehouse import build_demo_warehouse
from ml_tasks.io.warehouse import available_engines, stream_query
from tests.io.warehouse.queries import PG_ENGINES, collect, spec_column_types

AS_OF = datetime(2024, 3, 1)
WINDOW = {"window_start": AS_OF - timedelta(days=365), "as_of": AS_OF}
CREDIT_SQL = (REPO_ROOT / "include" / "sql" / "credit_default.sql").read_text()


def test_engine_choice():
    assert available_engines("sqlite:///x.db") == ["sqlalchemy"]
    assert available_engines("postgresql+psycopg://u@h/db") == PG_ENGINES
    assert available_engines("postgresql://u@h/db") == PG_ENGINES  # any driver in the URL
    with pytest.raises(ValueError, match="engine 'adbc' cannot read from a sqlite warehouse"):
        stream_query("sqlite:///x.db", "SELECT 1", {}, {}, engine="adbc")


def test_every_engine_returns_the_credit_window_of_the_generic_path(postgres_url, sqlite_warehouse, demo_spec):
    build_demo_warehouse(postgres_url, rows=3000, seed=5)
    types = spec_column_types(demo_spec)
    # The generic path on SQLite is the reference. The same seeded warehouse read through
    # PostgreSQL must match it value for value, including the point-in-time subqueries and
    # the DateTime parameter comparisons SQLite does on text.
    reference = collect(sqlite_warehouse, CREDIT_SQL, WINDOW, types, batch_rows=700)
    assert reference.num_rows > 500
    assert reference.schema.field("applied_at").type == pa.timestamp("us")
    assert reference.schema.field("income").type == pa.float64()
    assert reference.schema.field("application_id").type == pa.int64()
    assert reference.schema.field("channel").type == pa.large_string()
    assert reference.column_names[:5] == ["application_id", "customer_id", "applied_at", "observed_at", "defaulted"]
    # Only mature labels inside the window: the parameters really were compared as datetimes.
    assert pa.compute.max(reference["observed_at"]).as_py() <= AS_OF
    assert pa.compute.min(reference["applied_at"]).as_py() >= WINDOW["window_start"]

    assert available_engines(postgres_url) == PG_ENGINES
    for engine in ["auto", *PG_ENGINES]:
        table = collect(postgres_url, CREDIT_SQL, WINDOW, types, batch_rows=700, engine=engine)
        assert table.schema == reference.schema, engine
        assert table.equals(reference), engine


# ---------------------------------------------------------------------------------------------
# Parameters are bound, never spliced
# ---------------------------------------------------------------------------------------------

TRICKY_NAMES = ["O'Brien", "back\\slash", "x' OR '1'='1", "'; DROP TABLE people; --", "100% :colon"]


def check_binding(url: str, engine: str) -> None:
    sql = "SELECT name, score FROM people WHERE name = :name ORDER BY score"
    for name in TRICKY_NAMES:
        table = collect(url, sql, {"name": name}, {"score": "float64"}, engine=engine)
        assert table["name"].to_pylist() == [name], (engine, name)
    for attack in ["nobody' OR '1'='1", "nobody'; DROP TABLE people; --", "nobody\\' OR 1=1 --"]:
        assert collect(url, sql, {"name": attack}, engine=engine).num_rows == 0, (engine, attack)
    assert collect(url, "SELECT count(*) AS n FROM people", engine=engine)["n"].to_pylist() == [len(TRICKY_NAMES)]
    # Other value types bind too, next to literal colons and casts the parser must leave alone.
    table = collect(url, "SELECT name FROM people WHERE score > :low AND score < :high AND name <> 'a:b' "
                         "ORDER BY score", {"low": 1, "high": 3.5}, engine=engine)
    assert table["name"].to_pylist() == TRICKY_NAMES[1:3]


def people(url: str) -> None:
    values = ", ".join(f"(:n{i}, {i + 1}.0)" for i in range(len(TRICKY_NAMES)))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE people (name VARCHAR(64), score FLOAT)"))
        conn.execute(text(f"INSERT INTO people VALUES {values}"), {f"n{i}": n for i, n in enumerate(TRICKY_NAMES)})
    engine.dispose()


def test_values_are_bound_on_postgres(postgres_url):
    people(postgres_url)
    for engine in PG_ENGINES:
        check_binding(postgres_url, engine)
    with pytest.raises(ValueError, match="parameter.*'name'.*no value"):
        stream_query(postgres_url, "SELECT * FROM people WHERE name = :name", {}, {})


def test_values_are_bound_on_sqlite(sqlite_url):
    people(sqlite_url)
    check_binding(sqlite_url, "sqlalchemy")

