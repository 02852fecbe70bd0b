"""The train task in both modes.

Deployed mode (``REFIT_TRAINER_MODE=docker``) is parsed here as the DAG processor would parse
it, and the mapped train task expanded for one candidate and rendered as a worker would;
running it needs a Docker engine, so ``execute`` is proved on a real one in
``tests/stack/test_trainer_container.py`` and in the compose stack. Embedded mode (the default)
runs the real trainer command in a local process on a tiny planned run: the same command line,
the same result manifest.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.core.spec import load_spec

DAGS = REPO_ROOT / "dags"
DAG_ID = "retrain_credit_default"

# Airflow reads its configuration at import: point it at a throwaway home first.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

from refit_airflow.trainer import (  # noqa: E402  (needs AIRFLOW_HOME and the plugins folder first)
    DockerTrainerOperator,
    TrainerOperator,
    docker_trainer_kwargs,
    trainer_command,
    trainer_mode,
    trainer_task,
)

PUBLIC = {
    "REFIT_TRAINER_MODE": "docker",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "REFIT_ARTIFACT_ROOT": "s3://refit/artifacts",
    "REFIT_S3_ENDPOINT_URL": "http://minio:9000",
    "AWS_ENDPOINT_URL_S3": "http://minio:9000",
    "REFIT_DOCKER_NETWORK": "refit_default",
}
SECRETS = {"AWS_ACCESS_KEY_ID": "refit-key-id", "AWS_SECRET_ACCESS_KEY": "refit-secret-key",
           "MLFLOW_TRACKING_USERNAME": "refit-user", "MLFLOW_TRACKING_PASSWORD": "refit-password"}
PLAN = {"run_prefix": "s3://refit/artifacts/runs/credit_default/20240301T000000-abc"}
SPLIT = {"uri": f"{PLAN['run_prefix']}/split.json"}
CANDIDATES = ["logistic_baseline", "lightgbm"]
MANIFEST = {"candidate": "lightgbm", "uri": f"{PLAN['run_prefix']}/train/lightgbm.json", "reused": False}


@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO_ROOT / "include" / "models" / "credit_default.yaml")


@pytest.fixture(scope="module")
def deployed_dag():
    """The retrain DAG as the DAG processor of a deployment parses it (docker mode, with credentials set)."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as env:
        for name, value in {**PUBLIC, **SECRETS}.items():
            env.setenv(name, value)
        env.delenv("REFIT_DOCKER_URL", raising=False)
        dagbag = DagBag(dag_folder=str(DAGS))
    assert dagbag.import_errors == {}
    return dagbag.dags[DAG_ID]


class FakeTaskInstance:
    """What rendering a mapped task asks of a task instance: its map index and upstream XComs."""

    _upstream_map_indexes: dict = {}

    def __init__(self, map_index: int) -> None:
        self.map_index = map_index
        self.task = None

    def xcom_pull(self, task_ids, key="return_value", default=None, map_indexes=None):
        return {"plan": PLAN, "split": SPLIT, "candidates": CANDIDATES}[task_ids]

    def get_relevant_upstream_map_indexes(self, **_):
        return None


def expand_for(dag, candidate: str):
    """The train task for one candidate, unmapped and rendered as a worker does before ``execute``."""
    mapped = dag.get_task("train")
    context = {"ti": FakeTaskInstance(CANDIDATES.index(candidate)), "dag": dag,
               "dag_run": type("DagRun", (), {"conf": {}})()}
    mapped.render_template_fields(context)
    return context["ti"].task, context


# --- deployed mode: the DockerOperator the DAG builds ------------------------------------------------

def test_deployed_dag_maps_the_docker_trainer_over_candidates(deployed_dag, spec):
    mapped = deployed_dag.get_task("train")
    assert mapped.operator_class is DockerTrainerOperator
    assert list(mapped.expand_input.value) == ["candidate"]
    assert mapped.expand_input.value["candidate"].operator.task_id == "candidates"
    kwargs = mapped.partial_kwargs
    assert kwargs["image"] == spec.trainer.image
    assert kwargs["docker_url"] == "tcp://docker-socket-proxy:2375"
    assert kwargs["network_mode"] == "refit_default"
    [gpus] = kwargs["device_requests"]
    assert spec.trainer.gpus >= 1 and gpus.count == spec.trainer.gpus and gpus.capabilities == [["gpu"]]


