"""The deployed stack on a real Docker Engine, for ``tests/stack/``: the engine, the images, the
compose project, and what the tests observe of it.

Nothing is pulled (no registry is reachable from these machines): ``docker/local/build.sh``
builds every image here, the upstream ones replaced by local equivalents through the compose
file's image variables. Each piece stops only what it started: an engine that already answered
stays up, and ``down`` removes this test's project, its volumes and its trainer containers, nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ml_tasks.core.settings import REPO_ROOT

T = TypeVar("T")

PROJECT = "refit-stack-test"
COMPOSE_FILES = (REPO_ROOT / "docker-compose.yaml", REPO_ROOT / "tests" / "stack" / "docker-compose.stack.yaml")
BUILD_SCRIPT = REPO_ROOT / "docker" / "local" / "build.sh"
#: The upstream images replaced by what docker/local/build.sh builds, by the compose file's variables.
LOCAL_IMAGES = {
    "REFIT_POSTGRES_IMAGE": "refit-local/postgres:15",
    "REFIT_REDIS_IMAGE": "refit-local/redis:7",
    "REFIT_S3_IMAGE": "refit-local/s3:moto",
    "REFIT_SOCKET_PROXY_IMAGE": "refit-local/socket-proxy:haproxy",
}
S3_HEALTHCHECK = "curl -fsS -o /dev/null http://127.0.0.1:9000/moto-api/"
#: Long-running services (healthy when up) and one-shot ones (exit 0), as docker-compose.yaml has them.
LONG_RUNNING = ("postgres", "redis", "minio", "mlflow", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "docker-socket-proxy")
ONE_SHOT = ("minio-init", "airflow-init", "trainer")


def run(command: list[str], *, timeout: float = 600, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"`{' '.join(command)}` exited {done.returncode}:\n{done.stdout[-4000:]}\n"
                             f"{done.stderr[-4000:]}")
    return done


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, *, interval: float = 2,
             on_timeout: Callable[[], str] = lambda: "") -> T:
    """Poll ``probe`` until it returns something truthy; an AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what}\n{on_timeout()}")
        time.sleep(interval)


# -- the engine ------------------------------------------------------------------------------------

def engine_answers() -> bool:
    try:
        return run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=15, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextmanager
def docker_engine(log_dir: Path) -> Iterator[bool]:
    """A Docker Engine that answers; started here (and stopped afterwards) only when none did.
    Yields whether this test started it."""
    if engine_answers():
        yield False
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise AssertionError("no Docker Engine answers and dockerd is not installed: `make system-deps` "
                             "installs Debian's docker.io")
    log_path = log_dir / "dockerd.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([dockerd, "--host", "unix:///var/run/docker.sock", "--storage-driver", "overlay2"],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("dockerd to answer", lambda: process.poll() is None and engine_answers(), 90, interval=0.5,
                 on_timeout=lambda: log_path.read_text()[-4000:])
        yield True
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def build_images(log_dir: Path) -> float:
    """Run docker/local/build.sh (cached between runs); its wall time in seconds."""
    started = time.monotonic()
    log_path = log_dir / "build.log"
    with log_path.open("w") as log:
        code = subprocess.run(["bash", str(BUILD_SCRIPT)], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                              timeout=3600).returncode
    if code != 0:
        raise AssertionError(f"docker/local/build.sh exited {code}:\n{log_path.read_text()[-6000:]}")
    return time.monotonic() - started


# -- the compose project -----------------------------------------------------------------------------

def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def stack_env(ports: dict[str, int]) -> dict[str, str]:
    """A fresh .env: random secrets for every ``${NAME:?}`` of the compose file, local images, free ports."""
    def token() -> str:
        return secrets.token_urlsafe(24)

    return {
        "POSTGRES_PASSWORD": token(), "AIRFLOW_DB_PASSWORD": token(), "MLFLOW_DB_PASSWORD": token(),
        "WAREHOUSE_DB_PASSWORD": token(), "REDIS_PASSWORD": token(),
        "MINIO_ROOT_USER": "refit-root", "MINIO_ROOT_PASSWORD": token(),
        "REFIT_S3_ACCESS_KEY": "refit-tasks", "REFIT_S3_SECRET_KEY": token(),
        "MLFLOW_S3_ACCESS_KEY": "refit-mlflow", "MLFLOW_S3_SECRET_KEY": token(),
        "MLFLOW_ADMIN_USERNAME": "admin", "MLFLOW_ADMIN_PASSWORD": token(), "MLFLOW_FLASK_SECRET_KEY": token(),
        "AIRFLOW_FERNET_KEY": fernet_key(), "AIRFLOW_JWT_SECRET": token(), "AIRFLOW_API_SECRET_KEY": token(),
        "AIRFLOW_ADMIN_USERNAME": "admin", "AIRFLOW_ADMIN_PASSWORD": token(),
        "REFIT_DOCKER_NETWORK": PROJECT, "REFIT_BIND_ADDRESS": "127.0.0.1",
        # MLflow refuses Host headers it does not list: the published port is not the default 5000.
        "MLFLOW_ALLOWED_HOSTS": f"mlflow,mlflow:5000,localhost:{ports['REFIT_MLFLOW_PORT']},"
                                f"127.0.0.1:{ports['REFIT_MLFLOW_PORT']}",
        **LOCAL_IMAGES, "REFIT_S3_HEALTHCHECK": S3_HEALTHCHECK,
        **{name: str(port) for name, port in ports.items()},
    }


