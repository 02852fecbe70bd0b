"""The compose stack, up once for every test under ``tests/stack/`` (marker ``stack``).

``make test`` runs these; ``make test-quick`` (and ``PYTEST_ARGS='-m "not stack"'``) leave them
out. Set-up, in order, each step timed and printed: a Docker Engine (started only when none
answers), the images (``docker/local/build.sh``, cached), a fresh ``.env`` with random secrets
in a temporary folder, ``docker-compose up -d`` of the real compose file plus
``docker-compose.stack.yaml``, every service healthy, the demo warehouse loaded into the
stack's PostgreSQL, and a login to Airflow's REST API. A failed test gets the services' logs in
its report. Teardown removes the project with its volumes, and the engine if it was started here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.real_services import AirflowApi, FreePorts
from tests.stack.stack import (
    Compose,
    TrainerWatch,
    build_images,
    docker_engine,
    remove_trainer_containers,
    stack_env,
    wait_for,
)

MODELS = ("credit_default", "credit_default_gpu")
WAREHOUSE_ROWS = 20_000


@dataclass
class Stack:
    compose: Compose
    env: dict[str, str]
    api: AirflowApi
    mlflow: httpx.Client
    s3_url: str
    watch: TrainerWatch

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1",
                            aws_access_key_id=self.env["REFIT_S3_ACCESS_KEY"],
                            aws_secret_access_key=self.env["REFIT_S3_SECRET_KEY"])


def _say(config: pytest.Config, line: str) -> None:
    """A line on the terminal, past pytest's capture: set-up takes minutes and says where they went."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(f"[stack] {line}")
        return
    # Fixture set-up runs with output captured (fd level): lift it for this line.
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[stack] {line}")


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = request.config
    folder = tmp_path_factory.mktemp("stack")
    with ExitStack() as cleanup:
        started = time.monotonic()
        started_engine = cleanup.enter_context(docker_engine(folder))
        _say(config, f"Docker Engine {'started' if started_engine else 'already running'} "
                     f"({time.monotonic() - started:.1f}s)")
        _say(config, f"images built by docker/local/build.sh in {build_images(folder):.0f}s "
                     f"(log: {folder / 'build.log'})")

        ports = FreePorts()
        env = stack_env({"REFIT_AIRFLOW_PORT": ports(), "REFIT_MLFLOW_PORT": ports(),
                         "REFIT_S3_CONSOLE_PORT": ports(), "REFIT_STACK_S3_PORT": ports()})
        env_file = folder / ".env"
        env_file.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
        env_file.chmod(0o600)
        compose = Compose(env_file, env)
        cleanup.callback(remove_trainer_containers, MODELS)
        cleanup.callback(compose, "down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)
        request.session.stash[COMPOSE_KEY] = compose

        started = time.monotonic()
        compose("up", "-d", "--no-build")
        compose.wait_healthy()
        _say(config, f"docker-compose up: every service healthy in {time.monotonic() - started:.0f}s")

        started = time.monotonic()
        compose.exec("airflow-worker", "python", "-m", "ml_tasks", "demo-data", "--rows", str(WAREHOUSE_ROWS))
        _say(config, f"demo warehouse ({WAREHOUSE_ROWS} rows) loaded in {time.monotonic() - started:.0f}s")

        api = login(env)
        mlflow = httpx.Client(base_url=f"http://127.0.0.1:{env['REFIT_MLFLOW_PORT']}",
                              auth=(env["MLFLOW_ADMIN_USERNAME"], env["MLFLOW_ADMIN_PASSWORD"]), timeout=30)
        watch = TrainerWatch()
        cleanup.callback(watch.stop)
        yield Stack(compose, env, api, mlflow, f"http://127.0.0.1:{env['REFIT_STACK_S3_PORT']}", watch)


def login(env: dict[str, str]) -> AirflowApi:
    """Airflow's REST API with the admin's token (FAB's ``/auth/token``, the login the UI's users have)."""
    url = f"http://127.0.0.1:{env['REFIT_AIRFLOW_PORT']}"

    def token_api() -> AirflowApi | None:
        try:
            return AirflowApi(url, env["AIRFLOW_ADMIN_USERNAME"], env["AIRFLOW_ADMIN_PASSWORD"])
        except httpx.HTTPError:
            return None

    return wait_for("a token from the Airflow api-server", token_api, 120)


COMPOSE_KEY = pytest.StashKey[Compose]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed stack test carries every service's last log lines."""
    outcome = yield
    report = outcome.get_result()
    compose = item.session.stash.get(COMPOSE_KEY, None) if report.failed else None
    if compose is not None:
        report.sections.append(("docker-compose logs", compose.logs(80)))
