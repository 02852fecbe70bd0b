"""The assembled tables (``ml_tasks.data.demo_warehouse.generate``): one outcome per application,
observed after the configured delay, and whole-second datetimes inside the span."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from ml_tasks.data.demo_warehouse import DemoWarehouseSettings


def test_every_application_has_one_outcome_observed_60_to_90_days_later(
    default_size: tuple[DemoWarehouseSettings, pd.DataFrame],
) -> None:
    _, frame = default_size
    delay = frame["observed_at"] - frame["applied_at"]

    assert frame["application_id"].is_unique
    assert delay.min() >= timedelta(days=60)
    assert delay.max() <= timedelta(days=90)
    # Uniform, not a constant: the delays fill the whole window.
    assert delay.quantile(0.05) < timedelta(days=63) and delay.quantile(0.95) > timedelta(days=87)


def test_datetimes_are_whole_seconds_within_the_span(default_size: tuple[DemoWarehouseSettings, pd.DataFrame]) -> None:
    settings, frame = default_size
    for column in ("applied_at", "observed_at", "signup_date"):
        assert (frame[column].dt.microsecond == 0).all(), column
    assert frame["applied_at"].min() >= pd.Timestamp(settings.start)
    assert frame["applied_at"].max() < pd.Timestamp(settings.start) + pd.DateOffset(months=settings.months)
    assert set(frame["month"]) == set(range(1, settings.months + 1))
