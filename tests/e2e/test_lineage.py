"""OpenLineage events of the real retrain DAG, run by ``airflow dags test`` on the tiny embedded
warehouse: the OpenLineage provider, configured with a file transport, records what extraction
read (the spec's warehouse tables) and wrote (the snapshot), and what registration read (the
snapshot) and wrote (the model version). Unconfigured, it stays off: no events, no complaints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_tasks.core.spec import load_spec
from ml_tasks.io.store import store_from_settings
from refit_airflow.demo import run_dag_test
from tests.conftest import DEMO_SPEC
from tests.e2e.embedded import embedded_home

pytestmark = pytest.mark.e2e
MODEL = "credit_default"
NAMESPACE = "refit-lineage-test"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return embedded_home(tmp_path_factory, "lineage")


@pytest.fixture(scope="module")
def events(settings) -> list[dict]:
    """The events of one retrain run with OpenLineage writing to a file (one JSON event a line)."""
    path = settings.home / "openlineage" / "events.jsonl"
    path.parent.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT",
                   json.dumps({"type": "file", "log_file_path": str(path), "append": True}))
        env.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", NAMESPACE)
        outcome = run_dag_test(settings, MODEL, "2024-03-01", conf={"candidates": ["logistic_baseline"]})
    assert outcome.champion_version == "1"
    return [json.loads(line) for line in path.read_text().splitlines()]


def completed(events: list[dict], task_id: str) -> dict:
    """The COMPLETE event of ``task_id`` in the retrain run."""
    [event] = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"retrain_{MODEL}.{task_id}"]
    assert event["job"]["namespace"] == NAMESPACE
    return event


def snapshot_of(settings) -> dict:
    """The snapshot manifest of the latest run, from the artifact store."""
    store = store_from_settings(settings)
    report = store.read_json(store.layout.latest_report(MODEL))
    return json.loads(Path(report["json_uri"]).read_text())["snapshot"]


def test_extraction_reads_the_specs_warehouse_tables_and_writes_the_snapshot(settings, events):
    event = completed(events, "extract")
    assert settings.warehouse_url.startswith("sqlite:////")
    assert sorted((d["namespace"], d["name"]) for d in event["inputs"]) == sorted(
        (settings.warehouse_url, table) for table in load_spec(DEMO_SPEC).source.tables)
    snapshot = snapshot_of(settings)
    [output] = event["outputs"]
    assert (output["namespace"], output["name"]) == ("file", snapshot["uri"])
    assert output["facets"]["version"]["datasetVersion"] == snapshot["snapshot_id"]
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == snapshot["rows"]


def test_registration_reads_the_snapshot_and_writes_the_model_version(settings, events):
    event = completed(events, "register")
    snapshot = snapshot_of(settings)
    assert [(d["namespace"], d["name"], d["facets"]["version"]["datasetVersion"]) for d in event["inputs"]] == [
        ("file", snapshot["uri"], snapshot["snapshot_id"])]
    [output] = event["outputs"]
    assert output["namespace"] == f"mlflow+{settings.mlflow_tracking_uri}"
    assert (output["name"], output["facets"]["version"]["datasetVersion"]) == ("credit_default", "1")


def test_the_other_tasks_are_reported_without_datasets(events):
    event = completed(events, "validate")
    assert event["inputs"] == [] and event["outputs"] == []


def test_unconfigured_openlineage_stays_off_and_quiet(settings, events):
    before = len(events)
    outcome = run_dag_test(settings, MODEL, "2024-04-01", conf={"candidates": ["logistic_baseline"], "dry_run": True})
    assert outcome.verdict in {"PASS", "FAIL"}
    path = settings.home / "openlineage" / "events.jsonl"
    assert len(path.read_text().splitlines()) == before
    # Not a warning, not a line: the provider does not even load its listener.
    log = (settings.home / "logs" / f"dags-test-retrain_{MODEL}-2024-04-01.log").read_text()
    assert "openlineage" not in log.lower()
