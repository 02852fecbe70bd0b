"""End to end on a second warehouse (``tests/e2e/loan_warehouse.py``): the real retrain DAG, run
by ``airflow dags test``, on loan approvals whose risk flips at a known date.

The first run registers a champion on the old regime. After the drift that champion ranks
applicants worse than chance: the next run's report opens with it failing its own bars and a
``champion_degraded`` notification goes out. Then the spec drops a feature (and its query the
column) that the champion was trained on: the run cannot score the champion, and ends in FAIL
with a report and a notification that name the column, instead of crashing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_tasks.core.settings import ensure_local_folders, load_settings
from refit_airflow.demo import prepare_airflow, run_dag_test
from tests.e2e.loan_warehouse import FEATURES, MODEL, build_loan_warehouse, write_include

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def loan(tmp_path_factory):
    root = tmp_path_factory.mktemp("loan")
    warehouse = f"sqlite:///{root / 'warehouse.db'}"
    build_loan_warehouse(warehouse)
    write_include(root / "include", warehouse)
    settings = load_settings({"REFIT_HOME": str(root / "refit"), "REFIT_INCLUDE_DIR": str(root / "include")})
    ensure_local_folders(settings)
    prepare_airflow(settings)
    return settings, warehouse


def report_of(outcome) -> dict:
    return json.loads(Path(outcome.report_uri.replace(".html", ".json")).read_text())


def notifications(settings) -> list[dict]:
    log = settings.home / "notifications.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_champion_collapsed_by_drift_opens_the_report_and_is_notified(loan):
    settings, _ = loan
    first = run_dag_test(settings, MODEL, "2024-03-01")
    assert (first.verdict, first.champion_version) == ("PASS", "1")

    after_drift = run_dag_test(settings, MODEL, "2024-12-15")

    report = report_of(after_drift)
    champion_auc = report["evaluation"]["champion"]["metrics"]["roc_auc"]
    assert champion_auc < 0.6 and report["gate"]["champion_degraded"] is True
    assert [c["name"] for c in report["gate"]["champion_health"] if not c["passed"]] == [
        "champion_health:roc_auc:min"]
    html = Path(after_drift.report_uri).read_text()
    assert html.index('id="champion-health"') < html.index('id="checks"')
    degraded = [n for n in notifications(settings) if n["kind"] == "champion_degraded"]
    assert len(degraded) == 1 and "v1 fails its own bars: roc_auc" in degraded[0]["summary"]


def test_a_spec_that_drops_a_column_the_champion_needs_fails_with_a_report_naming_it(loan):
    settings, warehouse = loan
    kept = [name for name in FEATURES if name != "salary"]
    write_include(Path(settings.include_dir), warehouse, features=kept, sql_columns=kept)

    outcome = run_dag_test(settings, MODEL, "2025-01-01")

    assert outcome.verdict == "FAIL" and Path(outcome.report_uri).is_file()
    report = report_of(outcome)
    assert report["failing"][0].startswith("champion:") or "salary" in report["failing"][0]
    assert any("salary" in reason for reason in report["failing"])
    failed = [n for n in notifications(settings) if n["kind"] == "gate_failed"]
    assert failed and "salary" in failed[-1]["summary"]
