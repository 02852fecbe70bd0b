"""The deployed stack, for real: ``docker-compose up`` of docker-compose.yaml on a real Docker
Engine, the retrain DAG triggered through Airflow's REST API, every trainer a container that
the Celery worker launched through the socket proxy; then faults on the running stack.

The tests share one stack (``conftest.py``) and run in file order: the first registers the
champion the later ones compare with, and the last takes the stack down and up again.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.stack.stack import SECRET_NAMES, inspect, run, wait_for

pytestmark = pytest.mark.stack

MODEL = "credit_default"
DAG_ID = f"retrain_{MODEL}"
GPU_MODEL = "credit_default_gpu"
AS_OF = "2024-03-01"
CONF = {"sample_size": 2_000, "candidates": ["logistic_baseline"]}
RUN_TIMEOUT_S = 900
FINISHED = {"success", "failed"}
TRAINER_TASKS = ("train", "backtest")


# -- helpers on the running stack --------------------------------------------------------------------

def dag_ready(stack, dag_id: str) -> None:
    wait_for(f"DAG {dag_id} parsed by the dag-processor", lambda: stack.api.dag(dag_id), 240)
    stack.api.unpause(dag_id)


def trigger(stack, dag_id: str, as_of: str, conf: dict) -> str:
    return stack.api.trigger(dag_id, None, {**conf, "as_of": as_of})["dag_run_id"]


def task_log(stack, dag_id: str, run_id: str, ti: dict, try_number: int | None = None) -> str:
    """One try's log as text: each event's line, and an exception's type and message under it."""
    response = stack.api.http.get(
        f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{try_number or ti['try_number']}",
        params={"map_index": ti["map_index"], "full_content": True})
    lines = []
    for entry in response.json().get("content", []) if response.status_code == 200 else [response.text]:
        if not isinstance(entry, dict):
            lines.append(str(entry))
            continue
        lines.append(str(entry.get("event", "")))
        lines += [f"{detail.get('exc_type')}: {detail.get('exc_value')}" for detail in entry.get("error_detail") or []]
    return "\n".join(lines)


def labels(instances: list[dict]) -> str:
    def label(ti: dict) -> str:
        mapped = f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""
        return f"{ti['task_id']}{mapped}={ti['state']}(try {ti['try_number']})"

    return ", ".join(label(ti) for ti in instances)


