"""An embedded Refit home with the tiny demo warehouse and an Airflow home, for the modules that
run the real DAGs with ``airflow dags test``."""

from __future__ import annotations

import pytest

from ml_tasks.core.settings import Settings, ensure_local_folders, load_settings
from ml_tasks.data.demo_warehouse import build_demo_warehouse
from refit_airflow.demo import prepare_airflow
from tests.conftest import TINY_ROWS


def embedded_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Settings:
    """Settings of a fresh home under a temporary folder ``name``: warehouse built, Airflow ready."""
    settings = load_settings({"REFIT_HOME": str(tmp_path_factory.mktemp(name) / "refit")})
    ensure_local_folders(settings)
    build_demo_warehouse(settings.warehouse_url, rows=TINY_ROWS, seed=11)
    prepare_airflow(settings)
    return settings
