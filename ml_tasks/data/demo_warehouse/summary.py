"""What a write produced: :class:`WarehouseSummary`, computed from the generated frames."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import make_url


@dataclass(frozen=True)
class WarehouseSummary:
    """What :func:`~ml_tasks.data.demo_warehouse.load.write_warehouse` wrote.

    Attributes
    ----------
    url : str
        The warehouse URL with any password masked as ``***``.
    customers, applications, outcomes : int
        Row counts of the three tables.
    positive_rate : float
        Realised share of ``defaulted == 1`` among all outcomes.
    first_applied_at, last_applied_at : datetime
        Earliest and latest ``applied_at`` (naive UTC).
    """

    url: str
    customers: int
    applications: int
    outcomes: int
    positive_rate: float
    first_applied_at: datetime
    last_applied_at: datetime


def summarise(url: str, frames: dict[str, pd.DataFrame]) -> WarehouseSummary:
    """The summary of ``frames`` written to ``url``; the password never reaches a log."""
    applied = frames["applications"]["applied_at"]
    return WarehouseSummary(
        url=make_url(url).render_as_string(hide_password=True),
        customers=len(frames["customers"]),
        applications=len(frames["applications"]),
        outcomes=len(frames["outcomes"]),
        positive_rate=float(frames["outcomes"]["defaulted"].mean()),
        first_applied_at=applied.min().to_pydatetime(),
        last_applied_at=applied.max().to_pydatetime(),
    )
