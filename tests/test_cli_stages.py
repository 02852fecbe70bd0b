"""The CLI runs every stage on its own, reading inputs by URI, and a dry run never touches the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml_tasks.cli import ROUTINE

MODEL = "credit_default"


def cli(*args: str) -> dict:
    """Run ``python -m ml_tasks ...`` and return the manifest it prints last.

    stdout and stderr are read as one stream, as the trainer operator reads them: the manifest
    must still be the last line, and none of MLflow's routine messages may show (they go to the log).
    """
    done = subprocess.run([sys.executable, "-m", "ml_tasks", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=os.environ)
    assert done.returncode == 0, done.stdout[-3000:]
    assert not ROUTINE.search(done.stdout), done.stdout[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def warehouse_env(refit_home, tiny_warehouse_url, monkeypatch):
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    return refit_home


def test_each_stage_runs_alone_from_the_plan_and_the_trainer_logs_a_loadable_model(warehouse_env):
    plan = cli("plan", "--model", MODEL, "--as-of", "2024-06-01", "--sample-size", "2000")
    plan_uri = f"{plan['run_prefix']}/plan.json"
    snapshot = cli("extract", "--plan", plan_uri)
    assert cli("validate", "--plan", plan_uri)["snapshot_id"] == snapshot["snapshot_id"]
    sample = cli("sample", "--plan", plan_uri)
    assert sample["rows"] <= 2000 < snapshot["rows"]
    split = cli("split", "--plan", plan_uri)
    result = cli("train", "--plan", plan_uri, "--split", split["uri"], "--candidate", "lightgbm")
    assert result["candidate"] == "lightgbm" and not result["reused"]
    assert result["validation_metrics"]["roc_auc"] > 0.6
    # MLflow's routine messages, kept off the trainer's output (``cli`` checks), are in the CLI's log.
    logged = (warehouse_env.home / "logs" / "ml_tasks.log").read_text()
    assert "Hint: Inferred schema" in logged
    # Logged from code over plain state, never a pickled Python object (MLflow's warning says so).
    assert "Passing a Python object as `python_model`" not in logged
    # A retried trainer finds its finished result instead of training again.
    assert cli("train", "--plan", plan_uri, "--candidate", "lightgbm")["reused"] is True

    import mlflow.pyfunc
    import pandas as pd

    from ml_tasks.core.spec import load_spec
    from ml_tasks.models import feature_frame

    spec = load_spec(plan["spec_path"])
    test = pd.read_parquet(split["test"]["uri"])
    mlflow.set_tracking_uri(warehouse_env.mlflow_tracking_uri)
    probabilities = mlflow.pyfunc.load_model(result["model_uri"]).predict(feature_frame(test, spec.features))
    assert np.all((probabilities["probability"] > 0) & (probabilities["probability"] < 1))
    # The run names the snapshot it trained on: its URI, and its content hash as the digest.
    inputs = {i.dataset.name: i.dataset for i in mlflow.get_run(result["mlflow_run_id"]).inputs.dataset_inputs}
    trained_on = inputs[f"{MODEL}-snapshot"]
    assert trained_on.digest == snapshot["data_sha256"][:16] and snapshot["uri"] in trained_on.source


def test_dry_run_gates_and_reports_but_never_registers_until_a_reviewer_promotes_what_the_gate_put_forward(
        warehouse_env):
    report = cli("run", "--model", MODEL, "--as-of", "2024-03-01", "--dry-run")
    content = json.loads(Path(report["json_uri"]).read_text())
    # `run` times its stages in its process (what bench/bench_dag.py compares with Airflow's tasks).
    assert list(report["stage_seconds"]) == ["plan", "extract", "validate", "sample", "split", "train", "backtest",
                                             "evaluate", "gate", "register", "report"]
    assert all(seconds > 0 for seconds in report["stage_seconds"].values())
    assert content["plan"]["dry_run"] is True
    assert content["registration"]["action"] in {"skipped_dry_run", "skipped_failed_gate"}
    assert content["registration"]["version"] is None

    from mlflow import MlflowClient

    tracking = warehouse_env.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert client.search_registered_models(f"name = '{MODEL}'") == []
    # Every candidate's LoggedModel carries its test metrics, linked to the test split they were
    # measured on, as the evaluation recorded them.
    import mlflow

    mlflow.set_tracking_uri(tracking)
    for scores in content["evaluation"]["candidates"]:
        model_uri = content["evaluation"]["models"][scores["name"]]["model_uri"]
        logged_model = mlflow.get_logged_model(model_uri.removeprefix("models:/"))
        on_test = {m.key: m for m in logged_model.metrics}
        assert on_test["test_roc_auc"].value == pytest.approx(scores["metrics"]["roc_auc"])
        assert on_test["test_roc_auc"].dataset_name == f"{MODEL}-test"
    # The gate re-run alone from the same plan reaches the same verdict (seeded bootstrap).
    plan_uri = f"{content['plan']['run_prefix']}/plan.json"
    assert cli("gate", "--plan", plan_uri)["verdict"] == content["verdict"]
    status = subprocess.run([sys.executable, "-m", "ml_tasks", "status", "--model", MODEL], capture_output=True,
                            text=True, env=os.environ, check=True).stdout
    assert "champion: none yet" in status and "dry run" in status

    # A reviewer's promotion registers the model the gate put forward (after a fallback that is
    # the baseline, not the validation winner), with the run's lineage.
    put_forward = content["gate"]["challenger_model"]
    promoted = cli("promote", "--model", MODEL, "--run-key", content["plan"]["run_key"], "--reason",
                   "reviewed the dry run's report")
    version = client.get_model_version(MODEL, promoted["version"])
    assert (version.run_id, version.source) == (put_forward["run_id"], put_forward["model_uri"])
    assert version.tags["refit.candidate"] == content["gate"]["challenger"] == put_forward["candidate"]


def test_demo_data_reads_the_settings_of_the_deployments_include_folder(refit_home, tmp_path, monkeypatch):
    """An installed ml_tasks (the deployed images) has no include/ beside it: REFIT_INCLUDE_DIR's is used."""
    import shutil

    from ml_tasks.core.settings import REPO_ROOT

    include = tmp_path / "include"
    shutil.copytree(REPO_ROOT / "include", include)
    settings_file = include / "demo_warehouse.yaml"
    settings_file.write_text(_with_rows(settings_file.read_text(), 300))
    monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))
    summary = cli("demo-data", "--url", f"sqlite:///{tmp_path / 'warehouse.db'}")
    assert summary["applications"] == 300, summary


def _with_rows(text: str, rows: int) -> str:
    lines = [f"rows: {rows}" if line.startswith("rows:") else line for line in text.splitlines()]
    assert f"rows: {rows}" in lines, "include/demo_warehouse.yaml has no top-level rows: setting"
    return "\n".join(lines) + "\n"
