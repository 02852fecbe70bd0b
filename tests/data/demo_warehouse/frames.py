"""The generated tables as a model would see them: one row per application, with its month."""

from __future__ import annotations

from datetime import date

import pandas as pd


def month_number(stamps: pd.Series, start: date) -> pd.Series:
    """1-based calendar month of each timestamp within the span that begins at ``start``."""
    return (stamps.dt.year - start.year) * 12 + (stamps.dt.month - start.month) + 1


def joined(tables: dict[str, pd.DataFrame], start: date) -> pd.DataFrame:
    """One row per application with its customer and outcome, as a model would see it."""
    frame = (
        tables["applications"]
        .merge(tables["customers"], on="customer_id", validate="many_to_one")
        .merge(tables["outcomes"], on="application_id", validate="one_to_one")
    )
    frame["month"] = month_number(frame["applied_at"], start)
    return frame
