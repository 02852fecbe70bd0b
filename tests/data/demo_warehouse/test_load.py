"""Writing the demo warehouse (``ml_tasks.data.demo_warehouse.load``): the same seed stores the
same rows on every route, a rewrite replaces the tables or leaves them untouched, and the tables
carry their types, keys and indexes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ml_tasks.data.demo_warehouse import (
    APPLICATIONS,
    CUSTOMERS,
    DEFAULT_SETTINGS_PATH,
    OUTCOMES,
    DemoWarehouseSettings,
    WarehouseSummary,
    build_demo_warehouse,
    generate_tables,
    load,
    write_warehouse,
)

TABLES = (CUSTOMERS, APPLICATIONS, OUTCOMES)


def sqlite_url(tmp_path: Path, name: str = "w.db") -> str:
    return f"sqlite:///{tmp_path}/{name}"


def read_tables(url: str) -> dict[str, pd.DataFrame]:
    """All three tables through SQLAlchemy, in primary-key order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: pd.read_sql(sa.select(t).order_by(*t.primary_key.columns), conn) for t in TABLES
            }
    finally:
        engine.dispose()


def _plain(value: Any) -> Any:
    """Python scalars for a DBAPI: Timestamps become datetimes, numpy numbers Python numbers."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------


def test_same_seed_writes_identical_tables(tmp_path: Path) -> None:
    settings = DemoWarehouseSettings(rows=3_000, seed=11, chunk_rows=1_000)
    write_warehouse(sqlite_url(tmp_path, "a.db"), settings)
    write_warehouse(sqlite_url(tmp_path, "b.db"), settings)

    first, second = read_tables(sqlite_url(tmp_path, "a.db")), read_tables(sqlite_url(tmp_path, "b.db"))

    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], check_exact=True)


def test_different_seed_writes_different_tables(tmp_path: Path) -> None:
    write_warehouse(sqlite_url(tmp_path, "a.db"), DemoWarehouseSettings(rows=3_000, seed=11))
    write_warehouse(sqlite_url(tmp_path, "b.db"), DemoWarehouseSettings(rows=3_000, seed=12))

    first, second = read_tables(sqlite_url(tmp_path, "a.db")), read_tables(sqlite_url(tmp_path, "b.db"))

    for name in ("applications", "outcomes"):
        assert not first[name].equals(second[name]), name


# ---------------------------------------------------------------------------------------------
# the routes rows travel by
# ---------------------------------------------------------------------------------------------


def test_written_tables_equal_generated_frames_across_chunks(tmp_path: Path) -> None:
    # 2_345 rows in chunks of 500 leaves a partial last chunk in every table.
    settings = DemoWarehouseSettings(rows=2_345, seed=5, chunk_rows=500)
    write_warehouse(sqlite_url(tmp_path), settings)

    stored, generated = read_tables(sqlite_url(tmp_path)), generate_tables(settings)

    for name, frame in generated.items():
        pd.testing.assert_frame_equal(stored[name], frame, check_exact=True)


def test_sqlite_rows_equal_plain_core_inserts(tmp_path: Path) -> None:
    """The fast positional writer stores exactly the text and numbers Core inserts would."""
    settings = DemoWarehouseSettings(rows=800, seed=9)
    write_warehouse(sqlite_url(tmp_path, "fast.db"), settings)
    frames = generate_tables(settings)
    core = sa.create_engine(sqlite_url(tmp_path, "core.db"))
    with core.begin() as conn:
        CUSTOMERS.metadata.create_all(conn)
        for table in TABLES:
            records = frames[table.name].to_dict("records")
            conn.execute(table.insert(), [{k: _plain(v) for k, v in r.items()} for r in records])

    fast = sa.create_engine(sqlite_url(tmp_path, "fast.db"))
    with fast.connect() as written, core.connect() as expected:
        for table in TABLES:
            sql = f"SELECT * FROM {table.name} ORDER BY 1"
            assert written.exec_driver_sql(sql).fetchall() == expected.exec_driver_sql(sql).fetchall()
    fast.dispose()
    core.dispose()


def test_postgres_copy_stores_the_same_tables_as_sqlite(tmp_path: Path, postgres_url: str) -> None:
    settings = DemoWarehouseSettings(rows=3_000, seed=4, chunk_rows=1_000)

    summary = write_warehouse(postgres_url, settings)
    write_warehouse(sqlite_url(tmp_path), settings)

    assert "***" in summary.url or sa.make_url(postgres_url).password is None
    on_postgres, on_sqlite = read_tables(postgres_url), read_tables(sqlite_url(tmp_path))
    for name in on_sqlite:
        pd.testing.assert_frame_equal(on_postgres[name], on_sqlite[name], check_exact=True)


# ---------------------------------------------------------------------------------------------
# rewriting, in one transaction
# ---------------------------------------------------------------------------------------------


def test_rewriting_replaces_previous_tables(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    write_warehouse(url, DemoWarehouseSettings(rows=1_500, seed=1))
    write_warehouse(url, DemoWarehouseSettings(rows=400, seed=2))

    tables = read_tables(url)

    assert len(tables["applications"]) == len(tables["outcomes"]) == 400
    assert set(tables["applications"]["customer_id"]) == set(tables["customers"]["customer_id"])


def test_failed_rewrite_leaves_previous_tables_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = sqlite_url(tmp_path)
    write_warehouse(url, DemoWarehouseSettings(rows=700, seed=1))
    before = read_tables(url)
    load_table = load._load_table

    def fail_on_outcomes(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, chunk_rows: int) -> None:
        if table.name == "outcomes":
            raise RuntimeError("disk full")
        load_table(conn, table, frame, chunk_rows)

    monkeypatch.setattr(load, "_load_table", fail_on_outcomes)
    with pytest.raises(RuntimeError, match="disk full"):
        write_warehouse(url, DemoWarehouseSettings(rows=300, seed=2))

    after = read_tables(url)
    for name in before:
        pd.testing.assert_frame_equal(after[name], before[name])


# ---------------------------------------------------------------------------------------------
# what the tables look like, and the summary
# ---------------------------------------------------------------------------------------------


def test_tables_have_typed_columns_primary_keys_and_indexes(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    write_warehouse(url, DemoWarehouseSettings(rows=500))
    inspector = sa.inspect(sa.create_engine(url))

    expected_types = {
        "customers": {"customer_id": sa.Integer, "signup_date": sa.DateTime, "region": sa.String,
                      "age": sa.Integer, "income": sa.Float, "employment_years": sa.Float},
        "applications": {"application_id": sa.Integer, "customer_id": sa.Integer,
                         "applied_at": sa.DateTime, "amount": sa.Float, "term_months": sa.Integer,
                         "purpose": sa.String, "channel": sa.String, "credit_score": sa.Integer,
                         "existing_debt": sa.Float},
        "outcomes": {"application_id": sa.Integer, "defaulted": sa.Integer, "observed_at": sa.DateTime},
    }
    for table, columns in expected_types.items():
        found = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        assert list(found) == list(columns), table
        for column, kind in columns.items():
            assert isinstance(found[column], kind), f"{table}.{column} is {found[column]!r}"
    assert inspector.get_pk_constraint("customers")["constrained_columns"] == ["customer_id"]
    assert inspector.get_pk_constraint("applications")["constrained_columns"] == ["application_id"]
    assert inspector.get_pk_constraint("outcomes")["constrained_columns"] == ["application_id"]
    indexed = {(t, tuple(i["column_names"])) for t in ("applications", "outcomes") for i in inspector.get_indexes(t)}
    assert indexed >= {
        ("applications", ("customer_id", "applied_at")),
        ("applications", ("applied_at",)),
        ("outcomes", ("application_id",)),
        ("outcomes", ("observed_at",)),
    }


def test_build_demo_warehouse_returns_a_correct_summary(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)

    summary = build_demo_warehouse(url, rows=2_000, seed=7)

    tables = read_tables(url)
    applied = tables["applications"]["applied_at"]
    assert summary == WarehouseSummary(
        url=url,
        customers=len(tables["customers"]),
        applications=2_000,
        outcomes=2_000,
        positive_rate=float(tables["outcomes"]["defaulted"].mean()),
        first_applied_at=applied.min().to_pydatetime(),
        last_applied_at=applied.max().to_pydatetime(),
    )
    assert isinstance(summary.first_applied_at, datetime)
    assert datetime(2023, 1, 1) <= summary.first_applied_at < summary.last_applied_at < datetime(2025, 1, 1)
    assert summary == build_demo_warehouse(url, settings_path=DEFAULT_SETTINGS_PATH, rows=2_000, seed=7)
