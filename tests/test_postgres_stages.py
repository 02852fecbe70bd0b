"""Extract, validate and sample on the real PostgreSQL warehouse, bad inputs included: the same
checks as on SQLite, and nothing committed under a snapshot's final name when a check fails."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from ml_tasks.core.columns import WEIGHT
from ml_tasks.core.plan import make_plan
from ml_tasks.data.extract import ExtractError, extract_snapshot
from ml_tasks.data.sample import run_sampling
from ml_tasks.data.validate import DataValidationError, run_validation
from ml_tasks.io.store import store_from_settings
from tests.conftest import DEMO_SPEC, TINY_ROWS


@pytest.fixture
def pg_warehouse(postgres_url):
    from ml_tasks.data.demo_warehouse import build_demo_warehouse

    build_demo_warehouse(postgres_url, rows=TINY_ROWS, seed=11)
    return postgres_url


def run(demo_spec, settings, url, as_of="2024-03-01"):
    store = store_from_settings(settings)
    plan = make_plan(demo_spec, DEMO_SPEC, settings.include_dir, store.layout, as_of, sample_size=2_000)
    validation = run_validation(demo_spec, plan, extract_snapshot(demo_spec, plan, store, url, settings.include_dir),
                                store)
    return validation, run_sampling(demo_spec, plan, validation, store), store


def damage(url: str, statement: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def test_extract_validate_and_sample_on_postgres(demo_spec, refit_home, pg_warehouse):
    validation, sample, store = run(demo_spec, refit_home, pg_warehouse)
    assert validation.snapshot.engine == "adbc" and store.exists(validation.snapshot.uri)
    frame = store.read_frame(sample.uri)
    snapshot = store.read_frame(validation.snapshot.uri)
    assert sample.rows == len(frame) == 2_000
    assert np.isclose(frame[WEIGHT].sum(), len(snapshot))
    assert np.isclose(sample.label_rate_reweighted, snapshot.defaulted.mean())


@pytest.mark.parametrize(
    ("statement", "error", "message"),
    [
        ("ALTER TABLE customers RENAME COLUMN income TO income_usd", ExtractError,
         r"customers, applications, outcomes .*income"),
        ("ALTER TABLE customers ALTER COLUMN income TYPE text; UPDATE customers SET income = 'n/a' "
         "WHERE customer_id % 7 = 0", ExtractError, r"column 'income': expected float64 .*'n/a'"),
        ("UPDATE outcomes SET defaulted = 0", DataValidationError, r"column 'defaulted': 1 distinct value"),
        ("UPDATE outcomes SET defaulted = 2 WHERE defaulted = 1", DataValidationError, r"values \[2\] outside"),
    ],
)
def test_bad_postgres_data_fails_naming_the_column_and_commits_nothing(demo_spec, refit_home, pg_warehouse,
                                                                       statement, error, message):
    for part in statement.split("; "):
        damage(pg_warehouse, part)
    with pytest.raises(error, match=message):
        run(demo_spec, refit_home, pg_warehouse)
    store = store_from_settings(refit_home)
    assert store.list(store.uri("snapshots", "credit_default")) == []
