"""MLflow set-up shared by the stages: tracking URI and one experiment per model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ml_tasks.core.settings import Settings, ensure_local_folders
from ml_tasks.core.spec import ModelSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: What every logged model imports to serve: the pyfunc imports ml_tasks (installed from this
#: repository in the trainer and Airflow images), which imports these.
SERVING_PACKAGES = ("mlflow", "pandas", "numpy", "scikit-learn", "lightgbm", "refit-ml-tasks")
#: Frameworks only some families need; a torch model without torch cannot even be unpickled.
FAMILY_PACKAGES = {"torch_mlp": ("torch",)}


def model_requirements(family: str) -> list[str]:
    """The pip requirements logged with a model of ``family``, pinned to the versions that trained it.

    Pickled estimators are only guaranteed to load under the library version that wrote them, so
    serving installs exactly those. A local version label (``torch 2.13.0+cpu``) is dropped: a
    GPU server installs its own build of the same release.
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
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


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
    experiment_id = experiment_id or use_store(settings).get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
