"""The trainer task: runs ``python -m ml_tasks train`` for one candidate, locally or in a container.

Two modes, chosen by ``REFIT_TRAINER_MODE`` when the DAG is parsed, same command line:

``local`` (default, embedded mode)
    :class:`TrainerOperator` runs the command as a subprocess of the worker, with the worker's
    environment (REFIT_HOME, MLflow URI) and interpreter.
``docker`` (deployed mode)
    :class:`DockerTrainerOperator` runs it in the trainer image (``docker/trainer/Dockerfile``)
    named by the spec's ``trainer.image``, with ``trainer.gpus`` GPUs, through the Docker API
    at ``REFIT_DOCKER_URL``. The container reaches the MLflow server and S3 through the
    variables listed in :data:`PUBLIC_SETTINGS` and :data:`SECRET_SETTINGS`.

Either way the command writes its result manifest to the artifact store and prints it as its
last line, which the operator parses into the task's XCom (a dict).

The DAG calls :func:`trainer_task`, which returns an operator *partial* to map over candidates:

>>> trainer_task(spec, task_id="train", plan=run_plan, split=splits).expand(  # doctest: +SKIP
...     candidate=candidates(run_plan))
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator, fetch_logs
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from docker.errors import APIError
from docker.types import DeviceRequest

from ml_tasks.core.artifacts import RunArtifacts
from ml_tasks.core.private_env import ACCEPTED as PRIVATE_ENV_ACCEPTED
from ml_tasks.core.private_env import FLAG as PRIVATE_ENV_FLAG
from ml_tasks.core.private_env import encode as encode_private_environment
from ml_tasks.core.resources import thread_environment
from refit_airflow.scheduling import trainer_placement

if TYPE_CHECKING:
    from ml_tasks.core.spec import ModelSpec

TRAINER_MODES = ("local", "docker")
#: The Docker API the deployed worker talks to: a socket proxy, so workers never mount the socket.
DEFAULT_DOCKER_URL = "tcp://docker-socket-proxy:2375"
#: Settings the container needs and that may be shown in the UI's rendered-template view.
PUBLIC_SETTINGS = ("MLFLOW_TRACKING_URI", "REFIT_ARTIFACT_ROOT", "REFIT_MLFLOW_ARTIFACT_ROOT",
                   "REFIT_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION")
#: Credentials: read on the worker when the task runs, so they are neither stored with the
#: serialized DAG nor rendered in the UI, and written to the container's stdin, so they are not
#: in its inspectable configuration either (:class:`DockerTrainerOperator`).
SECRET_SETTINGS = PRIVATE_ENV_ACCEPTED
#: Without these a container would write its model and manifest into its own, discarded, disk.
REQUIRED_SETTINGS = ("MLFLOW_TRACKING_URI", "REFIT_ARTIFACT_ROOT")


class TrainerError(RuntimeError):
    """The trainer command failed; the message carries its exit code and last output lines."""


def trainer_command(plan: dict, split_uri: str | None, candidate: str, python: str = sys.executable,
                    folds: list[int] | None = None) -> list[str]:
    """The command line of the trainer for one candidate (the same inside a container); with
    ``folds`` it trains the candidate's recipe on those backtest folds instead, in one process."""
    command = [python, "-m", "ml_tasks", "train", "--plan", RunArtifacts(plan["run_prefix"]).plan, "--candidate",
               candidate]
    if split_uri:
        command += ["--split", split_uri]
    if folds:
        command += ["--folds", *(str(int(fold)) for fold in folds)]
    return command


def parse_manifest(last_line: str | None, candidate: str) -> dict:
    """The trainer's result manifest from its last output line, or a :class:`TrainerError` saying so."""
    try:
        manifest = json.loads(last_line or "")
    except json.JSONDecodeError:
        manifest = None
    if not isinstance(manifest, dict):
        raise TrainerError(f"trainer for candidate {candidate!r} did not end with its result manifest "
                           f"(a JSON object); last line: {last_line!r}")
    return manifest