#: Values of these are secrets: none may show in a trainer container's configuration.
SECRET_NAMES = ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "WAREHOUSE_DB_PASSWORD",
                "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "REFIT_S3_SECRET_KEY", "MLFLOW_S3_SECRET_KEY",
                "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
                "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD")


@dataclass
class Compose:
    """``docker-compose`` (v1) on this test's project: the real compose file plus the test's override."""

    env_file: Path
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        return ["docker-compose", "--project-name", PROJECT, "--project-directory", str(REPO_ROOT),
                "--env-file", str(self.env_file), *files, *args]

    def __call__(self, *args: str, timeout: float = 900, check: bool = True,
                 input: str | None = None) -> subprocess.CompletedProcess:
        # Compose v1 reads the image variables from the env file; the process environment would win.
        clean = {k: v for k, v in os.environ.items() if k not in self.env}
        return run(self.command(*args), timeout=timeout, check=check, input=input, env=clean)

    def container(self, service: str) -> str:
        """The id of the (first) container of ``service``."""
        ids = self("ps", "-q", service).stdout.split()
        if not ids:
            raise AssertionError(f"service {service} has no container")
        return ids[0]

    def logs(self, lines: int = 60, *services: str) -> str:
        return self("logs", "--no-color", f"--tail={lines}", *services, check=False, timeout=120).stdout

    def exec(self, service: str, *command: str, timeout: float = 600) -> str:
        return self("exec", "-T", service, *command, timeout=timeout).stdout

    def states(self) -> dict[str, str]:
        """Each service's state: ``healthy``/``unhealthy``/``starting``, ``running`` (no health check),
        ``exited(<code>)``, or ``missing``."""
        states = {}
        for service in (*LONG_RUNNING, *ONE_SHOT):
            ids = self("ps", "-a", "-q", service, check=False).stdout.split()
            if not ids:
                states[service] = "missing"
                continue
            state = inspect(ids[0])["State"]
            if state.get("Health"):
                states[service] = state["Health"]["Status"] if state["Running"] else f"exited({state['ExitCode']})"
            else:
                states[service] = "running" if state["Running"] else f"exited({state['ExitCode']})"
        return states

    def wait_healthy(self, timeout: float = 900) -> None:
        """Every long-running service healthy and every one-shot service exited 0."""
        def ready() -> bool:
            states = self.states()
            failed = [s for s in ONE_SHOT if states[s].startswith("exited(") and states[s] != "exited(0)"]
            if failed:
                raise AssertionError(f"one-shot services failed: {states}\n{self.logs(80, *failed)}")
            return (all(states[s] in ("healthy", "running") for s in LONG_RUNNING)
                    and all(states[s] == "exited(0)" for s in ONE_SHOT))

        wait_for("every service of the stack to be healthy", ready, timeout, interval=3,
                 on_timeout=lambda: f"{self.states()}\n{self.logs(60)}")


def inspect(container: str) -> dict:
    return json.loads(run(["docker", "inspect", container], timeout=60).stdout)[0]


# -- trainer containers, as the engine saw them ----------------------------------------------------------

@dataclass
class TrainerContainer:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    image: str = ""
    exit_code: int | None = None
    destroyed: bool = False


class TrainerWatch:
    """Every trainer container the engine creates while this watch runs (``docker events``),
    inspected as soon as it starts: it is removed seconds after it exits."""

    def __init__(self) -> None:
        self.containers: dict[str, TrainerContainer] = {}
        self._process = subprocess.Popen(
            ["docker", "events", "--filter", "type=container", "--filter", "label=refit.role=trainer",
             "--format", "{{json .}}"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            event = json.loads(line)
            container = self.containers.setdefault(event["id"], TrainerContainer(event["id"]))
            action = event.get("Action") or event.get("status")
            if action == "start":
                try:
                    config = inspect(event["id"])["Config"]
                except AssertionError:
                    continue  # gone already: create/die/destroy still say what it was
                container.command, container.environment = config["Cmd"], config["Env"] or []
                container.labels, container.image = config["Labels"] or {}, config["Image"]
            elif action == "die":
                container.exit_code = int(event["Actor"]["Attributes"].get("exitCode", -1))
            elif action == "destroy":
                container.destroyed = True
            if not container.labels:
                container.labels = {k: v for k, v in event["Actor"]["Attributes"].items() if k.startswith("refit.")}

    def of_model(self, model: str) -> list[TrainerContainer]:
        return [c for c in self.containers.values() if c.labels.get("refit.model") == model]

    def running(self, **labels: str) -> list[str]:
        """Ids of running trainer containers with these ``refit.<name>`` labels."""
        filters = [arg for name, value in labels.items() for arg in ("--filter", f"label=refit.{name}={value}")]
        return run(["docker", "ps", "-q", "--filter", "label=refit.role=trainer", *filters]).stdout.split()

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)


def remove_trainer_containers(model_names: tuple[str, ...]) -> None:
    """Trainer containers of this test's models that outlived it (a killed worker's, say)."""
    for model in model_names:
        ids = run(["docker", "ps", "-aq", "--filter", f"label=refit.model={model}",
                   "--filter", f"network={PROJECT}"], check=False).stdout.split()
        if ids:
            run(["docker", "rm", "-f", *ids], check=False)
