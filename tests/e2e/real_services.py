"""Local processes for ``tests/e2e/test_real_services.py``: moto's S3 server, the MLflow tracking
server and Airflow's api-server, scheduler and dag-processor, each a real server process.

Every process gets its own process group, so stopping it also ends the workers it forked
(uvicorn workers, MLflow's job consumers, the scheduler's task processes). Logs go to files;
:class:`ServiceLogsOnFailure` appends their tails to the report of a failed test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pytest

from ml_tasks.core.settings import REPO_ROOT

BIN = Path(sys.executable).parent
T = TypeVar("T")

#: Inherited variables that could point a process at another deployment than the one started here.
_FOREIGN_PREFIXES = ("AIRFLOW", "REFIT_", "MLFLOW_", "AWS_")


def clean_environ() -> dict[str, str]:
    """This process's environment without any Airflow, Refit, MLflow or AWS setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    # The services are the venv's entry points; the scheduler's task processes find them on PATH.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


class FreePorts:
    """Ports nothing listens on now, never the same one twice in a session."""

    def __init__(self) -> None:
        self._given: set[int] = set()

    def __call__(self) -> int:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in self._given:
                self._given.add(port)
                return port


def tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServiceDiedError(RuntimeError):
    """A service process exited while the test still needed it."""


class Processes:
    """The service processes of one test module, with their log files under ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._started: dict[str, tuple[subprocess.Popen, Path]] = {}

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.log(name)
        with log.open("wb") as handle:
            # cwd: servers that fall back to ./mlruns or ./mlartifacts write under the test's folder.
            process = subprocess.Popen(argv, env=env, cwd=self.log_dir, stdin=subprocess.DEVNULL, stdout=handle,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self._started[name] = (process, log)
        return process

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
        """Run a one-off command (a migration, a data load) to completion, logged like a service."""
        log = self.log(name)
        with log.open("wb") as handle:
            try:
                code = subprocess.run(argv, env=env, cwd=self.log_dir, stdin=subprocess.DEVNULL, stdout=handle,
                                      stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        if code != 0:
            raise ServiceDiedError(f"{' '.join(argv)} ended with {code}:\n{tail(log)}")

    def check(self) -> None:
        """Raise :class:`ServiceDiedError`, with its log, if any service has exited."""
        for name, (process, log) in self._started.items():
            if process.poll() is not None:
                raise ServiceDiedError(f"{name} exited with code {process.returncode}:\n{tail(log)}")

    def tails(self, lines: int = 40) -> str:
        return "\n\n".join(f"===== {log.name} (last {lines} lines) =====\n{tail(log, lines)}"
                           for log in sorted(self.log_dir.glob("*.log")))

    def stop(self, name: str, grace: float = 30.0) -> None:
        """Stop one service (SIGTERM to its group, SIGKILL after ``grace``); it is no longer checked."""
        process, _ = self._started.pop(name)
        _signal_group(process, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        _signal_group(process, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)

    def stop_all(self, grace: float = 15.0) -> None:
        """SIGTERM every group, newest first, then SIGKILL whatever is left of each group, and of
        the descendants that left it (Airflow's task supervisors start sessions of their own)."""
        started = list(reversed(self._started.values()))
        descendants = [child for process, _ in started for child in _descendants(process.pid)]
        for process, _ in started:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process, _ in started:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Also after a clean exit of the leader: forked workers may outlive it.
            _signal_group(process, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for child in descendants:
            with suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(descendants, timeout=10)


def _descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` now (empty when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)  # the group id is the pid: start_new_session made it leader


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, processes: Processes,
             interval: float = 1.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` with the logs."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        processes.check()
        try:
            value = probe()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s (last error: {last_error!r})\n"
                               f"{processes.tails()}")
        time.sleep(interval)


def http_up(url: str) -> bool:
    """Anything answering HTTP at ``url`` (a 401 of an authenticating server counts)."""
    return httpx.get(url, timeout=5).status_code < 500


class ServiceLogsOnFailure:
    """A pytest plugin, registered while the services live: a failed test's report gets the
    tails of every service log and of the Airflow task logs as extra sections."""

    def __init__(self, processes: Processes, task_log_folder: Path) -> None:
        self.processes = processes
        self.task_log_folder = task_log_folder

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.failed:
            report.sections.append(("service logs", self.processes.tails()))
            task_logs = sorted(self.task_log_folder.rglob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
            if task_logs:
                report.sections.append(("latest Airflow task logs",
                                        "\n\n".join(f"===== {p} =====\n{tail(p, 30)}" for p in task_logs)))
        return report


@contextmanager
def logs_on_failure(config: pytest.Config, processes: Processes, task_log_folder: Path) -> Iterator[None]:
    """While active, a failed test's report carries the service and task logs."""
    plugin = ServiceLogsOnFailure(processes, task_log_folder)
    config.pluginmanager.register(plugin, "refit-real-services-logs")
    try:
        yield
    finally:
        config.pluginmanager.unregister(plugin)


def airflow_binary() -> str:
    return str(BIN / "airflow")


def repo_path(*parts: str) -> str:
    return str(REPO_ROOT.joinpath(*parts))


# -- the services ---------------------------------------------------------------------------
AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "refit-test", "AWS_SECRET_ACCESS_KEY": "refit-test-secret",
                        "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(processes: Processes, port: int, bucket: str):
    """moto's S3 server with one empty bucket; returns (endpoint URL, boto3 S3 client)."""
    import boto3

    endpoint = f"http://127.0.0.1:{port}"
    processes.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                    {**clean_environ(), **AWS_TEST_CREDENTIALS})
    wait_for("moto S3 server", lambda: http_up(endpoint), 60, processes, interval=0.5)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=AWS_TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
                      aws_access_key_id=AWS_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=AWS_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket=bucket)
    return endpoint, s3


