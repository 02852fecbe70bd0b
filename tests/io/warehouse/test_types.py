"""Typed columns: nulls kept, values converted to the spec's types, and errors that name the column.

Runs on PostgreSQL (all three engines) and SQLite (the generic one).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from ml_tasks.io.warehouse import ExtractTypeError
from tests.io.warehouse.queries import PG_ENGINES, collect, execute

NULLS_TABLE = (
    "CREATE TABLE readings (id BIGINT NOT NULL, x FLOAT, s VARCHAR(16), t TIMESTAMP, n INTEGER)",
    "INSERT INTO readings VALUES (1, 1.5, 'a', '2024-01-02 03:04:05.678901', 7), "
    "(2, NULL, '', NULL, NULL), (3, -2.0, NULL, '2024-02-29 00:00:00', 9)",
)
NULLS_TYPES = {"id": "int64", "x": "float64", "s": "string", "t": "timestamp", "n": "float64"}


def check_nulls(url: str, engine: str) -> None:
    table = collect(url, "SELECT id, x, s, t, n FROM readings ORDER BY id", {}, NULLS_TYPES, engine=engine)
    assert table.schema == pa.schema([("id", pa.int64()), ("x", pa.float64()), ("s", pa.large_string()),
                                      ("t", pa.timestamp("us")), ("n", pa.float64())]), engine
    assert table.to_pylist() == [
        {"id": 1, "x": 1.5, "s": "a", "t": datetime(2024, 1, 2, 3, 4, 5, 678901), "n": 7.0},
        {"id": 2, "x": None, "s": "", "t": None, "n": None},  # '' stays distinct from NULL
        {"id": 3, "x": -2.0, "s": None, "t": datetime(2024, 2, 29), "n": 9.0},
    ], engine
    with pytest.raises(ExtractTypeError, match=r"column 'n': expected int64.*1 null") as caught:
        collect(url, "SELECT id, n FROM readings ORDER BY id", {}, {"id": "int64", "n": "int64"}, engine=engine)
    assert caught.value.column == "n"
    with pytest.raises(ExtractTypeError, match=r"column 'missing'.*no such column"):
        collect(url, "SELECT id FROM readings", {}, {"missing": "float64"}, engine=engine)
    # An empty result still yields one batch, with the requested types.
    empty = collect(url, "SELECT id, x, s, t, n FROM readings WHERE id < 0", {}, NULLS_TYPES, engine=engine)
    assert empty.num_rows == 0
    assert empty.schema.field("t").type == pa.timestamp("us") and empty.schema.field("x").type == pa.float64()


def check_bad_float(url: str, engine: str) -> None:
    sql = "SELECT id, v AS income FROM (SELECT 1 AS id, '1.5' AS v UNION ALL SELECT 2, 'abc' UNION ALL " \
          "SELECT 3, 'n/a' UNION ALL SELECT 4, NULL) AS q ORDER BY id"
    with pytest.raises(ExtractTypeError, match=r"column 'income': expected float64.*'abc', 'n/a'") as caught:
        collect(url, sql, {}, {"income": "float64"}, engine=engine)
    assert caught.value.column == "income" and caught.value.examples == ["abc", "n/a"]
    # Text that is a number converts.
    numbers = sql.replace("'abc'", "'2e3'").replace("'n/a'", "'-7'")
    good = collect(url, numbers, {}, {"income": "float64"}, engine=engine)
    assert good["income"].to_pylist() == [1.5, 2000.0, -7.0, None]
    # A fractional value cannot become an int64.
    with pytest.raises(ExtractTypeError, match=r"column 'x': expected int64.*1\.5"):
        collect(url, "SELECT x FROM readings WHERE x IS NOT NULL", {}, {"x": "int64"}, engine=engine)


def test_nulls_and_type_errors_on_postgres(postgres_url):
    execute(postgres_url, *NULLS_TABLE)
    for engine in PG_ENGINES:
        check_nulls(postgres_url, engine)
        check_bad_float(postgres_url, engine)


def test_nulls_and_type_errors_on_sqlite(sqlite_url):
    execute(sqlite_url, *NULLS_TABLE)
    check_nulls(sqlite_url, "sqlalchemy")
    check_bad_float(sqlite_url, "sqlalchemy")
    # SQLite stores any value in any column: text in a FLOAT column is caught by name.
    execute(sqlite_url, "INSERT INTO readings VALUES (4, 'oops', 'b', NULL, 1)")
    with pytest.raises(ExtractTypeError, match=r"column 'x': expected float64.*'oops'"):
        collect(sqlite_url, "SELECT id, x FROM readings ORDER BY id", {}, {"x": "float64"}, batch_rows=2)


def test_timestamps_are_naive_utc_microseconds(postgres_url):
    sql = ("SELECT TIMESTAMPTZ '2024-01-01 05:00:00+02' AS aware, TIMESTAMPTZ '2024-06-30 23:30:00.25-01' AS kept, "
           "DATE '2024-03-01' AS day, '2024-07-01T10:00:00' AS iso_text")
    types = {"aware": "timestamp", "day": "timestamp", "iso_text": "timestamp"}
    for engine in PG_ENGINES:
        table = collect(postgres_url, sql, {}, types, engine=engine)
        row = table.to_pylist()[0]
        assert row["aware"] == datetime(2024, 1, 1, 3), engine
        assert row["day"] == datetime(2024, 3, 1) and row["iso_text"] == datetime(2024, 7, 1, 10), engine
        assert table.schema.field("aware").type == pa.timestamp("us"), engine
        if engine != "sqlalchemy":  # unrequested timestamptz keeps the engine's zone-aware type
            assert table.schema.field("kept").type == pa.timestamp("us", tz="UTC"), engine
        if engine != "sqlalchemy":  # psycopg itself refuses 'infinity' on the generic path
            with pytest.raises(ExtractTypeError, match="column 'never': expected timestamp"):
                collect(postgres_url, "SELECT TIMESTAMP 'infinity' AS never", {}, {"never": "timestamp"}, engine=engine)
        # Aware parameters are compared as naive UTC, the warehouse's convention.
        aware = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
        got = collect(postgres_url, "SELECT CAST(:at AS TIMESTAMP) AS at", {"at": aware}, {"at": "timestamp"},
                      engine=engine)
        assert got["at"].to_pylist() == [datetime(2024, 1, 1, 10)], engine


