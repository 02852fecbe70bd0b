"""Bad data in a real warehouse stops the run with a clear message, and nothing is written
under the snapshot's final name (extract stages the data; only validation commits it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ml_tasks.core.plan import make_plan
from ml_tasks.core.spec import load_spec
from ml_tasks.data.extract import ExtractError, commit_snapshot, extract_snapshot
from ml_tasks.data.validate import DataValidationError, run_validation
from ml_tasks.io.store import store_from_settings
from tests.conftest import DEMO_SPEC

AS_OF = "2024-03-01"


@pytest.fixture
def damaged(tiny_warehouse_url, tmp_path):
    """A private copy of the tiny warehouse and a function that runs SQL against it."""
    path = tmp_path / "warehouse.db"
    shutil.copyfile(tiny_warehouse_url.removeprefix("sqlite:///"), path)
    url = f"sqlite:///{path}"

    def run(*scripts: str) -> str:
        engine = create_engine(url)
        with engine.begin() as conn:
            for statement in (s for script in scripts for s in script.split(";") if s.strip()):
                conn.execute(text(statement))
        engine.dispose()
        return url

    return run


def extract_and_validate(spec_path: Path, settings, url: str, as_of: str = AS_OF):
    spec = load_spec(spec_path)
    store = store_from_settings(settings)
    plan = make_plan(spec, spec_path, spec_path.parents[1], store.layout, as_of)
    snapshot = extract_snapshot(spec, plan, store, url, spec_path.parents[1])
    return run_validation(spec, plan, snapshot, store), store


def committed_snapshots(settings) -> list[str]:
    store = store_from_settings(settings)
    return store.list(store.uri("snapshots", "credit_default"))


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("ALTER TABLE customers RENAME COLUMN income TO income_usd", ExtractError,
         r"query sql/credit_default.sql over tables customers, applications, outcomes failed: .*income"),
        ("UPDATE customers SET income = 'n/a' WHERE customer_id % 7 = 0", ExtractError,
         r"column 'income': expected float64 \(the warehouse returned .*string\), got values like 'n/a'"),
        ("UPDATE outcomes SET defaulted = 0", DataValidationError,
         r"column 'defaulted': 1 distinct value\(s\) \[0\]; expected both classes"),
        ("UPDATE outcomes SET defaulted = 2 WHERE defaulted = 1", DataValidationError,
         r"column 'defaulted': values \[2\] outside the spec's \[0, 1\]"),
        # An upstream copy of the table without its NOT NULL constraint, then a broken load.
        ("CREATE TABLE loose AS SELECT * FROM customers; DROP TABLE customers; ALTER TABLE loose RENAME TO customers; "
         "UPDATE customers SET income = NULL WHERE customer_id % 10 < 3", DataValidationError,
         r"column 'income': null rate 0\.\d+ above the spec's limit 0.02"),
        ("UPDATE applications SET amount = 9e999 WHERE application_id % 50 = 0", DataValidationError,
         r"inf values \(expected finite\): \{'amount': \d+\}"),
    ],
)
def test_bad_warehouse_data_fails_with_its_column_and_commits_nothing(damaged, refit_home, damage, error, message):
    with pytest.raises(error, match=message):
        extract_and_validate(DEMO_SPEC, refit_home, damaged(damage))
    assert committed_snapshots(refit_home) == []


def test_query_without_maturity_filter_is_caught_as_time_leakage(damaged, refit_home, tmp_path):
    include = tmp_path / "include"
    shutil.copytree(DEMO_SPEC.parents[1], include)
    sql = include / "sql" / "credit_default.sql"
    # A query that forgot both the as-of bound and label maturity.
    sql.write_text(sql.read_text().replace("AND a.applied_at < :as_of", "AND :as_of IS NOT NULL")
                   .replace("AND o.observed_at <= :as_of", ""))
    with pytest.raises(DataValidationError) as failure:
        extract_and_validate(include / "models" / "credit_default.yaml", refit_home, damaged())
    assert "labels observed after the as-of date" in str(failure.value)
    assert "column 'applied_at'" in str(failure.value) and "at or after the as-of date" in str(failure.value)
    assert committed_snapshots(refit_home) == []


def test_window_far_smaller_than_the_previous_snapshot_fails(damaged, refit_home):
    url = damaged()
    validation, store = extract_and_validate(DEMO_SPEC, refit_home, url, "2024-03-01")
    assert store.exists(validation.snapshot.uri)
    before = committed_snapshots(refit_home)
    damaged("DELETE FROM applications WHERE application_id % 10 < 7")
    with pytest.raises(DataValidationError, match=r"x the previous snapshot's \d+; expected between 0.5x and 2.0x"):
        extract_and_validate(DEMO_SPEC, refit_home, url, "2024-04-01")
    assert committed_snapshots(refit_home) == before


def test_committing_twice_is_harmless(damaged, refit_home):
    validation, store = extract_and_validate(DEMO_SPEC, refit_home, damaged())
    assert commit_snapshot(validation.snapshot, store) == validation.snapshot