def start_mlflow(processes: Processes, port: int, *, backend_url: str, auth_database_url: str,
                 artifacts_destination: str, s3_endpoint: str, folder: Path) -> tuple[str, dict[str, str]]:
    """Start the MLflow tracking server on PostgreSQL, proxying artifacts to S3, with basic auth
    (users in the ``auth_database_url`` database). Returns without waiting (see
    :func:`wait_for_mlflow`), so Airflow can start meanwhile.

    Returns the tracking URI and the client variables (the admin's credentials) to use with it.
    """
    uri = f"http://127.0.0.1:{port}"
    env = {**clean_environ(), **AWS_TEST_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
           # The job runner serves GenAI features (judges, trace archival) with several consumer
           # processes: a lot of memory and CPU on a 2-core machine, for nothing this model uses.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    password = uuid.uuid4().hex
    config = folder / "mlflow-auth.ini"
    # The admin account is Refit's writer, as in docker-compose.yaml; others may only read.
    config.write_text("[mlflow]\n"
                      "default_permission = READ\n"
                      f"database_uri = {auth_database_url}\n"
                      "admin_username = admin\n"
                      f"admin_password = {password}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    # Signs the auth app's CSRF tokens; every worker needs the same one.
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = uuid.uuid4().hex
    processes.start("mlflow", [str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
                               "--backend-store-uri", backend_url, "--serve-artifacts",
                               "--artifacts-destination", artifacts_destination,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "2"], env)
    return uri, {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}


def wait_for_mlflow(processes: Processes, uri: str) -> None:
    wait_for("MLflow server", lambda: httpx.get(f"{uri}/health", timeout=5).status_code == 200, 180, processes)


class AirflowApi:
    """Airflow's public REST API (``/api/v2``) with a bearer token of a SimpleAuthManager user."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        response = httpx.post(f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=30)
        response.raise_for_status()
        token = response.json()["access_token"]
        self.http = httpx.Client(base_url=f"{base_url}/api/v2", headers={"Authorization": f"Bearer {token}"},
                                 timeout=30)
        # Plugin apps hang off the server root, next to /api/v2, behind the same login.
        self.root = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def _ok(self, response: httpx.Response) -> dict:
        if response.is_error:
            raise AssertionError(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                                 f"{response.text}")
        return response.json()

    def dag(self, dag_id: str) -> dict | None:
        response = self.http.get(f"/dags/{dag_id}")
        return None if response.status_code == 404 else self._ok(response)

    def unpause(self, dag_id: str) -> dict:
        return self._ok(self.http.patch(f"/dags/{dag_id}", json={"is_paused": False}))

    def pause(self, dag_id: str) -> dict:
        return self._ok(self.http.patch(f"/dags/{dag_id}", json={"is_paused": True}))

    def post_run(self, dag_id: str, logical_date: str | None, conf: dict) -> httpx.Response:
        """What the UI's trigger form sends: the logical date (may be empty) and the params as conf."""
        return self.http.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf})

    def trigger(self, dag_id: str, logical_date: str | None, conf: dict) -> dict:
        return self._ok(self.post_run(dag_id, logical_date, conf))

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._ok(self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def runs(self, dag_id: str) -> list[dict]:
        return self._ok(self.http.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100}))["dag_runs"]

    def clear(self, dag_id: str, run_id: str) -> dict:
        """Clear every task of a run, as the UI's "Clear" does: the run goes again."""
        return self._ok(self.http.post(f"/dags/{dag_id}/clearTaskInstances",
                                       json={"dag_run_id": run_id, "dry_run": False, "only_failed": False}))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._ok(self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                                      params={"limit": 100}))["task_instances"]


