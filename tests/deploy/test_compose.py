"""The deployed stack's docker-compose.yaml, validated offline.

``docker-compose config`` (Debian's docker-compose 1.29, client only: no engine needed) resolves
the file with a throwaway env file of generated secrets, and the tests read the resolved services:
what runs, in what order, with which health checks, databases, networks and Docker access. With
one secret left out the same command must fail and name it, so a stack never starts with a
missing or default password. When docker-compose is missing the tests fail rather than skip:
``make system-deps`` installs it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from ml_tasks.core.settings import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

#: Every secret the stack needs; each must be given in .env, none has a default.
SECRETS = (
    "POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "WAREHOUSE_DB_PASSWORD", "REDIS_PASSWORD",
    "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "REFIT_S3_ACCESS_KEY", "REFIT_S3_SECRET_KEY", "MLFLOW_S3_ACCESS_KEY",
    "MLFLOW_S3_SECRET_KEY", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD",
)
LONG_RUNNING = ("postgres", "redis", "minio", "mlflow", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "docker-socket-proxy")
ONE_SHOT = ("minio-init", "airflow-init", "trainer")
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker")
#: What DockerOperator needs of the Docker API (create, attach, start, wait, stop, remove a
#: container; look up and pull an image; ping), in the proxy's switches. Everything else is off.
PROXY_ENABLED = {"CONTAINERS", "IMAGES", "POST", "DELETE", "ALLOW_START", "ALLOW_STOP", "ALLOW_ATTACH", "PING",
                 "VERSION"}
PROXY_DISABLED_AT_LEAST = {"EXEC", "ALLOW_EXEC", "BUILD", "VOLUMES", "NETWORKS", "SWARM", "SECRETS", "AUTH", "SYSTEM",
                           "INFO", "SERVICES", "TASKS", "NODES", "PLUGINS", "CONFIGS", "COMMIT", "EVENTS", "SESSION"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN")
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
DOCKER_SOCKET = "/var/run/docker.sock"


def compose_text() -> str:
    """The compose file without its comment lines, which compose does not interpolate."""
    return "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))


def references() -> list[re.Match]:
    """Every ``${NAME…}`` compose interpolates (``$$`` is a literal dollar for the container)."""
    return list(REFERENCE.finditer(compose_text().replace("$$", "")))


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose is not installed: `make system-deps` installs Debian's docker-compose, "
                    "which validates docker-compose.yaml without a Docker engine")
    return found


def generated_secrets() -> dict[str, str]:
    """A value for every secret, URL-safe like .env.example asks; the Fernet key is a real one."""
    from cryptography.fernet import Fernet

    values = {name: secrets.token_urlsafe(24) for name in SECRETS}
    values["AIRFLOW_FERNET_KEY"] = Fernet.generate_key().decode()
    return values


def docker_compose_v2() -> str:
    """Compose v2's binary, which ``make system-deps`` fetches (docker/local/compose-v2.sh): what
    the README tells users to run, where Debian bookworm has only v1."""
    found = os.environ.get("REFIT_COMPOSE_V2") or str(REPO_ROOT / ".tools" / "docker-compose-v2")
    if not os.access(found, os.X_OK):
        pytest.fail(f"Compose v2 is not at {found}: `make system-deps` fetches it (docker/local/compose-v2.sh)")
    return found


def compose_config(env: dict[str, str], compose: str | None = None) -> subprocess.CompletedProcess:
    """``docker-compose config`` (or another ``compose`` binary's) with exactly ``env`` as its env
    file and nothing from this shell, so a secret exported by whoever runs the tests cannot fill a gap."""
    with tempfile.TemporaryDirectory(prefix="refit-compose-") as folder:
        env_file = Path(folder) / "env"
        env_file.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
        command = [compose or docker_compose(), "--env-file", str(env_file), "--file", str(COMPOSE_FILE), "config"]
        return subprocess.run(command,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": folder})


@pytest.fixture(scope="module")
def secret_values() -> dict[str, str]:
    return generated_secrets()


@pytest.fixture(scope="module")
def config(secret_values) -> dict:
    done = compose_config(secret_values)
    assert done.returncode == 0, f"docker-compose config failed with every secret set:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def services(config) -> dict:
    return config["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def volume_parts(volume) -> tuple[str, str, bool]:
    """(source, target, read_only) of a volume in either of compose's two notations."""
    if isinstance(volume, dict):
        return str(volume.get("source", "")), str(volume["target"]), bool(volume.get("read_only"))
    parts = str(volume).split(":")
    mode = parts[2] if len(parts) > 2 else "rw"
    return parts[0], parts[1] if len(parts) > 1 else parts[0], "ro" in mode.split(",")


def depends_on(service: dict) -> dict[str, str]:
    entries = service.get("depends_on") or {}
    if isinstance(entries, list):
        return dict.fromkeys(entries, "")
    return {name: (entry or {}).get("condition", "") for name, entry in entries.items()}


def networks_of(service: dict) -> set[str]:
    networks = service.get("networks") or {}
    return set(networks) if not isinstance(networks, dict) else set(networks.keys())


# --- the file resolves, and refuses to without its secrets --------------------------------------


def test_every_service_of_the_stack_is_defined(services):
    required = {*LONG_RUNNING, *ONE_SHOT}
    assert required <= set(services), f"missing services: {sorted(required - set(services))}"


def test_the_list_of_secrets_is_every_required_variable_of_the_file():
    required = {match.group(1) for match in references() if match.group(2).startswith(":?")}
    assert required == set(SECRETS)


def test_every_secret_looking_variable_must_be_set_and_has_no_default():
    loose = sorted({match.group(0) for match in references()
                    if SECRET_NAME.search(match.group(1)) and not match.group(2).startswith(":?")})
    assert not loose, f"secrets with a default or allowed empty (use ${{NAME:?…}}): {loose}"
    bare = sorted({name for name in re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", compose_text().replace("$$", ""))
                   if SECRET_NAME.search(name)})
    assert not bare, f"secrets referenced as $NAME, which cannot require a value: {bare}"


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_each_secret_and_names_it(missing, secret_values):
    done = compose_config({name: value for name, value in secret_values.items() if name != missing})
    assert done.returncode != 0, f"docker-compose config succeeded without {missing}"
    assert f"{missing} is not set" in done.stderr, done.stderr
    assert ".env.example" in done.stderr, "the error does not say where the variable is documented"


def test_an_empty_secret_is_refused_like_a_missing_one(secret_values):
    done = compose_config({**secret_values, "AIRFLOW_FERNET_KEY": ""})
    assert done.returncode != 0 and "AIRFLOW_FERNET_KEY is not set" in done.stderr


def test_compose_v2_resolves_the_file_as_v1_does(config, secret_values):
    """Users run Compose v2, the stack test v1: neither may reject a key, and both must read the
    same services, images, start order, health checks and published ports."""
    done = compose_config(secret_values, docker_compose_v2())
    assert done.returncode == 0, f"Compose v2 rejects docker-compose.yaml:\n{done.stderr}"
    v1, v2 = config["services"], yaml.safe_load(done.stdout)["services"]
    assert set(v2) == set(v1)

    def essentials(service: dict) -> dict:
        # v1 writes "127.0.0.1:8080:8080/tcp", v2 a mapping whose protocol defaults to tcp.
        ports = sorted(f"{p.get('host_ip', '')}:{p.get('published')}:{p.get('target')}/{p.get('protocol', 'tcp')}"
                       if isinstance(p, dict) else str(p) for p in service.get("ports", []))
        return {"image": service.get("image"), "depends_on": depends_on(service), "ports": ports,
                "healthcheck": (service.get("healthcheck") or {}).get("test"), "restart": service.get("restart")}

    differing = {name: (essentials(v1[name]), essentials(v2[name])) for name in v1
                 if essentials(v1[name]) != essentials(v2[name])}
    assert not differing, f"v1 and v2 read these services differently (v1, v2): {differing}"


def test_compose_v2_also_refuses_a_missing_secret_and_names_it(secret_values):
    missing = "MLFLOW_ADMIN_PASSWORD"
    done = compose_config({name: value for name, value in secret_values.items() if name != missing},
                          docker_compose_v2())
    assert done.returncode != 0 and f"{missing} is not set" in done.stderr, done.stderr


def test_env_example_documents_every_variable_and_fills_in_no_secret():
    documented = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            documented[match.group(1)] = match.group(2).strip()
    referenced = {match.group(1) for match in references()}
    assert referenced <= set(documented), f"not in .env.example: {sorted(referenced - set(documented))}"
    filled = sorted(name for name in SECRETS if documented.get(name))
    assert not filled, f".env.example gives secrets a value: {filled}"


def test_env_example_as_is_does_not_start_the_stack():
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    done = compose_config(values)
    assert done.returncode != 0 and "is not set: copy .env.example to .env" in done.stderr


# --- start-up order --------------------------------------------------------------------------


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_a_health_check(services, name):
    healthcheck = services[name].get("healthcheck") or {}
    assert healthcheck.get("test") and not healthcheck.get("disable"), f"{name} has no health check"
    assert services[name].get("restart") in {"always", "unless-stopped"}, f"{name} is not restarted"


@pytest.mark.parametrize("name", ONE_SHOT)
def test_one_shot_service_runs_once(services, name):
    assert services[name].get("restart") == "no"


def test_every_dependency_waits_for_health_or_successful_completion(services):
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition == expected, f"{name} depends on {dependency} with {condition or 'no condition'!r}"


@pytest.mark.parametrize(("name", "dependencies"), [
    ("minio-init", {"minio"}),
    ("mlflow", {"postgres", "minio-init"}),
    ("airflow-init", {"postgres"}),
    *[(name, {"postgres", "airflow-init"}) for name in AIRFLOW_SERVICES if name != "airflow-init"],
    ("airflow-scheduler", {"redis", "minio-init"}),
    ("airflow-apiserver", {"minio-init"}),
    ("airflow-worker", {"redis", "airflow-apiserver", "mlflow", "minio-init", "docker-socket-proxy", "trainer"}),
])
def test_service_starts_after_what_it_needs(services, name, dependencies):
    missing = dependencies - set(depends_on(services[name]))
    assert not missing, f"{name} does not wait for {sorted(missing)}"


# --- databases -------------------------------------------------------------------------------


def test_mlflow_has_its_own_databases_and_role_not_airflows(services):
    airflow = urlsplit(environment(services["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    mlflow_env = environment(services["mlflow"])
    backend = urlsplit(mlflow_env["MLFLOW_BACKEND_STORE_URI"])
    auth = urlsplit(mlflow_env["MLFLOW_AUTH_DATABASE_URI"])
    databases = {airflow.path, backend.path, auth.path}
    assert len(databases) == 3, f"Airflow, MLflow and MLflow's auth store share a database: {databases}"
    assert airflow.username != backend.username, "MLflow logs in to PostgreSQL as Airflow's role"
    assert airflow.password != backend.password


def test_every_airflow_service_uses_the_same_metadata_database_and_keys(services):
    shared = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
              "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL", "REFIT_TRAINER_MODE")
    for key in shared:
        values = {environment(services[name]).get(key) for name in AIRFLOW_SERVICES}
        assert len(values) == 1 and None not in values, f"Airflow services disagree on {key}: {values}"


def test_the_postgres_init_script_creates_the_databases_the_services_use(services):
    script = (REPO_ROOT / "docker" / "postgres" / "init-databases.sh").read_text()
    mounted = [volume_parts(v) for v in services["postgres"].get("volumes", [])]
    assert any(target.startswith("/docker-entrypoint-initdb.d/") and source.endswith("init-databases.sh") and ro
               for source, target, ro in mounted), "the init script is not mounted read-only into initdb.d"
    urls = [environment(services["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            environment(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"],
            environment(services["mlflow"])["MLFLOW_AUTH_DATABASE_URI"],
            environment(services["airflow-worker"])["AIRFLOW_CONN_WAREHOUSE_DEFAULT"]]
    calls = re.findall(r"^create_role_and_databases (\S+) \"\$(\w+)\" (.+)$", script, re.MULTILINE)
    created = {(role, database) for role, _, databases in calls for database in databases.split()}
    postgres_env = environment(services["postgres"])
    for url in urls:
        parts = urlsplit(url)
        assert (parts.username, parts.path.lstrip("/")) in created, f"{url.split('@')[-1]} is never created"
        [password_var] = [var for role, var, _ in calls if role == parts.username]
        assert postgres_env[password_var] == parts.password, f"role {parts.username} gets another password"


# --- the Docker API ---------------------------------------------------------------------------


def test_only_the_socket_proxy_mounts_the_docker_socket_and_read_only(services):
    mounts = {name: [volume_parts(v) for v in service.get("volumes", []) if DOCKER_SOCKET in str(v)]
              for name, service in services.items()}
    assert {name for name, found in mounts.items() if found} == {"docker-socket-proxy"}
    assert all(read_only for _, _, read_only in mounts["docker-socket-proxy"]), "the proxy mounts the socket writable"


def test_the_socket_proxy_enables_only_what_docker_operator_needs(services):
    env = environment(services["docker-socket-proxy"])
    enabled = {name for name, value in env.items() if value == "1"}
    assert enabled == PROXY_ENABLED
    closed = {name for name, value in env.items() if value == "0"}
    assert closed >= PROXY_DISABLED_AT_LEAST, f"not explicitly off: {sorted(PROXY_DISABLED_AT_LEAST - closed)}"


def test_only_the_workers_can_reach_the_socket_proxy(config, services):
    [proxy_network] = networks_of(services["docker-socket-proxy"])
    assert config["networks"][proxy_network].get("internal") is True
    on_it = {name for name, service in services.items() if proxy_network in networks_of(service)}
    assert on_it == {"docker-socket-proxy", "airflow-worker"}
    assert not services["docker-socket-proxy"].get("ports"), "the Docker API is published on the host"


def test_workers_talk_to_docker_through_the_proxy(services):
    env = environment(services["airflow-worker"])
    assert env["REFIT_DOCKER_URL"] == env["DOCKER_HOST"] == "tcp://docker-socket-proxy:2375"


def test_trainer_containers_join_the_stacks_network(config, services):
    network = config["networks"]["default"]["name"]
    for name in AIRFLOW_SERVICES:
        assert environment(services[name])["REFIT_DOCKER_NETWORK"] == network


def test_gpus_are_requested_by_trainer_containers_not_by_the_worker(services):
    worker = services["airflow-worker"]
    assert "gpus" not in worker and not (worker.get("deploy") or {}).get("resources"), \
        "the worker reserves GPUs; the trainer containers DockerOperator starts ask for them"
    assert "runtime" not in worker


def test_the_trainer_service_builds_the_image_the_model_specs_run(services):
    from ml_tasks.core.spec import load_spec

    trainer = services["trainer"]
    assert Path(trainer["build"]["context"]).resolve() == REPO_ROOT
    assert trainer["build"]["dockerfile"] == "docker/trainer/Dockerfile"
    images = {load_spec(path).trainer.image for path in sorted((REPO_ROOT / "include" / "models").glob("*.yaml"))}
    assert images == {trainer["image"]}, f"specs run {images}, compose builds {trainer['image']}"


def test_the_workers_settings_configure_the_docker_trainer_as_deployed(services, secret_values):
    """The worker's environment, handed to the trainer operator's own set-up: the container goes
    through the proxy onto the stack's network, with the stores' addresses and the credentials."""
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
    from ml_tasks.core.spec import load_spec
    from refit_airflow.trainer import (
        docker_trainer_kwargs,
        secret_environment,
        trainer_mode,
    )

    env = environment(services["airflow-worker"])
    spec = load_spec(REPO_ROOT / "include" / "models" / "credit_default.yaml")
    kwargs = docker_trainer_kwargs(spec, env)
    assert trainer_mode(env) == "docker"
    assert kwargs["docker_url"] == "tcp://docker-socket-proxy:2375"
    assert kwargs["network_mode"] == env["REFIT_DOCKER_NETWORK"]
    assert kwargs["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert kwargs["environment"]["REFIT_ARTIFACT_ROOT"].startswith("s3://")
    assert kwargs["environment"]["REFIT_S3_ENDPOINT_URL"] == "http://minio:9000"
    credentials = secret_environment(env)
    assert credentials["MLFLOW_TRACKING_PASSWORD"] == secret_values["MLFLOW_ADMIN_PASSWORD"]
    assert credentials["AWS_SECRET_ACCESS_KEY"] == secret_values["REFIT_S3_SECRET_KEY"]
    assert not set(credentials) & set(kwargs["environment"]), "credentials would be shown in the UI"


# --- Airflow and MLflow settings -------------------------------------------------------------


def test_airflow_runs_celery_workers_with_the_execution_api_of_the_api_server(services):
    env = environment(services["airflow-worker"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver" and api.path == "/execution/"
    assert services["airflow-apiserver"]["command"] == ["api-server"]
    assert services["airflow-worker"]["command"] == ["celery", "worker"]


def test_mlflow_requires_a_login_and_keeps_artifacts_in_its_bucket(services):
    mlflow = services["mlflow"]
    env = environment(mlflow)
    assert mlflow["build"]["dockerfile"] == "docker/mlflow/Dockerfile"
    start = (REPO_ROOT / "docker" / "mlflow" / "start.sh").read_text()
    assert "--app-name basic-auth" in start
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_SERVE_ARTIFACTS"] == "true"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == environment(services["airflow-worker"])["MLFLOW_TRACKING_PASSWORD"]


def test_each_s3_client_has_its_own_key(services):
    refit = environment(services["airflow-worker"])["AWS_ACCESS_KEY_ID"]
    mlflow = environment(services["mlflow"])["AWS_ACCESS_KEY_ID"]
    root = environment(services["minio"])["MINIO_ROOT_USER"]
    assert len({refit, mlflow, root}) == 3


def test_uis_are_published_on_localhost_unless_configured(services):
    published = [str(port) for service in services.values() for port in service.get("ports", [])]
    assert published, "no UI is published"
    assert all(port.startswith("127.0.0.1:") for port in published), published
