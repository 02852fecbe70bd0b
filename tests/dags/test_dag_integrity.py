"""DAG integrity: every spec gets a DAG that imports cleanly, is safe to schedule, and reads as the stage list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.core.spec import discover_specs, load_spec

DAGS = REPO_ROOT / "dags"
PLUGINS = REPO_ROOT / "plugins"
STAGES = ["plan", "extract", "validate", "sample", "split", "candidates", "train", "backtest_jobs", "backtest",
          "backtest_summary", "evaluate", "gate", "register", "report"]

# Airflow reads its configuration at import: point it at a throwaway home first.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(PLUGINS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def specs():
    return [load_spec(path) for path in discover_specs(REPO_ROOT / "include" / "models")]


def test_dags_import_without_errors_one_per_spec(dagbag, specs):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == ({f"retrain_{spec.name}" for spec in specs}
                                   | {f"registry_{spec.name}" for spec in specs})


def test_registry_dag_is_manual_and_asks_for_a_reason(dagbag, specs):
    for spec in specs:
        dag = dagbag.dags[f"registry_{spec.name}"]
        assert "refit" in dag.tags and all(task.retries >= 1 for task in dag.tasks)
        assert dag.schedule is None or dag.timetable.summary in {"None", None}
        assert dag.params.get_param("action").schema["enum"] == ["promote", "rollback"]
        assert dag.params.get_param("reason").schema["minLength"] >= 10


def test_every_dag_is_tagged_retried_and_scheduled_from_its_spec(dagbag, specs):
    for spec in specs:
        dag = dagbag.dags[f"retrain_{spec.name}"]
        assert "refit" in dag.tags and set(spec.tags) <= set(dag.tags)
        assert dag.max_active_runs == 1 and dag.catchup is False
        assert dag.timetable.expression == spec.schedule
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retry"


def test_tasks_run_in_stage_order(dagbag):
    dag = dagbag.dags["retrain_credit_default"]
    order = [task.task_id for task in dag.topological_sort()]
    assert sorted(order) == sorted(STAGES)
    positions = {task_id: order.index(task_id) for task_id in STAGES}
    chain = ["plan", "extract", "validate", "sample", "split", "train", "evaluate", "gate", "register", "report"]
    assert [positions[s] for s in chain] == sorted(positions[s] for s in chain)
    backtest = ["train", "backtest_jobs", "backtest", "backtest_summary", "gate"]
    assert [positions[s] for s in backtest] == sorted(positions[s] for s in backtest)
    assert "validate" in dag.get_task("sample").upstream_task_ids


@pytest.mark.parametrize(
    ("name", "value"),
    [("sample_size", 5), ("sample_size", "lots"), ("candidates", ["xgboost"]), ("candidates", []),
     ("as_of", "next tuesday"), ("dry_run", "yes")],
)
def test_trigger_form_rejects_bad_values(dagbag, name, value):
    from airflow.sdk.exceptions import ParamValidationError

    param = dagbag.dags["retrain_credit_default"].params.get_param(name)
    with pytest.raises(ParamValidationError):
        param.resolve(value)


def test_trigger_form_accepts_good_values(dagbag):
    params = dagbag.dags["retrain_credit_default"].params
    assert params.get_param("as_of").resolve("2024-05-01") == "2024-05-01"
    assert params.get_param("as_of").resolve(None) is None
    assert params.get_param("candidates").resolve(["lightgbm"]) == ["lightgbm"]
    assert params.get_param("sample_size").resolve(5_000) == 5_000


def test_parsing_the_dags_does_not_import_mlflow():
    code = (
        "import sys, json; sys.path.insert(0, {!r}); import runpy; runpy.run_path({!r}); "
        "print(json.dumps('mlflow' in sys.modules))".format(str(PLUGINS), str(DAGS / "refit_retrain.py"))
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False