def airflow_environment(*, home: Path, metadata_url: str, api_url: str, warehouse_url: str,
                        refit: dict[str, str]) -> dict[str, str]:
    """Configuration shared by every Airflow process (and so by every task and trainer process)."""
    return {
        **clean_environ(),
        **refit,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": repo_path("dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": repo_path("plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Two cores: four task processes at a time (each trainer is a process of its own too).
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        # The scheduler signs task tokens and the api-server checks them: one shared secret.
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "refit:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # Only triggered runs: unpausing a monthly DAG would otherwise start this month's run,
        # which would hold the DAG's single active-run slot (max_active_runs=1) for minutes.
        # (Asset-triggered runs need the job schedule too: restart_scheduler turns it on.)
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # The deployed source: the warehouse_default connection (Airflow wants postgres://).
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": warehouse_url.replace("postgresql+psycopg://", "postgres://"),
    }


def start_airflow(processes: Processes, env: dict[str, str], port: int) -> None:
    """Migrate the metadata database and create Refit's pools, then start api-server, scheduler
    and dag-processor."""
    from ml_tasks.core.settings import load_settings
    from refit_airflow.scheduling import write_pools_file

    airflow = airflow_binary()
    processes.run("airflow-db-migrate", [airflow, "db", "migrate"], env, timeout=300)
    # The trainer tasks of a spec with trainer.gpus wait for good in a pool that does not exist.
    pools = write_pools_file(Path(env["AIRFLOW_HOME"]) / "refit-pools.json", load_settings(env).models_dir, env)
    processes.run("airflow-pools", [airflow, "pools", "import", str(pools)], env, timeout=300)
    processes.start("airflow-api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port),
                                           "--workers", "1"], env)
    processes.start("airflow-scheduler", [airflow, "scheduler"], env)
    processes.start("airflow-dag-processor", [airflow, "dag-processor"], env)


def restart_scheduler(processes: Processes, env: dict[str, str], **settings: str) -> None:
    """Stop the scheduler and start another with ``AIRFLOW__SCHEDULER__*`` ``settings`` changed
    (e.g. ``use_job_schedule="True"``); the first one's log stays, as ``airflow-scheduler-1.log``."""
    processes.stop("airflow-scheduler")
    processes.log("airflow-scheduler").rename(processes.log("airflow-scheduler-1"))
    changed = {**env, **{f"AIRFLOW__SCHEDULER__{key.upper()}": value for key, value in settings.items()}}
    processes.start("airflow-scheduler", [airflow_binary(), "scheduler"], changed)


def airflow_login(processes: Processes, env: dict[str, str], port: int) -> AirflowApi:
    """Wait until api-server, scheduler and dag-processor report healthy, and log in."""
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        health = httpx.get(f"{url}/api/v2/monitor/health", timeout=5).json()
        return all((health.get(part) or {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "dag_processor"))

    wait_for("Airflow api-server, scheduler and dag-processor", healthy, 240, processes, interval=2)
    # The api-server generates the user's password at start-up; the file is the only place it is.
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    return AirflowApi(url, "refit", passwords["refit"])


FINISHED = {"success", "failed"}
#: A task in one of these states fails the run, or retries it minutes later (the DAG's retry delay).
BROKEN = {"failed", "up_for_retry", "upstream_failed"}


def wait_for_run(api: AirflowApi, processes: Processes, task_log_folder: Path, dag_id: str, run_id: str,
                 timeout: float) -> dict:
    """Poll a DAG run until it finishes; fail early, with the task's log, as soon as a task breaks."""
    deadline = time.monotonic() + timeout
    while True:
        processes.check()
        run = api.run(dag_id, run_id)
        if run["state"] in FINISHED:
            return run
        instances = api.task_instances(dag_id, run_id)
        broken = [ti for ti in instances if ti["state"] in BROKEN]
        if broken or time.monotonic() > deadline:
            why = f"tasks {_labels(broken)} broke" if broken else f"still {run['state']} after {timeout:.0f}s"
            raise AssertionError(
                f"{dag_id} run {run_id}: {why}\ntask instances: {_labels(instances)}\n"
                f"{_task_logs(task_log_folder, run_id, broken)}\n"
                f"===== scheduler log =====\n{tail(processes.log('airflow-scheduler'), 60)}")
        time.sleep(3)


def _labels(instances: list[dict]) -> str:
    def label(ti: dict) -> str:
        mapped = f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""
        return f"{ti['task_id']}{mapped}={ti['state']}"

    return ", ".join(label(ti) for ti in instances)


def _task_logs(folder: Path, run_id: str, instances: list[dict]) -> str:
    logs = []
    for ti in instances:
        for path in sorted(folder.rglob("*.log")):
            if f"run_id={run_id}" in str(path) and f"task_id={ti['task_id']}" in str(path):
                logs.append(f"===== {path} =====\n{tail(path, 40)}")
    return "\n".join(logs)
