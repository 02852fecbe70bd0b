"""MLflow set-up shared by the stages: tracking URI and one experiment per model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ml_tasks.core.settings import Settings, ensure_local_folders
from ml_tasks.core.spec import ModelSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: What every logged model imports to serve (ml_tasks/registry/model_code.py and the shipped
#: ml_tasks/models/served.py): packages on PyPI only, never Refit itself.
SERVING_PACKAGES = ("mlflow", "pandas", "numpy")
#: What only some families need: trees predict with LightGBM's own library; the network is
#: served from its weights with numpy, so torch is not needed to serve it.
FAMILY_PACKAGES = {"lightgbm": ("lightgbm",)}


def model_requirements(family: str) -> list[str]:
    """The pip requirements logged with a model of ``family``, pinned to the versions that trained it.

    A LightGBM model file and MLflow's model format are read best by the versions that wrote them,
    so serving installs exactly those. A local version label (``2.13.0+cpu``) is dropped: PyPI
    has no such build.
    """
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for package in (*SERVING_PACKAGES, *FAMILY_PACKAGES.get(family, ())):
        try:
            pinned.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pinned.append(package)
    return pinned


def experiment_name(spec: ModelSpec) -> str:
    return f"refit-{spec.name}"


def setup_experiment(settings: Settings, spec: ModelSpec) -> str:
    """Point mlflow at the configured store and return the model's experiment id."""
    import mlflow

    use_store(settings)
    name = experiment_name(spec)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = f"{settings.mlflow_artifact_root}/{name}" if settings.mlflow_artifact_root else None
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags={"refit.model": spec.name})
    except Exception:
        # Another task created it between our look-up and create (parallel mapped tasks).
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def use_store(settings: Settings) -> MlflowClient:
    """Make the configured store this process's MLflow store, and return a client of it.

    The name says the side effect: every stage of a process uses one store (its settings'), so
    pointing MLflow's default at it each time is idempotent, and it is what ``mlflow.*`` calls
    made afterwards (logging, loading, registering) reach. The registry resolves a model
    version's source (``models:/m-…``) through MLflow's *default* client, not this one: without
    the default pointing at the same store, registering from a fresh process
    (``python -m ml_tasks promote``) looks for the logged model in ``./mlruns``.
    """
    import mlflow
    from mlflow import MlflowClient

    ensure_local_folders(settings)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    with _creating_local_store(settings):
        return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


#: Local stores this process has seen created (or found), so later calls skip the file lock.
_CREATED_STORES: set[str] = set()


@contextmanager
def _creating_local_store(settings: Settings) -> Iterator[None]:
    """Around the first client of an embedded (SQLite) store in this process: one creator at a time.

    MLflow creates and migrates a SQLite store's tables when a client first opens it; several
    processes doing that at once (parallel train tasks on a fresh home) fail with "duplicate
    column name" or "table latest_metrics already exists". A server creates its own tables.
    """
    uri = settings.mlflow_tracking_uri
    if not uri.startswith("sqlite:///") or uri in _CREATED_STORES:
        yield
        return
    from ml_tasks.registry.lock import file_lock

    database = Path(uri.removeprefix("sqlite:///"))
    with file_lock(database.with_name(f"{database.name}.create.lock"), f"MLflow store {database}",
                   settings.lock_timeout_s):
        yield
    _CREATED_STORES.add(uri)


def mlflow_ui_url(settings: Settings, run_id: str, env: Mapping[str, str] | None = None,
                  experiment_id: str | None = None) -> str | None:
    """The MLflow UI page of ``run_id``: ``REFIT_MLFLOW_UI_URL`` (what browsers reach, which can
    differ from the address tasks use), else an http(s) tracking server; None for a local store.

    Pass the run's ``experiment_id`` when it is known (gate results record it); only results
    written before it was recorded cost a look-up."""
    import os

    variables = os.environ if env is None else env
    base = variables.get("REFIT_MLFLOW_UI_URL") or (
        settings.mlflow_tracking_uri if settings.mlflow_tracking_uri.startswith(("http://", "https://")) else None)
    if base is None:
        return None
    from urllib.parse import urlsplit, urlunsplit

    experiment_id = experiment_id or use_store(settings).get_run(run_id).info.experiment_id
    # The address goes into pages and links: a login in the tracking URI must not (browsers ask).
    parts = urlsplit(base)
    base = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class TrackingUnavailable(RuntimeError):  # noqa: N818 (reads as what happened, like TimeoutError)
    """The MLflow tracking store does not answer; the message names the setting."""


#: How long the plan stage waits for MLflow before it gives up: a few seconds, not the minutes
#: of MLflow's own retries (7 retries with backoff: about 250 s).
CHECK_TIMEOUT_S = 10


def check_reachable(settings: Settings, timeout_s: int = CHECK_TIMEOUT_S) -> None:
    """Fail fast, before any data is read, when the configured MLflow store does not answer."""
    import os

    from ml_tasks.core.redact import redact, redact_url

    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)})
    try:
        use_store(settings).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingUnavailable(
            f"MLflow at {redact_url(settings.mlflow_tracking_uri)} (MLFLOW_TRACKING_URI) did not answer within "
            f"{timeout_s} s: {redact(str(exc)).splitlines()[0][:300]}. Nothing was read or trained; run again "
            "when it answers") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
