"""What to generate: :class:`DemoWarehouseSettings`, read from YAML and checked field by field.

A settings file is a flat mapping (``include/demo_warehouse.yaml`` holds the defaults). Every
value is validated when the settings are built, so a bad file fails before any table is
touched, with a message that names the field; a key that is not a setting is an error too, so a
typo such as ``row`` does not silently fall back to a default.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from ml_tasks.core.settings import REPO_ROOT

DEFAULT_SETTINGS_PATH = REPO_ROOT / "include" / "demo_warehouse.yaml"


@dataclass(frozen=True)
class DemoWarehouseSettings:
    """What to generate.

    Parameters
    ----------
    rows : int, default=60_000
        Number of applications (and outcomes). Up to 10 million is supported.
    seed : int, default=42
        Seed for ``numpy.random.default_rng``; equal settings give identical tables.
    start : date, default=2023-01-01
        First moment of the data span (midnight, naive UTC).
    months : int, default=24
        Length of the span in calendar months; ``applied_at`` lies in
        ``[start, start + months)``.
    positive_rate : float, default=0.06
        Expected overall default rate; the realised rate differs only by sampling noise.
    label_delay_days : tuple of (int, int), default=(60, 90)
        ``observed_at - applied_at`` is uniform on this closed interval of days.
    applications_per_customer : float, default=2.5
        Mean number of applications per customer (at least 1).
    chunk_rows : int, default=50_000
        Rows per INSERT batch when writing.

    Raises
    ------
    ValueError
        If a value is out of range; the message names the parameter.
    """

    rows: int = 60_000
    seed: int = 42
    start: date = date(2023, 1, 1)
    months: int = 24
    positive_rate: float = 0.06
    label_delay_days: tuple[int, int] = (60, 90)
    applications_per_customer: float = 2.5
    chunk_rows: int = 50_000

    def __post_init__(self) -> None:
        # In field order, so the first bad field is the one named.
        _require(_is_int(self.rows) and self.rows >= 1, "rows", "an integer >= 1", self.rows)
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _require(_is_date(self.start), "start", "a date (YYYY-MM-DD)", self.start)
        _require(_is_int(self.months) and self.months >= 1, "months", "an integer >= 1", self.months)
        _require(
            _is_real(self.positive_rate) and 0.0 < self.positive_rate < 1.0,
            "positive_rate",
            "a number strictly between 0 and 1",
            self.positive_rate,
        )
        _require(
            _is_delay_range(self.label_delay_days),
            "label_delay_days",
            "a pair of integers [low, high] with 0 <= low <= high",
            self.label_delay_days,
        )
        _require(
            _is_real(self.applications_per_customer) and self.applications_per_customer >= 1.0,
            "applications_per_customer",
            "a number >= 1",
            self.applications_per_customer,
        )
        _require(
            _is_int(self.chunk_rows) and self.chunk_rows >= 1, "chunk_rows", "an integer >= 1", self.chunk_rows
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> DemoWarehouseSettings:
        """Read settings from a flat YAML mapping; missing keys keep their defaults.

        Parameters
        ----------
        path : str or Path
            A file such as ``include/demo_warehouse.yaml``.

        Returns
        -------
        DemoWarehouseSettings

        Raises
        ------
        ValueError
            If the file is not a mapping, has a key that is not a setting (the message names
            it, so a typo such as ``row`` does not silently fall back to a default), or has a
            value out of range.
        """
        path = Path(path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"{path}: expected a mapping of demo warehouse settings, got {type(raw).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in raw if key not in known)
        if unknown:
            raise ValueError(
                f"{path}: unknown demo warehouse setting {', '.join(repr(k) for k in unknown)}; "
                f"expected keys: {', '.join(known)}"
            )
        try:
            return cls(**_coerce_yaml_values(raw))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


def _is_int(value: Any) -> bool:
    # bool is an Integral too, but ``rows: true`` is a mistake, not 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_date(value: Any) -> bool:
    # A datetime is a date too; the span starts at a midnight, so a time of day is refused, not dropped.
    return isinstance(value, date) and not isinstance(value, datetime)


def _is_delay_range(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(_is_int(days) for days in value)
        and 0 <= value[0] <= value[1]
    )


def _require(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise ValueError(f"demo warehouse setting {name!r} must be {expected}, got {got!r}")


def _coerce_yaml_values(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Turn YAML scalars into the dataclass's types (dates may arrive as strings, pairs as lists)."""
    values = dict(raw)
    start = values.get("start")
    if isinstance(start, datetime):
        values["start"] = start.date()
    elif isinstance(start, str):
        try:
            values["start"] = date.fromisoformat(start)
        except ValueError:
            _require(False, "start", "a date (YYYY-MM-DD)", start)
    if isinstance(values.get("label_delay_days"), list):
        values["label_delay_days"] = tuple(values["label_delay_days"])
    return values
