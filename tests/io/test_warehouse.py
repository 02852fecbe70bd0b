"""stream_query: every engine returns the same typed rows, binds values, keeps nulls, names bad
columns, respects batch_rows and keeps memory bounded. Runs on PostgreSQL and SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from sqlalchemy import create_engine, text

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.data.demo_warehouse import build_demo_warehouse
from ml_tasks.io.warehouse import ExtractTypeError, available_engines, stream_query

AS_OF = datetime(2024, 3, 1)
WINDOW = {"window_start": AS_OF - timedelta(days=365), "as_of": AS_OF}
CREDIT_SQL = (REPO_ROOT / "include" / "sql" / "credit_default.sql").read_text()
PG_ENGINES = ["adbc", "copy_csv", "sqlalchemy"]


def collect(url, sql, params=None, column_types=None, **kwargs) -> pa.Table:
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


def spec_column_types(spec) -> dict[str, str]:
    """The types extract.coerce_types gives the spec's columns."""
    cols = spec.columns
    types = {name: "timestamp" for name in (cols.timestamp, cols.label_observed_at)}
    types |= {name: "float64" for name in spec.features.numeric}
    types |= {name: "string" for name in spec.features.categorical}
    types |= {name: "int64" for name in (cols.id, cols.label, cols.entity) if name}
    return types


@pytest.fixture(scope="module")
def sqlite_warehouse(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('engines') / 'warehouse.db'}"
    build_demo_warehouse(url, rows=3000, seed=5)
    return url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'scratch.db'}"


# ---------------------------------------------------------------------------------------------
# Same content, same types
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Nulls, conversions and the errors that name a column
# ---------------------------------------------------------------------------------------------

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
        from datetime import timezone

        aware = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
        got = collect(postgres_url, "SELECT CAST(:at AS TIMESTAMP) AS at", {"at": aware}, {"at": "timestamp"},
                      engine=engine)
        assert got["at"].to_pylist() == [datetime(2024, 1, 1, 10)], engine


# ---------------------------------------------------------------------------------------------
# Batches and memory
# ---------------------------------------------------------------------------------------------


def test_batches_never_exceed_batch_rows(postgres_url, sqlite_url):
    pg_sql = "SELECT i AS id, i * 0.5 AS half FROM generate_series(1, 10000) AS i ORDER BY i"
    lite_sql = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10000) "
                "SELECT i AS id, i * 0.5 AS half FROM s")
    for url, sql, engines in ((postgres_url, pg_sql, PG_ENGINES), (sqlite_url, lite_sql, ["sqlalchemy"])):
        for engine in engines:
            sizes, ids = [], []
            for batch in stream_query(url, sql, {}, {"id": "int64", "half": "float64"}, batch_rows=999, engine=engine):
                sizes.append(batch.num_rows)
                ids.extend(batch["id"].to_pylist())
            assert max(sizes) <= 999 and sum(sizes) == 10000, (engine, sizes)
            assert ids == list(range(1, 10001)), engine


def test_stopping_early_closes_the_query(postgres_url):
    sql = "SELECT i, repeat('x', 100) AS pad FROM generate_series(1, 2000000) AS i"
    admin = create_engine(postgres_url)
    for engine in PG_ENGINES:
        batches = stream_query(postgres_url, sql, {}, {"i": "int64"}, batch_rows=1000, engine=engine)
        assert next(batches).num_rows == 1000
        batches.close()
        # The server notices the closed connection on its next write; give it a moment.
        for _ in range(50):
            with admin.connect() as conn:
                running = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                            "AND pid <> pg_backend_pid() AND state = 'active'")).scalar()
            if running == 0:
                break
            time.sleep(0.1)
        assert running == 0, engine
    admin.dispose()


MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    import pyarrow as pa
    from ml_tasks.io.warehouse import stream_query
    url, sql, engine, mode = sys.argv[1:5]
    types = {"id": "int64", "x": "float64", "t": "timestamp", "s": "string"}

    def peak_kib():
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child of a big pytest
        # process would start at the parent's peak and never seem to grow.
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    # Warm-up: load the driver and its libraries, so the baseline already counts them.
    for _ in stream_query(url, sql.replace("1000000", "10"), {}, types, engine=engine):
        pass
    base = peak_kib()
    kept, total = [], 0
    for batch in stream_query(url, sql, {}, types, batch_rows=5_000, engine=engine):
        total += batch.nbytes
        if mode == "keep":  # the control: what holding the whole result costs
            kept.append(batch)
    growth = peak_kib() - base
    print(json.dumps({"growth": growth * 1024, "total": total}))
""")


def peak_growth(url: str, sql: str, engine: str, mode: str = "stream") -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, url, sql, engine, mode], capture_output=True,
                          text=True, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["growth"], result["total"]


def test_memory_stays_bounded_for_a_million_rows(postgres_url, sqlite_url):
    pg_sql = ("SELECT i AS id, i * 1.5 AS x, TIMESTAMP '2024-01-01' + i * INTERVAL '1 second' AS t, "
              "repeat('x', 200) || i AS s FROM generate_series(1, 1000000) AS i")
    # About 230 MB of Arrow data; the stream must hold a small, fixed part of it.
    for engine in PG_ENGINES:
        growth, total = peak_growth(postgres_url, pg_sql, engine)
        assert total > 200e6, (engine, total)
        assert growth < total / 5, f"{engine}: peak RSS grew {growth / 1e6:.0f} MB for {total / 1e6:.0f} MB of rows"
    # The probe can see the difference: keeping the batches costs about the whole result.
    growth, total = peak_growth(postgres_url, pg_sql, "adbc", mode="keep")
    assert growth > total / 2, (growth, total)

    lite_sql = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000000) "
                "SELECT i AS id, i * 1.5 AS x, '2024-01-01 00:00:00.000000' AS t, "
                "printf('%.200c', 'x') || i AS s FROM s")
    growth, total = peak_growth(sqlite_url, lite_sql, "sqlalchemy")
    assert total > 200e6, total
    assert growth < total / 5, f"sqlite: peak RSS grew {growth / 1e6:.0f} MB for {total / 1e6:.0f} MB of rows"
