"""Refit's Airflow plugin as Airflow loads it: the views, their UI entries, the links and the callback.

The browser test of the view itself runs the real API server on the end-to-end runs
(``tests/e2e/test_e2e_dag.py``); these check the wiring that test relies on, in seconds.
"""

from __future__ import annotations

import json
import os
import tempfile
from types import SimpleNamespace

import pytest

from ml_tasks.core.settings import REPO_ROOT
from refit_airflow.dag_ids import model_of, retrain_model_of

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))

from airflow.models.taskinstancekey import TaskInstanceKey

from refit_airflow.callbacks import notify_task_failure
from refit_airflow.links import GateReportLink, MlflowRunLink


def test_airflow_loads_the_plugin_with_its_view_ui_entries_and_links():
    from airflow import plugins_manager

    assert not plugins_manager.get_import_errors()
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [app["url_prefix"] for app in apps] == ["/refit"]
    views, _ = plugins_manager._get_ui_plugins()
    routes = {view["url_route"]: view for view in views}
    assert routes["refit-gate-results"]["destination"] == "nav" and routes["refit-gate-results"]["href"] == "/refit/"
    health = routes["refit-champion-health"]
    assert (health["name"], health["destination"], health["category"], health["href"]) == (
        "Champion health", "nav", "browse", "/refit/health/")
    served = {route.path for route in apps[0]["app"].routes}
    assert {"/health/", "/api/health", "/", "/api/results"} <= served  # one app serves both views
    assert routes["refit-gate-report"]["destination"] == "dag_run"
    assert routes["refit-gate-report"]["href"] == "/refit/runs/{DAG_ID}/{RUN_ID}"
    assert {link.name for link in plugins_manager.get_global_operator_extra_links()} == {"Gate report", "MLflow run"}


@pytest.mark.parametrize(("dag_id", "task_id", "linked"), [
    ("retrain_credit_default", "gate", True), ("retrain_credit_default", "report", True),
    ("retrain_credit_default", "extract", False), ("registry_credit_default", "gate", False),
])
def test_extra_links_appear_only_on_the_gate_and_report_tasks_of_retrain_runs(dag_id, task_id, linked):
    key = TaskInstanceKey(dag_id=dag_id, task_id=task_id, run_id="manual__2024-09-01T00:00:00+00:00", try_number=1)
    report, mlflow = GateReportLink().get_link(None, ti_key=key), MlflowRunLink().get_link(None, ti_key=key)
    if not linked:
        assert report == "" and mlflow == ""
        return
    # The run id is quoted so ':' and '+' survive the URL.
    assert report == f"/refit/runs/{dag_id}/manual__2024-09-01T00%3A00%3A00%2B00%3A00"
    assert mlflow == f"{report}/mlflow"


def test_a_task_that_fails_for_good_notifies_with_its_model_task_and_error(monkeypatch, tmp_path):
    monkeypatch.setenv("REFIT_HOME", str(tmp_path))
    context = {"ti": SimpleNamespace(dag_id="retrain_credit_default", task_id="extract", run_id="manual__1"),
               "exception": ValueError("column 'income': expected float, got text")}
    notify_task_failure(context)
    record = json.loads((tmp_path / "notifications.log").read_text())
    assert record["kind"] == "task_failed" and record["model"] == "credit_default" and record["task_id"] == "extract"
    assert record["summary"] == ("credit_default: task extract failed: ValueError: column 'income': expected float, "
                                 "got text")


def test_model_names_come_from_both_refit_dag_families():
    assert model_of("retrain_credit_default") == model_of("registry_credit_default") == "credit_default"
    assert model_of("score_credit_default") == "credit_default"  # a failed scoring task names its model
    assert retrain_model_of("registry_credit_default") is None and model_of("retrain_") is None
