"""Settings of the demo warehouse (``ml_tasks.data.demo_warehouse.settings``): every bad value or
key is refused by name."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.data.demo_warehouse import DEFAULT_SETTINGS_PATH, DemoWarehouseSettings


def test_default_yaml_holds_the_documented_defaults() -> None:
    assert DemoWarehouseSettings.from_yaml(DEFAULT_SETTINGS_PATH) == DemoWarehouseSettings()


def test_from_yaml_rejects_an_unknown_key_by_name(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("rows: 1000\nrow_count: 5\n")

    with pytest.raises(ValueError, match="row_count"):
        DemoWarehouseSettings.from_yaml(path)


def test_from_yaml_reads_values_and_keeps_defaults_for_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("rows: 1234\nstart: 2022-07-01\nlabel_delay_days: [30, 45]\n")

    settings = DemoWarehouseSettings.from_yaml(path)

    assert settings == replace(
        DemoWarehouseSettings(), rows=1_234, start=date(2022, 7, 1), label_delay_days=(30, 45)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("rows", 0), ("positive_rate", 1.5), ("label_delay_days", (90, 60)), ("applications_per_customer", 0.5)],
)
def test_out_of_range_setting_is_rejected_by_name(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        DemoWarehouseSettings(**{field: value})