def test_deployed_dag_stores_no_credentials(deployed_dag):
    from airflow.serialization.serialized_objects import DagSerialization

    # What the DAG processor writes to the metadata database (and the UI reads).
    serialized = json.dumps(DagSerialization.to_dict(deployed_dag))
    environment = deployed_dag.get_task("train").partial_kwargs["environment"]
    for name, value in SECRETS.items():
        assert name not in environment and value not in serialized, name
    assert {name: environment[name] for name in ("MLFLOW_TRACKING_URI", "REFIT_ARTIFACT_ROOT",
                                                 "REFIT_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")} == {
        name: PUBLIC[name] for name in ("MLFLOW_TRACKING_URI", "REFIT_ARTIFACT_ROOT", "REFIT_S3_ENDPOINT_URL",
                                        "AWS_ENDPOINT_URL_S3")}
    assert environment["MLFLOW_CONFIGURE_LOGGING"] == "false"


def test_one_candidate_renders_to_the_trainer_command_in_the_image(deployed_dag):
    operator, _ = expand_for(deployed_dag, "lightgbm")
    assert isinstance(operator, DockerTrainerOperator)
    assert operator.candidate == "lightgbm" and operator.plan == PLAN and operator.split == SPLIT
    assert operator.trainer_command() == trainer_command(PLAN, SPLIT["uri"], "lightgbm", python="python")
    assert operator.trainer_command()[:4] == ["python", "-m", "ml_tasks", "train"]
    assert operator.auto_remove == "success" and operator.mount_tmp_dir is False
    assert operator.retrieve_output is False and operator.xcom_all is False


def test_a_backtest_job_renders_its_folds_into_one_command_and_container_label():
    command = trainer_command(PLAN, None, "lightgbm", python="python", folds=[2, 3])
    assert command[-3:] == ["--folds", "2", "3"] and "--split" not in command
    operator = DockerTrainerOperator(task_id="backtest", image="refit-trainer:test", plan=PLAN, candidate="lightgbm",
                                     folds=[2, 3])
    assert operator.container_labels()["refit.folds"] == "2,3"


# --- choosing the mode ------------------------------------------------------------------------------

def test_local_mode_is_the_default_and_unknown_modes_are_refused(spec):
    assert trainer_mode({}) == "local" and trainer_mode({"REFIT_TRAINER_MODE": "Docker"}) == "docker"
    with pytest.raises(ValueError, match="REFIT_TRAINER_MODE='kubernetes'"):
        trainer_mode({"REFIT_TRAINER_MODE": "kubernetes"})
    from airflow.sdk import DAG

    with DAG("trainer_mode_default", schedule=None):
        mapped = trainer_task(spec, env={}, task_id="train", plan=PLAN, split=SPLIT).expand(candidate=CANDIDATES)
    assert mapped.operator_class is TrainerOperator


def test_docker_mode_needs_remote_stores_and_requests_no_gpu_when_the_spec_has_none(spec):
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI, REFIT_ARTIFACT_ROOT"):
        docker_trainer_kwargs(spec, env={"REFIT_TRAINER_MODE": "docker"})
    cpu_spec = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"gpus": 0})})
    kwargs = docker_trainer_kwargs(cpu_spec, env={**PUBLIC, "REFIT_DOCKER_URL": "unix://var/run/docker.sock"})
    assert "device_requests" not in kwargs and kwargs["docker_url"] == "unix://var/run/docker.sock"
    assert "REFIT_TRAINER_THREADS" not in kwargs["environment"]  # no budget: every CPU the container gets


def test_the_specs_cpu_budget_reaches_the_trainer_in_both_modes(spec):
    from airflow.sdk import DAG

    budgeted = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"cpus": 3})})
    assert docker_trainer_kwargs(budgeted, env=PUBLIC)["environment"]["REFIT_TRAINER_THREADS"] == "3"
    with DAG("trainer_threads", schedule=None):
        mapped = trainer_task(budgeted, env={}, task_id="train", plan=PLAN, split=SPLIT).expand(candidate=CANDIDATES)
    assert mapped.partial_kwargs["threads"] == 3


# --- embedded mode: the same command in a local process, end to end -------------------------------

def test_local_trainer_runs_the_command_end_to_end_and_returns_the_manifest(refit_home, tiny_warehouse_url,
                                                                           monkeypatch):
    from ml_tasks import pipeline

    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    plan = pipeline.plan_run(str(REPO_ROOT / "include" / "models" / "credit_default.yaml"), "2024-06-01",
                             sample_size=1000, candidates=["logistic_baseline"])
    validation = pipeline.validate(plan, pipeline.extract(plan))
    split = pipeline.split(plan, pipeline.sample(plan, validation))

    operator = TrainerOperator(task_id="train", plan=plan, split=split, candidate="logistic_baseline")
    result = operator.execute({})
    assert result["candidate"] == "logistic_baseline" and result["reused"] is False
    assert result["validation_metrics"]["roc_auc"] > 0.5
    # The XCom is the manifest the trainer also wrote to the run's folder.
    stored = json.loads(Path(plan["run_prefix"], "train", "logistic_baseline.json").read_text())
    assert stored["mlflow_run_id"] == result["mlflow_run_id"]
