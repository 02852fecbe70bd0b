"""Shared fixtures: an isolated REFIT_HOME per test and a small seeded demo warehouse."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ml_tasks.core.settings import REPO_ROOT, Settings, load_settings
from ml_tasks.core.spec import ModelSpec, load_spec

os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
# The Airflow side (refit_airflow) is imported from plugins/, as Airflow's plugin manager does.
if str(REPO_ROOT / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "plugins"))

DEMO_SPEC = REPO_ROOT / "include" / "models" / "credit_default.yaml"
TINY_ROWS = 8_000

# Variables that would point a test at a real deployment instead of its own folder.
_DEPLOYMENT_VARS = ("REFIT_WAREHOUSE_URL", "REFIT_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI", "REFIT_MLFLOW_ARTIFACT_ROOT",
                    "REFIT_S3_ENDPOINT_URL", "REFIT_INCLUDE_DIR")


def isolated_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> Settings:
    for name in _DEPLOYMENT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REFIT_HOME", str(home))
    return load_settings()


@pytest.fixture
def refit_home(tmp_path, monkeypatch) -> Settings:
    """Settings of an empty embedded-mode home in a temporary folder."""
    return isolated_env(monkeypatch, tmp_path / "refit")


@pytest.fixture(scope="session")
def tiny_warehouse_url(tmp_path_factory) -> str:
    """A seeded demo warehouse small enough for unit tests (built once per session)."""
    from ml_tasks.data.demo_warehouse import build_demo_warehouse

    url = f"sqlite:///{tmp_path_factory.mktemp('warehouse') / 'warehouse.db'}"
    build_demo_warehouse(url, rows=TINY_ROWS, seed=11)
    return url


@pytest.fixture(scope="session")
def demo_spec() -> ModelSpec:
    return load_spec(DEMO_SPEC)


POSTGRES_ADMIN_URL = os.environ.get("REFIT_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def postgres_databases(*purposes: str) -> Iterator[dict[str, str]]:
    """One fresh database per purpose on the local server (SQLAlchemy URLs), dropped afterwards.

    The server is part of this project's machines (and CI): when it is unreachable the test
    fails rather than skips, so a missing database never passes silently.
    """
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    suffix = uuid.uuid4().hex[:10]
    names = {purpose: f"refit_test_{purpose}_{suffix}" for purpose in purposes}
    created: list[str] = []
    try:
        try:
            with admin.connect() as conn:
                for name in names.values():
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                    created.append(name)
        except OperationalError as exc:
            pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable (set REFIT_TEST_POSTGRES_ADMIN_URL): {exc}")
        yield {purpose: admin.url.set(database=name).render_as_string(hide_password=False)
               for purpose, name in names.items()}
    finally:
        if created:
            # FORCE: a server killed mid-request may leave a connection the drop would wait on.
            with admin.connect() as conn:
                for name in created:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database on the local server, dropped afterwards."""
    with postgres_databases("db") as urls:
        yield urls["db"]


@pytest.fixture(params=["folder", "s3"])
def any_store(request, tmp_path, monkeypatch):
    """An artifact store on a local folder, then on a real S3 API (moto's server on a free port)."""
    from ml_tasks.io.store import ArtifactStore

    if request.param == "folder":
        yield ArtifactStore(str(tmp_path / "artifacts"))
        return
    import uuid

    import boto3
    from moto.server import ThreadedMotoServer

    # moto accepts any credentials; boto3 only needs some to sign the requests.
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # moto keeps its buckets per process, not per server: a bucket per test keeps tests apart.
        bucket = f"refit-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield ArtifactStore(f"s3://{bucket}/refit", s3_endpoint_url=endpoint)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def windows() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Seeded train, calibration and test rows (X, y, weights) for the calibration tests."""
    from tests.overconfident import make_windows

    return make_windows()


@pytest.fixture(scope="module")
def overconfident(windows):
    """A classifier that ranks right but is three times too sure (see tests/overconfident.py)."""
    from tests.overconfident import OverconfidentModel

    X, y, _ = windows["train"]
    return OverconfidentModel().fit(X, y)
