"""The data span as a time axis: integer seconds since ``settings.start``.

Generation works in whole seconds since the start of the span, so every draw is a plain
``int64`` array and every datetime written is a whole second. Months are counted from 1:
month 1 starts at ``settings.start``, month ``k`` starts ``k - 1`` calendar months later, so
month boundaries follow the calendar (28 to 31 days), not a fixed length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_tasks.data.demo_warehouse.settings import DemoWarehouseSettings

SECONDS_PER_DAY = 86_400
SECONDS_PER_YEAR = 365.25 * SECONDS_PER_DAY
#: An average month, for spreads and growth rates; month boundaries come from the calendar.
SECONDS_PER_MONTH = SECONDS_PER_YEAR / 12


@dataclass(frozen=True)
class Clock:
    """The data span as integer seconds since ``start``, with calendar-month boundaries."""

    start: np.datetime64
    span_s: int
    month_starts_s: np.ndarray  # month k (1-based) starts at month_starts_s[k - 1]

    @classmethod
    def from_settings(cls, settings: DemoWarehouseSettings) -> Clock:
        origin = pd.Timestamp(settings.start)
        bounds = [origin + pd.DateOffset(months=k) for k in range(settings.months + 1)]
        bounds_s = np.array([int((b - origin).total_seconds()) for b in bounds], dtype=np.int64)
        return cls(start=np.datetime64(settings.start, "s"), span_s=int(bounds_s[-1]), month_starts_s=bounds_s[:-1])

    def to_datetime(self, t_s: np.ndarray) -> np.ndarray:
        """Seconds since ``start`` as ``datetime64[s]``."""
        return self.start + t_s.astype("timedelta64[s]")
