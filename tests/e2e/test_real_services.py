"""Deployed mode on real services, as local processes: the retrain DAG triggered through
Airflow's REST API, trained by a local trainer process, tracked and registered on an MLflow
server, with artifacts and reports on S3.

Started for this module (``tests/e2e/real_services.py``), nothing mocked:
- moto's S3 server (``moto_server``) with one bucket for Refit's artifact store and MLflow's artifacts;
- the MLflow tracking server with basic auth, on PostgreSQL databases of its own (tracking and
  registry; users), proxying artifacts to that bucket;
- Airflow 3: api-server (SimpleAuthManager, one user), scheduler (LocalExecutor) and
  dag-processor on a PostgreSQL metadata database, and the ``warehouse_default`` connection
  pointing at a PostgreSQL demo warehouse.

The tests run in order: the second re-runs the interval the first one registered; the last checks
that the first one's promotion, through the champion Asset, started the scoring DAG.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from ml_tasks.core.settings import REPO_ROOT
from tests.conftest import postgres_databases
from tests.e2e.real_services import (
    AWS_TEST_CREDENTIALS,
    AirflowApi,
    FreePorts,
    Processes,
    airflow_binary,
    airflow_environment,
    airflow_login,
    logs_on_failure,
    restart_scheduler,
    start_airflow,
    start_mlflow,
    start_moto,
    tail,
    wait_for,
    wait_for_mlflow,
    wait_for_run,
)

pytestmark = pytest.mark.e2e

MODEL = "credit_default"
DAG_ID = f"retrain_{MODEL}"
AS_OF = "2024-03-01"
BUCKET = "refit-real-services"
ARTIFACT_PREFIX = "refit"
# Small enough for a few minutes on two cores; the baseline alone passes the first gate.
CONF = {"sample_size": 2_000, "candidates": ["logistic_baseline"]}
WAREHOUSE_ROWS = 8_000
RUN_TIMEOUT_S = 420
#: A second model, registered only by the race test: its first version is unambiguous.
RACE_MODEL = "credit_default_race"


@dataclass
class Stack:
    api: AirflowApi
    processes: Processes
    s3: object
    mlflow_uri: str
    task_log_folder: Path
    embedded_warehouse: Path
    #: What a Refit process of the deployment sees (a CLI run beside the Airflow workers).
    refit_env: dict[str, str]

    def wait_for_run(self, run_id: str) -> dict:
        return wait_for_run(self.api, self.processes, self.task_log_folder, DAG_ID, run_id, RUN_TIMEOUT_S)

    def mlflow(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow_uri, registry_uri=self.mlflow_uri)

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def read_json(self, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def note(self, run_id: str) -> str:
        """The run's note; the scheduler's listener writes it just after the run ends."""
        return wait_for(f"note of {run_id}", lambda: self.api.run(DAG_ID, run_id).get("note"), 30, self.processes)


SCORE_DAG_ID = f"score_{MODEL}"


def stack_include(folder: Path) -> Path:
    """The repository's include/ with the demo spec's scoring on the champion Asset only (no cron)
    and a window wide enough that a run triggered now reaches the demo warehouse's 2023-2024
    applications. Scoring is not part of the recipe, so run keys stay the same."""
    include = folder / "include"
    shutil.copytree(REPO_ROOT / "include", include)
    spec_file = include / "models" / f"{MODEL}.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["scoring"] = {**spec["scoring"], "window_days": 3_650, "on_champion": True}
    spec["scoring"].pop("schedule", None)
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return include


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("real-services")
    airflow_home = root / "airflow"
    processes = Processes(root / "logs")
    ports = FreePorts()
    with ExitStack() as cleanup:  # unwinds in reverse: processes stop before their databases go
        cleanup.enter_context(logs_on_failure(request.config, processes, airflow_home / "logs"))
        databases = cleanup.enter_context(postgres_databases("airflow", "mlflow", "mlflow_auth", "warehouse"))
        cleanup.callback(processes.stop_all)
        monkeypatch = cleanup.enter_context(pytest.MonkeyPatch.context())

        s3_endpoint, s3 = start_moto(processes, ports(), BUCKET)
        mlflow_uri, mlflow_credentials = start_mlflow(
            processes, ports(), backend_url=databases["mlflow"], auth_database_url=databases["mlflow_auth"],
            artifacts_destination=f"s3://{BUCKET}/mlflow", s3_endpoint=s3_endpoint, folder=root)
        api_port = ports()
        env = airflow_environment(
            home=airflow_home, metadata_url=databases["airflow"], api_url=f"http://127.0.0.1:{api_port}",
            warehouse_url=databases["warehouse"],
            refit={**AWS_TEST_CREDENTIALS, **mlflow_credentials,
                   "REFIT_HOME": str(root / "refit"),
                   "REFIT_INCLUDE_DIR": str(stack_include(root)),
                   "REFIT_ARTIFACT_ROOT": f"s3://{BUCKET}/{ARTIFACT_PREFIX}",
                   "REFIT_S3_ENDPOINT_URL": s3_endpoint,
                   "MLFLOW_TRACKING_URI": mlflow_uri,
                   "MLFLOW_CONFIGURE_LOGGING": "false",
                   # Registry writers take turns through advisory locks on Airflow's database,
                   # as in the compose stack.
                   "REFIT_LOCK_URL": databases["airflow"],
                   "REFIT_TRAINER_MODE": "local",
                   # The demo spec's trainer asks for a GPU: the refit_gpu pool lets four run at once.
                   "REFIT_GPU_SLOTS": "4",
                   # Seconds, not minutes: a run that cannot succeed (a cron run of a month the
                   # warehouse has no rows for) gives its DAG's one active-run slot back soon.
                   "REFIT_RETRY_DELAY_S": "5"})
        processes.run("demo-data", [sys.executable, "-m", "ml_tasks", "demo-data", "--url", databases["warehouse"],
                                    "--rows", str(WAREHOUSE_ROWS), "--seed", "11"], env, timeout=180)
        start_airflow(processes, env, api_port)
        wait_for_mlflow(processes, mlflow_uri)
        api = airflow_login(processes, env, api_port)
        # This process reads the registry as one more client of the same server.
        for name, value in mlflow_credentials.items():
            monkeypatch.setenv(name, value)
        yield Stack(api=api, processes=processes, s3=s3, mlflow_uri=mlflow_uri,
                    task_log_folder=airflow_home / "logs", embedded_warehouse=root / "refit" / "warehouse.db",
                    refit_env={**env, "REFIT_WAREHOUSE_URL": databases["warehouse"]})


def run_prefix(run_key: str) -> str:
    return f"{ARTIFACT_PREFIX}/runs/{MODEL}/{run_key}/"


def test_triggered_run_registers_champion_with_snapshot_report_and_note_on_real_services(stack, demo_spec):
    wait_for(f"DAG {DAG_ID} parsed by the dag-processor", lambda: stack.api.dag(DAG_ID), 180, stack.processes,
             interval=2)
    stack.api.unpause(DAG_ID)
    # Unpaused before the champion exists: the promotion's Asset event is what starts it.
    wait_for(f"DAG {SCORE_DAG_ID} parsed", lambda: stack.api.dag(SCORE_DAG_ID), 60, stack.processes, interval=2)
    stack.api.unpause(SCORE_DAG_ID)
    run_id = stack.api.trigger(DAG_ID, f"{AS_OF}T00:00:00Z", CONF)["dag_run_id"]

    assert stack.wait_for_run(run_id)["state"] == "success"

    # The scheduler ran the trainer tasks in the refit_gpu pool, each taking the spec's GPUs.
    trainers = [ti for ti in stack.api.task_instances(DAG_ID, run_id) if ti["task_id"] in ("train", "backtest")]
    assert trainers and {(ti["pool"], ti["pool_slots"]) for ti in trainers} == {("refit_gpu", demo_spec.trainer.gpus)}
    champion = stack.mlflow().get_model_version_by_alias(demo_spec.registry_name, "champion")
    tags = champion.tags
    assert tags["refit.dag_run_id"] == run_id and tags["refit.as_of"].startswith(AS_OF)
    snapshot_keys = stack.keys(f"{ARTIFACT_PREFIX}/snapshots/{MODEL}/{tags['refit.snapshot_id']}/")
    assert any(key.endswith(".parquet") for key in snapshot_keys), snapshot_keys
    prefix = run_prefix(tags["refit.run_key"])
    assert {f"{prefix}report.html", f"{prefix}report.json"} <= set(stack.keys(prefix))
    assert tags["refit.report_uri"] == f"s3://{BUCKET}/{prefix}report.html"
    report = stack.read_json(f"{prefix}report.json")
    assert report["verdict"] == "PASS" and report["registration"]["action"] == "registered"
    # The rows came through the warehouse_default connection (PostgreSQL): the embedded SQLite
    # warehouse was never even created.
    assert report["snapshot"]["rows"] > 1_000 and not stack.embedded_warehouse.exists()
    assert report["registration"]["version"] == str(champion.version)
    # The model files went through the tracking server's artifact proxy into the bucket.
    assert stack.keys("mlflow/"), "no MLflow artifact reached S3"
    note = stack.note(run_id)
    assert note.startswith("**PASS**") and tags["refit.report_uri"] in note
    # The gate results view on the api-server reads the same S3 store; its MLflow link resolves
    # to the challenger's run on the tracking server.
    listed = stack.api.root.get("/refit/api/results", params={"model": MODEL}).json()
    assert (listed[0]["dag_run_id"], listed[0]["verdict"]) == (run_id, "PASS")
    assert "PASS · credit_default · as of 2024-03-01" in stack.api.root.get(
        f"/refit/runs/{DAG_ID}/{run_id}", follow_redirects=True).text
    to_mlflow = stack.api.root.get(f"/refit/runs/{DAG_ID}/{run_id}/mlflow")
    # The experiment was recorded with the result, so following the link asks MLflow nothing.
    experiment = listed[0]["mlflow_experiment_id"]
    assert to_mlflow.status_code == 307 and to_mlflow.headers["location"].startswith(
        f"{stack.mlflow_uri}/#/experiments/{experiment}/runs/")
    assert to_mlflow.headers["location"].endswith(f"/runs/{champion.run_id}")
    # Authentication is on: every client above got in with the admin's credentials, none without.
    anonymous = httpx.get(f"{stack.mlflow_uri}/api/2.0/mlflow/registered-models/get",
                          params={"name": demo_spec.registry_name}, timeout=30)
    assert anonymous.status_code == 401, anonymous.text


def test_second_trigger_of_the_same_interval_registers_no_second_version(stack, demo_spec):
    name = demo_spec.registry_name
    before = sorted(v.version for v in stack.mlflow().search_model_versions(f"name = '{name}'"))
    champion = stack.mlflow().get_model_version_by_alias(name, "champion")
    assert before, "the first test registered no version to re-run against"
    # Airflow keeps one run per logical date, so a re-run of the interval is a new run (empty
    # logical date, as the trigger form allows) whose as_of param names the same interval.
    assert stack.api.post_run(DAG_ID, f"{AS_OF}T00:00:00Z", CONF).status_code == 409
    run_id = stack.api.trigger(DAG_ID, None, {**CONF, "as_of": AS_OF})["dag_run_id"]

    assert stack.wait_for_run(run_id)["state"] == "success"

    assert sorted(v.version for v in stack.mlflow().search_model_versions(f"name = '{name}'")) == before
    assert stack.mlflow().get_model_version_by_alias(name, "champion").version == champion.version
    prefix = run_prefix(champion.tags["refit.run_key"])
    report = stack.read_json(f"{prefix}report.json")
    assert report["plan"]["dag_run_id"] == run_id, "the re-run did not plan the same interval (run key)"
    assert report["snapshot"]["snapshot_id"] == champion.tags["refit.snapshot_id"]
    assert report["snapshot"]["reused"] is True  # the interval was not extracted a second time
    registration = report["registration"]
    assert (registration["action"], registration["version"]) == ("already_registered", str(champion.version))
    assert stack.note(run_id).startswith("**PASS**")


def test_concurrent_runs_of_one_interval_register_exactly_one_version(stack, tmp_path):
    """Four `run` processes of one interval at once, beside the Airflow stack, on the MLflow server."""
    include = tmp_path / "include"
    shutil.copytree(REPO_ROOT / "include", include)
    spec = yaml.safe_load((include / "models" / f"{MODEL}.yaml").read_text())
    name = RACE_MODEL
    (include / "models" / f"{name}.yaml").write_text(yaml.safe_dump({**spec, "name": name, "registry_name": name}))
    env = {**stack.refit_env, "REFIT_INCLUDE_DIR": str(include)}
    command = [sys.executable, "-m", "ml_tasks", "run", "--model", name, "--as-of", AS_OF, "--sample-size", "2000",
               "--candidates", "logistic_baseline"]

    logs = [tmp_path / f"race-{n}.log" for n in range(4)]
    with ExitStack() as files:
        runs = [subprocess.Popen(command, env=env, stdout=files.enter_context(log.open("wb")),
                                 stderr=subprocess.STDOUT) for log in logs]
        codes = [run.wait(timeout=RUN_TIMEOUT_S) for run in runs]

    assert codes == [0] * 4, "\n\n".join(f"== {log.name}\n{tail(log)}" for log in logs)
    found = stack.mlflow().search_model_versions(f"name = '{name}'")
    assert len(found) == 1, [(v.version, v.tags.get("refit.idempotency_key")) for v in found]
    assert {a: str(v) for a, v in stack.mlflow().get_registered_model(name).aliases.items()} == {
        "champion": str(found[0].version)}
    assert found[0].tags["refit.registration"] == "complete"


def test_the_champion_asset_starts_the_scoring_dag_which_scores_with_the_new_version(stack, demo_spec):
    """Last: it turns the scheduler's job schedule on, which Asset-triggered runs need."""
    champion = stack.mlflow().get_model_version_by_alias(demo_spec.registry_name, "champion")
    assert champion.version == "1"
    # The first test's promotion queued the champion Asset's event for the scoring DAG (unpaused
    # before it). The scheduler turns queued events into runs only with its job schedule on, as
    # deployments have it; the retrain DAG is paused first, or its monthly cron would start too.
    stack.api.pause(DAG_ID)
    restart_scheduler(stack.processes, stack.refit_env, use_job_schedule="True")

    def asset_triggered() -> list[dict]:
        return [r for r in stack.api.runs(SCORE_DAG_ID) if r["run_type"] == "asset_triggered"]

    runs = wait_for(f"a {SCORE_DAG_ID} run started by the champion Asset", asset_triggered, 120, stack.processes,
                    interval=2)
    assert len(runs) == 1, f"one promotion, {len(runs)} scoring runs: {runs}"
    run_id = runs[0]["dag_run_id"]
    finished = wait_for_run(stack.api, stack.processes, stack.task_log_folder, SCORE_DAG_ID, run_id, RUN_TIMEOUT_S)
    assert finished["state"] == "success"
    scored = scored_rows(stack, demo_spec)
    assert scored["rows"] > 1_000 and scored["rows"] == scored["ids"], scored
    assert scored["versions"] == [str(champion.version)], scored

    # Clearing the run scores its interval again: its rows are replaced, never duplicated.
    stack.api.clear(SCORE_DAG_ID, run_id)
    wait_for(f"{run_id} to run again", lambda: stack.api.run(SCORE_DAG_ID, run_id)["state"] != "success", 60,
             stack.processes, interval=1)
    assert wait_for_run(stack.api, stack.processes, stack.task_log_folder, SCORE_DAG_ID, run_id,
                        RUN_TIMEOUT_S)["state"] == "success"
    assert scored_rows(stack, demo_spec) == scored


