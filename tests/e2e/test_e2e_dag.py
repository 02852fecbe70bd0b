"""End to end: the real retrain DAG run by ``airflow dags test`` on a tiny embedded warehouse.

One Airflow home, MLflow store and artifact store for the whole module; the tests run in
order and each builds on the registry state the previous one left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from selenium.webdriver.common.by import By

from ml_tasks.core.settings import REPO_ROOT, load_settings
from ml_tasks.io.store import store_from_settings
from ml_tasks.reporting import gate_results
from refit_airflow.demo import DagRunFailedError, airflow_env, run_dag_test
from tests.e2e.embedded import embedded_home

pytestmark = pytest.mark.e2e
MODEL = "credit_default"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return embedded_home(tmp_path_factory, "e2e")


def mlflow_client(settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def versions(settings) -> list:
    return mlflow_client(settings).search_model_versions(f"name = '{MODEL}'")


def alias_version(settings, alias: str) -> str:
    return str(mlflow_client(settings).get_model_version_by_alias(MODEL, alias).version)


def report_json(outcome) -> dict:
    return json.loads(Path(outcome.report_uri.replace(".html", ".json")).read_text())


def mapped_instances(settings, task_id: str, logical_date: str) -> list[tuple[int, str]]:
    """(map_index, state) of a task's instances in the run at ``logical_date``, from Airflow's database."""
    import sqlite3

    database = settings.home / "airflow" / "airflow.db"
    with sqlite3.connect(database) as conn:
        return conn.execute(
            "SELECT ti.map_index, ti.state FROM task_instance ti JOIN dag_run dr ON dr.run_id = ti.run_id "
            "AND dr.dag_id = ti.dag_id WHERE ti.dag_id = ? AND ti.task_id = ? AND dr.logical_date LIKE ? "
            "ORDER BY dr.id DESC, ti.map_index", (f"retrain_{MODEL}", task_id, f"{logical_date}%")).fetchall()


def run_note(settings, logical_date: str) -> str | None:
    """The note of the latest run at ``logical_date``, as the Airflow UI shows it."""
    import sqlite3

    with sqlite3.connect(settings.home / "airflow" / "airflow.db") as conn:
        row = conn.execute(
            "SELECT n.content FROM dag_run dr JOIN dag_run_note n ON n.dag_run_id = dr.id WHERE dr.dag_id = ? "
            "AND dr.logical_date LIKE ? ORDER BY dr.id DESC LIMIT 1",
            (f"retrain_{MODEL}", f"{logical_date}%")).fetchone()
    return row[0] if row else None


def champion_events(settings) -> list[dict]:
    """The events of the champion Asset (``refit://credit_default/champion``), oldest first, each
    with the task that emitted it and its extra, from Airflow's database."""
    import sqlite3

    with sqlite3.connect(settings.home / "airflow" / "airflow.db") as conn:
        rows = conn.execute(
            "SELECT e.source_task_id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri = ? ORDER BY e.id", (f"refit://{MODEL}/champion",)).fetchall()
    return [{"task": task, **json.loads(extra or "{}")} for task, extra in rows]


def test_first_run_registers_champion_version_1_with_lineage_and_report(settings):
    outcome = run_dag_test(settings, MODEL, "2024-03-01")
    assert outcome.verdict == "PASS"
    assert outcome.champion_version == "1"
    champion = mlflow_client(settings).get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == "1"
    tags = champion.tags
    assert tags["refit.dag_run_id"].startswith("manual__")
    assert len(tags["refit.snapshot_id"]) == 16 and len(tags["refit.spec_hash"]) == 16
    assert tags["refit.report_uri"] == outcome.report_uri
    html = Path(outcome.report_uri).read_text()
    assert 'id="verdict"' in html and "PASS" in html
    report = report_json(outcome)
    assert report["registration"]["action"] == "registered"
    # Both candidates were trained as mapped task instances and scored on the same test rows.
    assert {s["name"] for s in report["evaluation"]["candidates"]} == {"logistic_baseline", "lightgbm"}
    assert report["snapshot"]["as_of"].startswith("2024-03-01")
    # Backtest folds ran as mapped task instances: 4 folds x 2 candidates (no champion yet), cut
    # into between one task per candidate and one per fold, as a task start and a fold cost.
    backtest = mapped_instances(settings, "backtest", "2024-03-01")
    assert 2 <= len(backtest) <= 8 and sorted(index for index, _ in backtest) == list(range(len(backtest)))
    assert {state for _, state in backtest} == {"success"}
    assert report["backtest"]["per_fold"].keys() == {"logistic_baseline", "lightgbm"}
    assert all(len(folds) == 4 for folds in report["backtest"]["per_fold"].values())
    assert report["backtest"]["curve"]["summary"] and 'id="cadence"' in html
    assert report["calibration"]["method"] in {"none", "sigmoid", "isotonic", "temperature"}
    assert html.count("data:image/png;base64,") >= 3  # fold chart, staleness curve, reliability diagram
    # The verdict is the DAG run's note in the Airflow UI.
    note = run_note(settings, "2024-03-01")
    assert note is not None and note.startswith("**PASS**") and outcome.report_uri in note
    # The promotion is announced once, as the champion Asset's event with the version in its extra.
    events = champion_events(settings)
    assert [(e["task"], e["version"], e["action"]) for e in events] == [("announce_champion", "1", "registered")]


def test_status_cli_shows_champion_and_last_verdict(settings):
    out = subprocess.run([sys.executable, "-m", "ml_tasks", "status", "--model", MODEL, "--json"],
                         env=airflow_env(settings), capture_output=True, text=True, check=True).stdout
    status = json.loads(out)
    assert status["champion"]["version"] == "1"
    assert status["last_run"]["verdict"] == "PASS"
    assert Path(status["last_run"]["html_uri"]).is_file()


def test_trigger_with_out_of_bounds_param_is_refused(settings):
    with pytest.raises(DagRunFailedError, match="sample_size"):
        run_dag_test(settings, MODEL, "2024-04-01", conf={"sample_size": 5})
    assert len(versions(settings)) == 1


def test_rejected_challenger_never_moves_the_champion(settings, tmp_path):
    include = tmp_path / "include"
    shutil.copytree(REPO_ROOT / "include", include)
    spec_file = include / "models" / f"{MODEL}.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["acceptance"]["thresholds"]["roc_auc"] = {"min": 0.99}  # no model on this data gets there
    spec_file.write_text(yaml.safe_dump(spec))
    strict = load_settings({"REFIT_HOME": str(settings.home), "REFIT_INCLUDE_DIR": str(include)})
    # The baseline alone is enough to be rejected by a bar no model reaches, at half the cost.
    outcome = run_dag_test(strict, MODEL, "2024-06-01", conf={"candidates": ["logistic_baseline"]})
    assert outcome.verdict == "FAIL"
    note = run_note(settings, "2024-06-01")
    assert note.startswith("**FAIL**") and "misses the spec's min >= 0.99" in note
    report = report_json(outcome)
    assert any("misses the spec's min >= 0.99" in reason for reason in report["failing"])
    assert report["registration"]["action"] == "skipped_failed_gate"
    assert len(versions(settings)) == 1 and alias_version(settings, "champion") == "1"
    assert "FAIL" in Path(outcome.report_uri).read_text()
    assert [e["version"] for e in champion_events(settings)] == ["1"], "a FAIL announced a champion"
    # The person on call hears about it: the default channel is the log file.
    notifications = [json.loads(line) for line in (settings.home / "notifications.log").read_text().splitlines()]
    assert notifications[-1]["kind"] == "gate_failed" and notifications[-1]["report_uri"] == outcome.report_uri
    assert any("misses the spec's min >= 0.99" in reason for reason in notifications[-1]["reasons"])


def test_second_run_gates_challenger_against_champion_on_same_rows(settings):
    outcome = run_dag_test(settings, MODEL, "2024-09-01")
    report = report_json(outcome)
    comparison = next(c for c in report["gate"]["checks"] if c["name"].startswith("champion:"))
    assert comparison["reference"] is not None and comparison["p_value"] is not None
    assert comparison["ci_low"] <= comparison["difference"] <= comparison["ci_high"]
    assert report["evaluation"]["champion_version"] == "1"
    # The champion's recipe was retrained on the same folds as the candidates.
    assert 3 <= len(mapped_instances(settings, "backtest", "2024-09-01")) <= 12
    assert all(len(folds) == 4 for folds in report["backtest"]["per_fold"].values())
    assert set(report["backtest"]["shown"]) == {report["gate"]["challenger"], "champion"}
    if outcome.verdict == "PASS":
        assert alias_version(settings, "champion") == "2" and alias_version(settings, "previous") == "1"
        assert [e["version"] for e in champion_events(settings)] == ["1", "2"]
    else:
        assert alias_version(settings, "champion") == "1" and len(versions(settings)) == 1
        assert [e["version"] for e in champion_events(settings)] == ["1"]


def test_gate_results_view_in_the_airflow_ui_lists_runs_and_opens_reports(settings):
    """The on-call view, in headless Chromium against the real API server with the plugin."""
    from tests.e2e.airflow_ui import api_server, chromium
    from tests.e2e.ui_checks import (
        extra_links,
        listed_results,
        log_in,
        open_plugin_frame,
        report_banner,
    )

    recorded = gate_results.recent_results(store_from_settings(settings), MODEL)
    with api_server(settings) as server, chromium() as driver:
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"{server.url}/refit/", timeout=30)  # no login, no view

        log_in(driver, server)
        open_plugin_frame(driver, server, "/plugin/refit-gate-results")
        rows = listed_results(driver)
        assert [(r["run_key"], r["verdict"]) for r in rows] == [(r.run_key, r.verdict) for r in recorded]
        assert {"PASS", "FAIL"} <= {r["verdict"] for r in rows}
        assert {"2024-03-01", "2024-06-01", "2024-09-01"} <= {r["as_of"] for r in rows}

        rejected = next(r for r in rows if r["as_of"] == "2024-06-01")
        driver.find_element(By.CSS_SELECTOR, f"tr[data-run-key='{rejected['run_key']}'] a.report-link").click()
        assert report_banner(driver).startswith("FAIL · credit_default · as of 2024-06-01")

        # The DAG run's own "Gate report" tab and the gate task's extra links lead to the same report.
        second = next(r for r in recorded if r.as_of.startswith("2024-09-01"))
        driver.switch_to.default_content()
        open_plugin_frame(driver, server, f"/dags/retrain_{MODEL}/runs/{second.dag_run_id}/plugin/refit-gate-report")
        assert f"{second.verdict} · credit_default · as of 2024-09-01" in report_banner(driver)
        links = extra_links(server, f"retrain_{MODEL}", second.dag_run_id, "gate")
        assert links["Gate report"].startswith("/refit/runs/") and links["MLflow run"].endswith("/mlflow")
        assert extra_links(server, f"retrain_{MODEL}", second.dag_run_id, "extract")["Gate report"] is None