def wait_for_run(stack, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    """Poll a DAG run until it finishes; on a timeout, the task states and the broken tasks' logs."""
    def finished():
        run_ = stack.api.run(dag_id, run_id)
        return run_ if run_["state"] in FINISHED else None

    return wait_for(f"{dag_id} run {run_id} to finish", finished, timeout, interval=3,
                    on_timeout=lambda: failed_run(stack, dag_id, run_id))


def failed_run(stack, dag_id: str, run_id: str) -> str:
    """Why a run has not succeeded: every task's state, and the logs of those not (yet) successful."""
    instances = stack.api.task_instances(dag_id, run_id)
    return f"tasks: {labels(instances)}\n" + "\n".join(
        f"===== {ti['task_id']}[{ti['map_index']}] =====\n{task_log(stack, dag_id, run_id, ti)[-3000:]}"
        for ti in instances if ti["state"] not in ("success", "running", "queued", "scheduled", None))


def champion(stack, name: str = MODEL) -> dict | None:
    response = stack.mlflow.get("/api/2.0/mlflow/registered-models/alias", params={"name": name, "alias": "champion"})
    if response.status_code == 404 or "RESOURCE_DOES_NOT_EXIST" in response.text:
        return None
    response.raise_for_status()
    version = response.json()["model_version"]
    version["tags"] = {tag["key"]: tag["value"] for tag in version.get("tags", [])}
    return version


def versions(stack, name: str = MODEL) -> list[dict]:
    response = stack.mlflow.get("/api/2.0/mlflow/model-versions/search",
                                params={"filter": f"name='{name}'", "max_results": 200})
    response.raise_for_status()
    found = response.json().get("model_versions", [])
    for version in found:
        version["tags"] = {tag["key"]: tag["value"] for tag in version.get("tags", [])}
    return sorted(found, key=lambda v: int(v["version"]))


def mlflow_runs(stack) -> list[str]:
    experiments = stack.mlflow.post("/api/2.0/mlflow/experiments/search", json={"max_results": 1000}).json()
    ids = [e["experiment_id"] for e in experiments.get("experiments", [])]
    found = stack.mlflow.post("/api/2.0/mlflow/runs/search", json={"experiment_ids": ids, "max_results": 1000}).json()
    return sorted(r["info"]["run_id"] for r in found.get("runs", []))


def s3_keys(stack, prefix: str) -> list[str]:
    pages = stack.s3().get_paginator("list_objects_v2").paginate(Bucket=stack.env.get("REFIT_S3_BUCKET", "refit"),
                                                                 Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def plan_of(stack, dag_id: str, run_id: str) -> dict:
    response = stack.api.http.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/plan/xcomEntries/return_value")
    if response.status_code != 200:
        return {}
    value = response.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


def run_folder(plan: dict) -> str:
    """The plan's run prefix as a key prefix in the bucket (``s3://refit/artifacts/runs/…`` → ``artifacts/runs/…/``)."""
    return re.sub(r"^s3://[^/]+/", "", plan["run_prefix"]).rstrip("/") + "/"


# -- the run -----------------------------------------------------------------------------------------------

def test_triggered_retrain_trains_every_candidate_and_fold_in_a_trainer_container_via_the_proxy(stack):
    dag_ready(stack, DAG_ID)
    run_id = trigger(stack, DAG_ID, AS_OF, CONF)
    assert wait_for_run(stack, DAG_ID, run_id)["state"] == "success", failed_run(stack, DAG_ID, run_id)

    instances = stack.api.task_instances(DAG_ID, run_id)
    trainer_tasks = {(ti["task_id"], ti["map_index"]) for ti in instances if ti["task_id"] in TRAINER_TASKS}
    assert trainer_tasks and {task for task, _ in trainer_tasks} == set(TRAINER_TASKS), labels(instances)
    plan = plan_of(stack, DAG_ID, run_id)
    containers = wait_for("every trainer container of the run to be removed", lambda: [
        c for c in stack.watch.of_model(MODEL) if c.labels.get("refit.run_key") == plan["run_key"] and c.destroyed
    ] if all(c.destroyed for c in stack.watch.of_model(MODEL)) else None, 60)
    evidence = "\n".join(f"{c.id[:12]} {c.labels} exit={c.exit_code} removed={c.destroyed} cmd={c.command}"
                         for c in containers)
    # One container per train and backtest task instance: Airflow's mapped tasks and the
    # engine's containers agree.
    assert len(containers) == len(trainer_tasks), f"{labels(instances)}\n{evidence}"
    assert sorted(c.labels["refit.task"] for c in containers) == sorted(t for t, _ in trainer_tasks), evidence
    secrets = {stack.env[name] for name in SECRET_NAMES}
    for container in containers:
        assert container.image == "refit-trainer:latest", evidence
        assert container.command[:4] == ["python", "-m", "ml_tasks", "train"], evidence
        assert "--plan" in container.command and container.command[container.command.index("--candidate") + 1] \
            == container.labels["refit.candidate"], evidence
        assert container.exit_code == 0 and container.destroyed, evidence
        leaked = [entry.split("=", 1)[0] for entry in container.environment if entry.split("=", 1)[-1] in secrets]
        assert not leaked, f"{container.id[:12]} shows secrets in its configuration: {leaked}"
        assert not any(entry.startswith(("AWS_SECRET_ACCESS_KEY=", "MLFLOW_TRACKING_PASSWORD="))
                       for entry in container.environment), container.environment
        assert "REFIT_PRIVATE_ENV_STDIN=1" in container.environment, container.environment
    # Through the proxy: the worker has no Docker socket, and the proxy logged each create.
    worker = inspect(stack.compose.container("airflow-worker"))
    assert not [m for m in worker["Mounts"] if "docker.sock" in m.get("Source", "")], worker["Mounts"]
    proxy_log = run(["docker", "logs", stack.compose.container("docker-socket-proxy")]).stderr + \
        run(["docker", "logs", stack.compose.container("docker-socket-proxy")]).stdout
    creates = re.findall(r"POST /v[\d.]+/containers/create", proxy_log)
    assert len(creates) >= len(containers), f"the proxy logged {len(creates)} creates for {len(containers)} containers"


def test_the_run_registers_the_champion_on_mlflow_with_snapshot_and_report_in_s3_a_note_and_the_view(stack):
    current = champion(stack)
    assert current is not None, "no champion alias on the MLflow server"
    tags = current["tags"]
    assert tags["refit.as_of"].startswith(AS_OF)
    run_id = tags["refit.dag_run_id"]
    snapshot = s3_keys(stack, f"artifacts/snapshots/{MODEL}/{tags['refit.snapshot_id']}/")
    assert any(key.endswith("data.parquet") for key in snapshot), snapshot
    report_key = re.sub(r"^s3://[^/]+/", "", tags["refit.report_uri"])
    assert report_key in s3_keys(stack, report_key), report_key
    report = json.loads(stack.s3().get_object(Bucket="refit", Key=report_key.replace(".html", ".json"))["Body"].read())
    assert report["verdict"] == "PASS" and report["registration"]["version"] == str(current["version"])
    note = wait_for(f"the note of {run_id}", lambda: stack.api.run(DAG_ID, run_id).get("note"), 60)
    assert note.startswith("**PASS**") and tags["refit.report_uri"] in note
    listed = stack.api.root.get("/refit/api/results", params={"model": MODEL}).json()
    assert (listed[0]["dag_run_id"], listed[0]["verdict"]) == (run_id, "PASS"), listed
    page = stack.api.root.get(f"/refit/runs/{DAG_ID}/{run_id}", follow_redirects=True)
    assert page.status_code == 200 and "PASS · credit_default · as of 2024-03-01" in page.text


# -- the socket proxy ----------------------------------------------------------------------------------------

PROBE = """
import json, sys, urllib.request, urllib.error
answers = {}
for name, method, path in json.loads(sys.argv[1]):
    request = urllib.request.Request("http://docker-socket-proxy:2375" + path, method=method, data=b"{}",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            answers[name] = response.status
    except urllib.error.HTTPError as error:
        answers[name] = error.code
print(json.dumps(answers))
"""


def test_the_socket_proxy_answers_403_to_exec_build_and_volume_creation(stack):
    container = stack.compose.container("postgres")
    calls = [("exec", "POST", f"/v1.41/containers/{container}/exec"),
             ("build", "POST", "/v1.41/build"),
             ("volume create", "POST", "/v1.41/volumes/create"),
             ("ping", "GET", "/_ping")]
    answers = json.loads(stack.compose.exec("airflow-worker", "python", "-c", PROBE, json.dumps(calls))
                         .strip().splitlines()[-1])
    assert answers == {"exec": 403, "build": 403, "volume create": 403, "ping": 200}, answers


# -- a GPU request on an engine without GPUs ---------------------------------------------------------------------

def test_a_gpu_request_on_a_gpu_less_engine_fails_the_task_naming_the_request_and_the_host(stack):
    dag_id = f"retrain_{GPU_MODEL}"
    dag_ready(stack, dag_id)
    run_id = trigger(stack, dag_id, AS_OF, {"sample_size": 2_000})
    assert wait_for_run(stack, dag_id, run_id)["state"] == "failed"
    train = [ti for ti in stack.api.task_instances(dag_id, run_id) if ti["task_id"] == "train"]
    assert train and all(ti["state"] == "failed" for ti in train), labels(train)
    log = task_log(stack, dag_id, run_id, train[0])
    assert "requested 1 GPU(s) with capabilities [['gpu']]" in log and "tcp://docker-socket-proxy:2375" in log \
        and "has no GPU runtime" in log, log[-3000:]
    # Failed for good at once: a retry could not find a GPU either.
    assert train[0]["try_number"] == 1, labels(train)
    assert champion(stack, GPU_MODEL) is None


# -- faults --------------------------------------------------------------------------------------------------------

def test_a_network_trainer_killed_mid_epoch_resumes_from_its_s3_checkpoint_on_retry(stack):
    run_id = trigger(stack, DAG_ID, "2024-05-01",
                     {"sample_size": 6_000, "candidates": ["logistic_baseline", "network"]})
    plan = wait_for("the run's plan", lambda: plan_of(stack, DAG_ID, run_id), 300)
    checkpoints = f"{run_folder(plan)}train/network/checkpoints/"
    wait_for(f"a checkpoint under {checkpoints}", lambda: s3_keys(stack, checkpoints), 600, interval=1,
             on_timeout=lambda: failed_run(stack, DAG_ID, run_id))
    container = wait_for("the network's train container", lambda: stack.watch.running(
        model=MODEL, candidate="network", task="train"), 60, interval=0.5)
    run(["docker", "kill", container[0]])

    assert wait_for_run(stack, DAG_ID, run_id)["state"] == "success", failed_run(stack, DAG_ID, run_id)
    network = next(ti for ti in stack.api.task_instances(DAG_ID, run_id)
                   if ti["task_id"] == "train" and ti["map_index"] == plan["candidates"].index("network"))
    assert network["try_number"] == 2, network
    first, retry = task_log(stack, DAG_ID, run_id, network, 1), task_log(stack, DAG_ID, run_id, network, 2)
    assert "exited with code 137" in first, first[-2000:]
    resumed = re.search(r"resuming from the checkpoint of epoch (\d+)", retry)
    assert resumed and int(resumed.group(1)) > 0, retry[-3000:]


def test_a_worker_restarted_mid_run_ends_with_exactly_one_new_version(stack):
    before = versions(stack)
    run_id = trigger(stack, DAG_ID, "2024-06-01", CONF)
    wait_for("a trainer container of the run", lambda: stack.watch.running(model=MODEL), 600, interval=1)
    stack.compose("restart", "airflow-worker", timeout=300)
    stack.compose.wait_healthy()
    finished = wait_for_run(stack, DAG_ID, run_id)
    if finished["state"] == "failed":  # failed cleanly: a re-trigger of the interval completes it
        run_id = trigger(stack, DAG_ID, "2024-06-01", CONF)
        assert wait_for_run(stack, DAG_ID, run_id)["state"] == "success", failed_run(stack, DAG_ID, run_id)
    after = versions(stack)
    keys = [v["tags"].get("refit.run_key") for v in after]
    assert len(keys) == len(set(keys)), f"two versions share a run key: {keys}"
    assert len(after) - len(before) <= 1, [v["version"] for v in after]
    plan = plan_of(stack, DAG_ID, run_id)
    registration = json.loads(stack.s3().get_object(Bucket="refit", Key=f"{run_folder(plan)}registration.json")
                              ["Body"].read())
    registered = [v for v in after if v["tags"].get("refit.run_key") == plan["run_key"]]
    assert len(registered) == (1 if registration["action"] in ("registered", "already_registered") else 0), \
        (registration, [v["version"] for v in after])


def test_down_and_up_with_volumes_kept_loses_no_champion_history_run_or_report(stack):
    from tests.stack.conftest import login

    kept = {"champion": champion(stack)["version"], "versions": [v["version"] for v in versions(stack)],
            "mlflow runs": mlflow_runs(stack), "reports": s3_keys(stack, f"artifacts/reports/{MODEL}/"),
            "dag runs": sorted(r["dag_run_id"] for r in stack.api._ok(stack.api.http.get(
                f"/dags/{DAG_ID}/dagRuns", params={"limit": 100}))["dag_runs"])}
    stack.compose("down", "--timeout", "30", timeout=600)
    assert not stack.compose("ps", "-q").stdout.split()
    started = time.monotonic()
    stack.compose("up", "-d", "--no-build")
    stack.compose.wait_healthy()
    stack.api = login(stack.env)
    print(f"down and up again: healthy in {time.monotonic() - started:.0f}s")
    now = {"champion": champion(stack)["version"], "versions": [v["version"] for v in versions(stack)],
           "mlflow runs": mlflow_runs(stack), "reports": s3_keys(stack, f"artifacts/reports/{MODEL}/"),
           "dag runs": sorted(r["dag_run_id"] for r in stack.api._ok(stack.api.http.get(
               f"/dags/{DAG_ID}/dagRuns", params={"limit": 100}))["dag_runs"])}
    assert now == kept
