"""The default-size demo warehouse, generated once for every test module that reads it."""

from __future__ import annotations

import pandas as pd
import pytest

from ml_tasks.data.demo_warehouse import DemoWarehouseSettings, generate_tables
from tests.data.demo_warehouse.frames import joined


@pytest.fixture(scope="package")
def default_size() -> tuple[DemoWarehouseSettings, pd.DataFrame]:
    """The default 60k-application warehouse, generated once in memory."""
    settings = DemoWarehouseSettings()
    return settings, joined(generate_tables(settings), settings.start)
