"""Shared fixtures: an isolated REFIT_HOME per test and a small seeded demo warehouse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ml_tasks.settings import REPO_ROOT, Settings, load_settings
from ml_tasks.spec import ModelSpec, load_spec

os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

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
    from ml_tasks.demo_data import build_demo_warehouse

    url = f"sqlite:///{tmp_path_factory.mktemp('warehouse') / 'warehouse.db'}"
    build_demo_warehouse(url, rows=TINY_ROWS, seed=11)
    return url


@pytest.fixture(scope="session")
def demo_spec() -> ModelSpec:
    return load_spec(DEMO_SPEC)


POSTGRES_ADMIN_URL = os.environ.get("REFIT_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database on the local server, dropped afterwards.

    The server is part of this project's machines (and CI): when it is unreachable the test
    fails rather than skips, so a missing database never passes silently.
    """
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"refit_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable (set REFIT_TEST_POSTGRES_ADMIN_URL): {exc}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
