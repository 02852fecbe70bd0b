"""Warehouses for the stream_query tests: the seeded demo warehouse on SQLite, and a scratch one.

PostgreSQL ones come from ``postgres_url`` (tests/conftest.py): a fresh database per test.
"""

from __future__ import annotations

import pytest

from ml_tasks.data.demo_warehouse import build_demo_warehouse


@pytest.fixture(scope="module")
def sqlite_warehouse(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('engines') / 'warehouse.db'}"
    build_demo_warehouse(url, rows=3000, seed=5)
    return url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'scratch.db'}"

