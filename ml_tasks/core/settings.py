"""Where Refit keeps its state, read from the environment with embedded defaults.

Embedded mode (the default) keeps everything under one folder, ``REFIT_HOME`` (``.refit/`` in
the repository root): the SQLite warehouse, Airflow's home, MLflow's SQLite store and artifact
folder, and the artifact store. Deployed mode sets the same variables to real services
(PostgreSQL, S3/MinIO, an MLflow server); the code does not change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The checkout (or installed tree) that holds ``ml_tasks/`` and ``include/``.
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Locations of every store Refit talks to.

    Attributes
    ----------
    home : folder holding all embedded-mode state.
    warehouse_url : SQLAlchemy URL of the source warehouse.
    artifact_root : local folder or ``s3://bucket/prefix`` for snapshots, runs and reports.
    mlflow_tracking_uri : MLflow tracking/registry URI.
    mlflow_artifact_root : where new MLflow experiments keep artifacts (None: server default).
    s3_endpoint_url : S3 API endpoint (MinIO, moto); None for AWS.
    include_dir : folder with model specs, SQL and report templates.
    lock_url : SQLAlchemy URL of a PostgreSQL database whose advisory locks serialise the
        registry writers of a model across hosts (``REFIT_LOCK_URL``); None: a file lock under
        ``home``, which serialises the processes of one host.
    lock_timeout_s : how long a registry writer waits for another one (``REFIT_LOCK_TIMEOUT_S``).
    trainer_slots : trainer tasks that run at once (``REFIT_TRAINER_SLOTS``: the Airflow pool or
        worker slots they share); None: this machine's CPU count. Sizes backtest tasks.
    task_start_s : seconds a mapped trainer task costs before its work starts: queueing, the task
        process, the trainer's imports (``REFIT_TASK_START_S``; the default is what
        ``bench/bench_dag.py`` measured on 2 cores). Sizes backtest tasks.
    """

    home: Path
    warehouse_url: str
    artifact_root: str
    mlflow_tracking_uri: str
    mlflow_artifact_root: str | None
    s3_endpoint_url: str | None
    include_dir: Path
    lock_url: str | None = None
    lock_timeout_s: float = 600.0
    trainer_slots: int | None = None
    task_start_s: float = 3.0

    @property
    def models_dir(self) -> Path:
        return self.include_dir / "models"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default ``os.environ``), filling embedded defaults."""
    env = os.environ if env is None else env
    home = Path(env.get("REFIT_HOME") or REPO_ROOT / ".refit").resolve()
    tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    # A local MLflow store gets a local artifact folder; a server decides its own.
    default_mlflow_artifacts = (home / "mlflow" / "artifacts").as_uri() if tracking.startswith("sqlite") else None
    return Settings(
        home=home,
        warehouse_url=env.get("REFIT_WAREHOUSE_URL") or f"sqlite:///{home / 'warehouse.db'}",
        artifact_root=env.get("REFIT_ARTIFACT_ROOT") or str(home / "artifacts"),
        mlflow_tracking_uri=tracking,
        mlflow_artifact_root=env.get("REFIT_MLFLOW_ARTIFACT_ROOT") or default_mlflow_artifacts,
        s3_endpoint_url=env.get("REFIT_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") or None,
        include_dir=Path(env.get("REFIT_INCLUDE_DIR") or REPO_ROOT / "include").resolve(),
        lock_url=env.get("REFIT_LOCK_URL") or None,
        lock_timeout_s=_seconds(env, "REFIT_LOCK_TIMEOUT_S", 600.0),
        trainer_slots=_count(env, "REFIT_TRAINER_SLOTS"),
        task_start_s=_seconds(env, "REFIT_TASK_START_S", 3.0),
    )


def _count(env: Mapping[str, str], name: str) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}={raw!r}: expected a whole number >= 1")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise ValueError(f"{name}={raw!r}: expected a number of seconds >= 0")
    return value


# Airflow connection URIs name the database type; SQLAlchemy also wants the driver we ship.
_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}


def sqlalchemy_url(uri: str) -> str:
    """A SQLAlchemy URL for a connection URI (``postgres://…`` → ``postgresql+psycopg://…``)."""
    scheme, sep, rest = uri.partition("://")
    return f"{_DRIVERS.get(scheme, scheme)}{sep}{rest}"


def ensure_local_folders(settings: Settings) -> None:
    """Create the embedded-mode folders that SQLite and local stores need to exist."""
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if settings.warehouse_url.startswith("sqlite:///"):
        Path(settings.warehouse_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def code_version() -> str:
    """The code that made a model: ``REFIT_CODE_VERSION`` (set by image builds), else the git
    commit of this checkout (``+dirty`` with local changes), else the installed package version."""
    import subprocess

    if os.environ.get("REFIT_CODE_VERSION"):
        return os.environ["REFIT_CODE_VERSION"]
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("refit-ml-tasks")
        except PackageNotFoundError:
            return "unknown"
