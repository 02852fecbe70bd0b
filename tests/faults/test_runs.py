"""Whole runs under faults: a dry run beside a real one, an unreachable MLflow, a trainer killed
while logging, a champion snapshot gone corrupt, and triggers that make no sense.

The runs are real (``pipeline.run_all``, the DAG's path without Airflow) on the tiny demo
warehouse, an embedded MLflow store and a local artifact store; kills are real SIGKILLs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ml_tasks import pipeline
from ml_tasks.core.plan import PlanError, make_plan
from ml_tasks.core.settings import Settings
from ml_tasks.io.store import store_from_settings
from ml_tasks.registry.tracking import TrackingUnavailable
from tests.conftest import DEMO_SPEC, isolated_env

MODEL = "credit_default"
SMALL = {"sample_size": 2_000, "candidates": ["logistic_baseline"]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_warehouse_url) -> tuple[Settings, dict]:
    """One home for the module: a real run of 2024-03-01 that registered version 1."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = isolated_env(monkeypatch, tmp_path_factory.mktemp("faults") / "refit")
        monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
        report = pipeline.run_all(str(DEMO_SPEC), "2024-03-01", **SMALL)
        assert report["verdict"] == "PASS" and report["champion_version"] == "1"
        yield settings, report


@pytest.fixture
def home(first_run, tiny_warehouse_url, monkeypatch) -> Settings:
    settings, _ = first_run
    isolated_env(monkeypatch, settings.home)
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    return settings


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_dry_run_never_touches_the_real_run_of_its_interval(home, first_run):
    _, real = first_run
    store = store_from_settings(home)
    real_folder = Path(store.layout.run(MODEL, real["run_key"]).prefix)
    latest = Path(store.layout.latest_report(MODEL))
    before, latest_before = files_under(real_folder), latest.read_bytes()

    dry = pipeline.run_all(str(DEMO_SPEC), "2024-03-01", dry_run=True, **SMALL)

    assert dry["run_key"] != real["run_key"] and dry["run_key"].startswith("20240301T000000-")
    assert files_under(real_folder) == before and latest.read_bytes() == latest_before
    dry_report = json.loads(Path(dry["json_uri"]).read_text())
    assert dry_report["plan"]["dry_run"] is True and dry_report["registration"]["action"] == "skipped_dry_run"
    history = sorted(path.name for path in Path(store.layout.report_history(MODEL)).iterdir())
    assert [name.endswith(f"-{real['run_key']}.json") for name in history].count(True) == 1
    assert [name.endswith(f"-{dry['run_key']}.json") for name in history].count(True) == 1


def test_an_mlflow_that_does_not_answer_stops_the_plan_before_any_data_is_read(home, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://refit:s3cret-canary@127.0.0.1:{port}")

    with pytest.raises(TrackingUnavailable, match=r"MLFLOW_TRACKING_URI\) did not answer") as failure:
        pipeline.plan_run(str(DEMO_SPEC), "2024-05-01", **SMALL)

    assert "s3cret-canary" not in str(failure.value)
    assert not list(Path(home.artifact_root, "runs", MODEL).glob("20240501T*"))  # no plan, nothing extracted


def test_a_trainer_killed_while_logging_leaves_no_running_mlflow_run_once_retried(home):
    from mlflow import MlflowClient

    plan = pipeline.plan_run(str(DEMO_SPEC), "2024-04-01", dag_run_id="manual__kill", **SMALL)
    split = pipeline.split(plan, pipeline.sample(plan, pipeline.validate(plan, pipeline.extract(plan))))
    command = [sys.executable, "-m", "ml_tasks", "train", "--plan", f"{plan['run_prefix']}/plan.json",
               "--candidate", "logistic_baseline"]
    killed = subprocess.run(command, env={**os.environ, "REFIT_KILL_AT": "train.run_started"},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    retried = pipeline.train(plan, split, "logistic_baseline")

    client = MlflowClient(tracking_uri=home.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(f"refit-{MODEL}")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`refit.run_key` = '{plan['run_key']}'")
    statuses = {run.info.run_id: run.info.status for run in runs}
    assert statuses.pop(retried["mlflow_run_id"]) == "FINISHED"
    assert list(statuses.values()) == ["FAILED"]


def test_two_runs_of_one_interval_validating_one_after_the_other_share_the_committed_snapshot(home):
    """Both extracted and staged the same rows; the first to validate commits them and removes the
    staged copy. The second validates the committed snapshot instead of failing on the staged one."""
    first = pipeline.plan_run(str(DEMO_SPEC), "2024-07-01", dag_run_id="scheduled__1", **SMALL)
    second = pipeline.plan_run(str(DEMO_SPEC), "2024-07-01", dag_run_id="manual__2", **SMALL)
    staged = [pipeline.extract(first), pipeline.extract(second)]
    assert staged[0]["snapshot_id"] == staged[1]["snapshot_id"] and staged[1]["staging_uri"]

    committed = pipeline.validate(first, staged[0])
    again = pipeline.validate(second, staged[1])

    assert again["snapshot"]["uri"] == committed["snapshot"]["uri"] and again["snapshot"]["staging_uri"] is None
    assert not Path(staged[1]["staging_uri"]).exists()


def test_a_corrupt_champion_snapshot_leaves_the_report_written_with_a_warning(home, first_run):
    _, real = first_run
    store = store_from_settings(home)
    snapshot_id = json.loads(Path(real["json_uri"]).read_text())["snapshot"]["snapshot_id"]
    champion_snapshot = Path(store.layout.snapshot_data(MODEL, snapshot_id))
    champion_snapshot.write_bytes(champion_snapshot.read_bytes()[:200])  # truncated on disk

    report = pipeline.run_all(str(DEMO_SPEC), "2024-06-01", **SMALL)

    content = json.loads(Path(report["json_uri"]).read_text())
    assert content["drift"] is None
    assert any(w.startswith("feature drift against the champion's snapshot: left out") for w in
               content["section_warnings"])
    assert "feature drift against the champion" in Path(report["html_uri"]).read_text()


@pytest.mark.parametrize(("as_of", "message"), [
    ("2024-13-01", r"param 'as_of': expected an ISO date or datetime \(UTC\)"),
    ("yesterday", r"param 'as_of': expected an ISO date"),
    ("0001-02-01", r"param 'as_of': 0001-02-01 is too early for the spec's window of 420 days"),
])
def test_a_trigger_with_a_bad_as_of_is_refused_naming_the_parameter(demo_spec, refit_home, as_of, message):
    with pytest.raises(PlanError, match=message):
        make_plan(demo_spec, DEMO_SPEC, refit_home.include_dir, store_from_settings(refit_home).layout, as_of)


@pytest.mark.parametrize("size", [True, 0, "2000"])
def test_a_sample_size_that_is_not_a_positive_integer_is_refused(demo_spec, refit_home, size):
    with pytest.raises(PlanError, match="param 'sample_size': expected a positive integer"):
        make_plan(demo_spec, DEMO_SPEC, refit_home.include_dir, store_from_settings(refit_home).layout, "2024-03-01",
                  sample_size=size)