class TrainerOperator(BaseOperator):
    """Train one candidate of a planned run in a local process (embedded mode).

    Parameters
    ----------
    plan : the run plan manifest (usually the plan task's XCom).
    split : the split manifest (its ``uri`` is handed to the trainer).
    candidate : candidate name from the spec; mapped over with ``.expand(candidate=...)``.
    threads : the trainer's CPU thread budget (the spec's ``trainer.cpus``; None: every CPU the
        worker lets it use), handed over as ``REFIT_TRAINER_THREADS``.
    """

    template_fields: Sequence[str] = ("plan", "split", "candidate", "folds")
    ui_color = "#f3e5f5"

    def __init__(self, *, plan, candidate, split=None, folds=None, threads: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.split = split
        self.candidate = candidate
        self.folds = folds
        self.threads = threads

    def execute(self, context) -> dict:
        command = trainer_command(self.plan, (self.split or {}).get("uri"), self.candidate, folds=self.folds)
        self.log.info("Running trainer: %s", " ".join(command))
        env = {**os.environ, "MLFLOW_CONFIGURE_LOGGING": "false", **thread_environment(self.threads)}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            self.log.info("trainer: %s", line)
        code = process.wait()
        if code != 0:
            tail = "\n".join(lines[-15:])
            raise TrainerError(f"trainer for candidate {self.candidate!r} exited with code {code}:\n{tail}")
        return parse_manifest(lines[-1] if lines else None, self.candidate)


class DockerTrainerOperator(DockerOperator):
    """Train one candidate in the trainer image (deployed mode).

    Takes the same ``plan``, ``split`` and ``candidate`` as :class:`TrainerOperator`; they are
    XComs, so the container's command is built in :meth:`execute`, after rendering. Every other
    argument goes to :class:`DockerOperator` (image, device_requests, environment, …); build them
    from a spec with :func:`docker_trainer_kwargs`.

    The container's stdout ends with the result manifest, which becomes the XCom as a dict.

    Credentials (:data:`SECRET_SETTINGS`, read from the worker's environment when the task runs)
    never enter the container's configuration, where ``docker inspect`` would show them: the
    operator writes them to the container's stdin, once, right after it starts
    (:mod:`ml_tasks.core.private_env`). That is why this class runs the container itself
    (:meth:`_run_image_with_mounts`) rather than through DockerOperator's, which puts its
    ``private_environment`` into the container's environment.
    """

    template_fields: Sequence[str] = (*DockerOperator.template_fields, "plan", "split", "candidate", "folds")
    ui_color = "#e1bee7"

    def __init__(self, *, plan, candidate, split=None, folds=None, **kwargs) -> None:
        # A container that succeeded is removed; one that failed too (DockerOperator's rule for
        # "success"): its output is already in the task log, streamed as it ran.
        kwargs.setdefault("auto_remove", "success")
        # The trainer reads and writes the artifact store, never a folder of the Docker host.
        kwargs.setdefault("mount_tmp_dir", False)
        super().__init__(retrieve_output=False, xcom_all=False, **kwargs)
        self.plan = plan
        self.split = split
        self.candidate = candidate
        self.folds = folds

    def trainer_command(self) -> list[str]:
        """The container's command: the local command line with the image's ``python``."""
        return trainer_command(self.plan, (self.split or {}).get("uri"), self.candidate, python="python",
                               folds=self.folds)

    def execute(self, context) -> dict:  # type: ignore[override]  # the trainer's manifest, not its log lines
        self.command = self.trainer_command()
        self.log.info("Running trainer in %s: %s", self.image, " ".join(self.command))
        # xcom_all=False: the container's last output line (or None), never the list of all.
        return parse_manifest(super().execute(context), self.candidate)  # type: ignore[arg-type]

    def _run_image_with_mounts(self, target_mounts, add_tmp_variable: bool) -> str | None:
        secrets = {**secret_environment(os.environ), **self._private_environment}
        self.container = self.cli.create_container(
            command=self.format_command(self.command),
            name=self.container_name,
            environment={**self.environment, PRIVATE_ENV_FLAG: "1"},
            host_config=self.cli.create_host_config(
                auto_remove=False, mounts=target_mounts, network_mode=self.network_mode, shm_size=self.shm_size,
                mem_limit=self.mem_limit, device_requests=self.device_requests, privileged=self.privileged,
                cpu_shares=round(self.cpus * 1024)),
            image=self.image, user=self.user, working_dir=self.working_dir, hostname=self.hostname,
            labels=self.container_labels(),
            # Open for one writer, closed after it: the credentials line, then end of input.
            stdin_open=True,
        )
        container_id = self.container["Id"]
        try:
            log_stream = self.cli.attach(container=container_id, stdout=True, stderr=True, stream=True)
            stdin = self.cli.attach_socket(container_id, params={"stdin": 1, "stream": 1})
            self._start(container_id)
            _write_and_close(stdin, encode_private_environment(secrets))
            log_lines = fetch_logs(log_stream, self.log)
            status = self.cli.wait(container_id)["StatusCode"]
            if status != 0:
                tail = "\n".join(log_lines[-15:])
                raise DockerContainerFailedException(
                    f"trainer container for candidate {self.candidate!r} exited with code {status}:\n{tail}",
                    logs=log_lines)
            return log_lines[-1] if log_lines else None
        finally:
            if self.auto_remove in ("success", "force"):
                self.cli.remove_container(container_id, force=self.auto_remove == "force")

    def container_labels(self) -> dict[str, str]:
        """The spec's labels plus what this container trains: ``docker ps --filter
        label=refit.candidate=network`` finds it on the host."""
        # The operator also takes labels as a list of names (Docker's label without a value).
        given = self.labels if isinstance(self.labels, dict) else dict.fromkeys(self.labels or [], "")
        labels = {**given, "refit.candidate": str(self.candidate), "refit.task": self.task_id,
                  "refit.run_key": str((self.plan or {}).get("run_key", ""))}
        if self.folds:
            labels["refit.folds"] = ",".join(str(fold) for fold in self.folds)
        return labels

    def _start(self, container_id: str) -> None:
        """Start the container; a GPU request the engine cannot serve fails the task for good,
        named, instead of as a raw API error retried to no avail."""
        try:
            self.cli.start(container_id)
        except APIError as exc:
            if "could not select device driver" not in str(exc):
                raise
            requested = "; ".join(f"{r.get('Count')} GPU(s) with capabilities {r.get('Capabilities')}"
                                  for r in self.device_requests or [])
            raise AirflowFailException(
                f"trainer container for candidate {self.candidate!r} requested {requested} (the spec's "
                f"trainer.gpus), but the Docker engine at {self.docker_url} has no GPU runtime (NVIDIA "
                f"Container Toolkit) to serve it: {exc.explanation or exc}. Run the workers on a GPU host, "
                "or set trainer.gpus: 0 in the spec to train on CPUs.") from None


def _write_and_close(stdin_socket, payload: bytes) -> None:
    """Send ``payload`` down an attached stdin and close it, so the process reads end of input."""
    raw = getattr(stdin_socket, "_sock", stdin_socket)
    try:
        raw.sendall(payload)
    finally:
        raw.close()


def trainer_mode(env: Mapping[str, str] | None = None) -> str:
    """``REFIT_TRAINER_MODE``: ``local`` (default) or ``docker``; anything else is an error naming it."""
    env = os.environ if env is None else env
    mode = (env.get("REFIT_TRAINER_MODE") or "local").strip().lower()
    if mode not in TRAINER_MODES:
        raise ValueError(f"REFIT_TRAINER_MODE={mode!r}: expected one of {', '.join(TRAINER_MODES)}")
    return mode


def secret_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The credentials among :data:`SECRET_SETTINGS` that are set in ``env``."""
    return {name: env[name] for name in SECRET_SETTINGS if env.get(name)}


def docker_trainer_kwargs(spec: ModelSpec, env: Mapping[str, str] | None = None) -> dict:
    """DockerOperator arguments for a spec's trainer, from the spec and the deployment's variables.

    ``device_requests`` and ``docker_url`` are not template fields, so they are fixed here, when
    the DAG is parsed. Credentials are left out: the operator reads them when it runs.
    """
    env = os.environ if env is None else env
    missing = [name for name in REQUIRED_SETTINGS if not env.get(name)]
    if missing:
        raise ValueError(f"REFIT_TRAINER_MODE=docker needs {', '.join(missing)} set to the deployment's "
                         "MLflow server and S3 artifact root: a container cannot use the worker's local stores")
    kwargs: dict = {
        "image": spec.trainer.image,
        "docker_url": env.get("REFIT_DOCKER_URL") or DEFAULT_DOCKER_URL,
        "network_mode": env.get("REFIT_DOCKER_NETWORK") or None,
        # Who a container on the host belongs to, for `docker ps --filter label=refit.model=…`.
        "labels": {"refit.role": "trainer", "refit.model": spec.name},
        "environment": {**{name: env[name] for name in PUBLIC_SETTINGS if env.get(name)},
                        # mlflow's logging set-up would otherwise reformat the lines the task log shows.
                        "MLFLOW_CONFIGURE_LOGGING": "false", **thread_environment(spec.trainer.cpus)},
    }
    if spec.trainer.gpus:
        kwargs["device_requests"] = [DeviceRequest(count=spec.trainer.gpus, capabilities=[["gpu"]])]
    return kwargs


def trainer_task(spec: ModelSpec, mode: str | None = None, env: Mapping[str, str] | None = None, **partial_kwargs):
    """The train task's operator partial for ``spec``; call ``.expand(candidate=...)`` on it.

    ``mode`` defaults to :func:`trainer_mode` of ``env`` (default ``os.environ``); ``partial_kwargs``
    (task_id, plan, split, …) are the same for both operators, and so are the pool (``refit_gpu``,
    ``trainer.gpus`` slots) and queue (``trainer.queue`` or ``REFIT_TRAINER_QUEUE``) they run in.
    """
    mode = trainer_mode({"REFIT_TRAINER_MODE": mode}) if mode else trainer_mode(env)
    # The refit_gpu pool's slots for a GPU trainer, and its queue (refit_airflow.scheduling).
    partial_kwargs = {**trainer_placement(spec, env), **partial_kwargs}
    if mode == "docker":
        return DockerTrainerOperator.partial(**docker_trainer_kwargs(spec, env), **partial_kwargs)
    return TrainerOperator.partial(threads=spec.trainer.cpus, **partial_kwargs)