def scored_rows(stack, spec) -> dict:
    """Rows, distinct ids and model versions in the scoring destination table of the warehouse."""
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.refit_env["REFIT_WAREHOUSE_URL"])
    try:
        with engine.connect() as connection:
            table = spec.scoring.destination
            rows, ids = connection.execute(text(f"SELECT count(*), count(DISTINCT id) FROM {table}")).one()
            distinct = connection.execute(text(f"SELECT DISTINCT model_version FROM {table}"))
            versions = sorted(str(v) for (v,) in distinct)
    finally:
        engine.dispose()
    return {"rows": rows, "ids": ids, "versions": versions}


MONITOR_DAG_ID = f"monitor_{MODEL}"


def test_a_monitor_run_on_drifted_data_starts_the_retrain_through_its_asset_and_the_cooldown_holds(stack, demo_spec):
    """After the scoring test: the scheduler's job schedule is on and the retrain DAG paused."""
    def monitor(as_of: str) -> dict:
        # ``airflow dags test`` on the real metadata database: the monitor DAG stays paused, so its
        # daily cron starts nothing of its own, but its Asset events are the real ones.
        stack.processes.run(f"monitor-{as_of}", [airflow_binary(), "dags", "test", MONITOR_DAG_ID, as_of],
                            stack.refit_env, timeout=RUN_TIMEOUT_S)
        return stack.read_json(f"{ARTIFACT_PREFIX}/monitoring/{MODEL}/latest.json")

    def triggered_runs() -> list[dict]:
        return [r for r in stack.api.runs(DAG_ID) if r["run_type"] == "asset_triggered"]

    # Unpaused first: Airflow queues an Asset event only for the unpaused DAGs scheduled on it.
    # Unpaused, the retrain DAG also starts this month's cron run (the warehouse has no rows for
    # it: it fails at once); the monitor's event starts the one that matters.
    stack.api.unpause(DAG_ID)
    record = monitor("2024-09-01")
    fired = [s["name"] for s in record["triggers"] if s["fired"]]
    assert "drift" in fired, record["triggers"]  # the demo warehouse's new channel
    runs = wait_for("a retrain run started by the monitor's Asset", triggered_runs, 120, stack.processes, interval=2)
    assert len(runs) == 1, runs
    run_id = runs[0]["dag_run_id"]
    finished = wait_for_run(stack.api, stack.processes, stack.task_log_folder, DAG_ID, run_id, 2 * RUN_TIMEOUT_S)
    assert finished["state"] == "success"
    note = stack.note(run_id)
    assert "Triggered by monitor 2024-09-01" in note and "drift" in note, note
    assert len(retrain_trigger_events(stack)) == 1

    # Two days later the same trips are cooling down: nothing fires, no second retrain is queued.
    again = monitor("2024-09-03")
    assert not [s for s in again["triggers"] if s["fired"]], again["triggers"]
    assert all("cooling down" in s["reason"] for s in again["triggers"] if s["tripped"]), again["triggers"]
    assert len(retrain_trigger_events(stack)) == 1 and len(triggered_runs()) == 1


def retrain_trigger_events(stack) -> list[dict]:
    """The events Airflow recorded for the model's retrain-trigger Asset."""
    uri = f"refit://{MODEL}/retrain-trigger"
    assets = stack.api._ok(stack.api.http.get("/assets", params={"uri_pattern": "retrain-trigger"}))["assets"]
    asset_id = next(a["id"] for a in assets if a["uri"] == uri)
    return stack.api._ok(stack.api.http.get("/assets/events", params={"asset_id": asset_id}))["asset_events"]
