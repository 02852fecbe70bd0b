"""Manual registry actions from the CLI: promote a rejected challenger with a recorded reason,
roll back to the previous champion, and refuse either without a reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from ml_tasks import pipeline

MODEL = "credit_default"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # As the person on call runs it: REFIT_HOME only. (mlflow.set_tracking_uri in this process
    # exports MLFLOW_TRACKING_URI, which would hide a CLI that forgets to point MLflow at the store.)
    env = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-m", "ml_tasks", *args], capture_output=True, text=True, env=env)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def strict_include(refit_home, tiny_warehouse_url, tmp_path, monkeypatch):
    """An include folder whose spec no model can pass (ROC AUC >= 0.99), and the warehouse."""
    include = tmp_path / "include"
    shutil.copytree(refit_home.include_dir, include)
    spec_file = include / "models" / f"{MODEL}.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["acceptance"]["thresholds"]["roc_auc"] = {"min": 0.99}
    spec_file.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))
    return spec_file


def aliases(settings) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    return {alias: str(version) for alias, version in client.get_registered_model(MODEL).aliases.items()}


def test_promote_a_rejected_challenger_then_roll_back_and_forward(refit_home, strict_include):
    from mlflow import MlflowClient

    rejected = pipeline.run_all(str(strict_include), "2024-03-01", candidates=["logistic_baseline"])
    assert rejected["verdict"] == "FAIL" and rejected["champion_version"] is None

    refused = cli("promote", "--model", MODEL, "--run-key", rejected["run_key"], "--reason", "ok", check=False)
    assert refused.returncode != 0 and "parameter 'reason'" in refused.stderr

    promoted = json.loads(cli("promote", "--model", MODEL, "--run-key", rejected["run_key"], "--reason",
                              "reviewed: threshold too strict for this quarter", "--by", "oncall"
                              ).stdout.splitlines()[-1])
    assert promoted["action"] == "promoted_manually" and promoted["champion_version"] == "1"
    client = MlflowClient(tracking_uri=refit_home.mlflow_tracking_uri, registry_uri=refit_home.mlflow_tracking_uri)
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["refit.manual_promotion_reason"] == "reviewed: threshold too strict for this quarter"
    assert tags["refit.promoted_by"] == "oncall" and tags["refit.run_key"] == rejected["run_key"]
    # Promoting the same run again registers nothing new.
    again = json.loads(cli("promote", "--model", MODEL, "--run-key", rejected["run_key"], "--reason",
                           "reviewed again, same decision").stdout.splitlines()[-1])
    assert again["action"] == "already_registered" and len(client.search_model_versions(f"name = '{MODEL}'")) == 1

    later = pipeline.run_all(str(strict_include), "2024-06-01", candidates=["logistic_baseline"])
    cli("promote", "--model", MODEL, "--run-key", later["run_key"], "--reason", "reviewed: second promotion")
    assert aliases(refit_home) == {"champion": "2", "previous": "1"}

    rolled = json.loads(cli("rollback", "--model", MODEL, "--reason", "v2 misbehaves in serving"
                            ).stdout.splitlines()[-1])
    assert rolled["action"] == "rolled_back" and aliases(refit_home) == {"champion": "1", "previous": "2"}
    assert client.get_model_version(MODEL, "2").tags["refit.rolled_back_reason"] == "v2 misbehaves in serving"
    cli("rollback", "--model", MODEL, "--reason", "fixed upstream, roll forward")
    assert aliases(refit_home) == {"champion": "2", "previous": "1"}


def test_promote_needs_a_run_that_was_gated(refit_home, strict_include):
    done = cli("promote", "--model", MODEL, "--run-key", "20240101T000000-deadbeef", "--reason",
               "this run does not exist", check=False)
    assert done.returncode != 0 and "parameter 'run_key'" in done.stderr and "20240101T000000-deadbeef" in done.stderr
    assert "reached the gate stage" in done.stderr


def test_rollback_without_a_previous_version_is_refused(refit_home, strict_include):
    done = cli("rollback", "--model", MODEL, "--reason", "nothing to roll back to", check=False)
    assert done.returncode != 0 and "needs both a 'champion' and a 'previous' alias" in done.stderr


def test_the_registry_dag_task_refuses_a_promotion_without_a_run_key(refit_home, strict_include):
    from ml_tasks.registry.versions import RegistryActionError

    with pytest.raises(RegistryActionError, match="parameter 'run_key'"):
        pipeline.registry_action(str(strict_include), "promote", None, "a reason long enough", "oncall")
    with pytest.raises(RegistryActionError, match="parameter 'action'"):
        pipeline.registry_action(str(strict_include), "delete", None, "a reason long enough", "oncall")
