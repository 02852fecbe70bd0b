"""Seeded demo credit-default warehouse.

Refit needs a warehouse to retrain against before anyone connects a real one. This module
writes three tables that look and behave like a small consumer-lending book:

``customers``
    One row per customer: ``customer_id``, ``signup_date``, ``region``, ``age`` (at signup),
    ``income`` (annual, declared at signup) and ``employment_years``.
``applications``
    One row per loan application: ``application_id``, ``customer_id``, ``applied_at``,
    ``amount``, ``term_months``, ``purpose``, ``channel``, ``credit_score`` (at application
    time) and ``existing_debt``.
``outcomes``
    Exactly one row per application: ``application_id``, ``defaulted`` (0/1) and
    ``observed_at``, the moment the label became known. Labels arrive a uniform
    ``label_delay_days`` after the application, so the newest applications have outcome rows
    whose ``observed_at`` lies in the future of the data span; the pipeline, not this module,
    decides which labels are mature.

The data is built to exercise what the pipeline is for:

* **Signal, not a giveaway.** Default depends on credit score, debt-to-income
  ``(existing_debt + amount) / income``, term, purpose, channel, age, employment and a latent
  per-customer risk. A logistic regression on the raw columns reaches a ROC AUC of about
  0.80 (0.77-0.85 depending on the period), far from 0.99.
* **Repeat customers.** Customers apply about ``applications_per_customer`` times, in bursts
  around a customer-specific moment, always after they signed up. Their latent risk is shared
  by all their applications, so earlier defaults predict later ones.
* **Drift.** Nominal incomes grow about 8 % a year; the ``mobile`` channel opens in month
  :data:`MOBILE_LAUNCH_MONTH` and is riskier than the others; debt-to-income, irrelevant at
  the start, becomes the strongest driver of default by the end, while the credit score
  loses some of its bite and partner-sourced loans turn from safe to risky. A model trained
  on months 1-10 scores about 0.03-0.04 ROC AUC lower on months 21-24 than one trained on
  months 11-20.

Months are counted from 1: month 1 starts at ``settings.start``, month ``k`` starts
``k - 1`` calendar months later. Datetimes are naive (UTC implied) and whole seconds.

Everything is drawn with one ``numpy.random.default_rng(seed)`` in a fixed order and fully
vectorised, so the same settings always give byte-identical tables and 10 million applications
fit in memory and generate in seconds.

Examples
--------
>>> from ml_tasks.data.demo_warehouse import DemoWarehouseSettings, generate_tables
>>> tables = generate_tables(DemoWarehouseSettings(rows=1_000, seed=7))
>>> sorted(tables)
['applications', 'customers', 'outcomes']
>>> len(tables["applications"]) == len(tables["outcomes"]) == 1_000
True
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.schema import CreateTable

from ml_tasks.core.settings import REPO_ROOT

__all__ = [
    "APPLICATIONS",
    "CUSTOMERS",
    "DEFAULT_SETTINGS_PATH",
    "MOBILE_LAUNCH_MONTH",
    "OUTCOMES",
    "DemoWarehouseSettings",
    "WarehouseSummary",
    "build_demo_warehouse",
    "generate_tables",
    "write_warehouse",
]

DEFAULT_SETTINGS_PATH = REPO_ROOT / "include" / "demo_warehouse.yaml"

#: First month (1-based) in which the ``mobile`` channel takes applications.
MOBILE_LAUNCH_MONTH = 12

_SECONDS_PER_DAY = 86_400
_SECONDS_PER_YEAR = 365.25 * _SECONDS_PER_DAY
_SECONDS_PER_MONTH = _SECONDS_PER_YEAR / 12

# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------

METADATA = MetaData()

CUSTOMERS = Table(
    "customers",
    METADATA,
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("signup_date", DateTime(timezone=False), nullable=False),
    Column("region", String(16), nullable=False),
    Column("age", Integer, nullable=False),
    Column("income", Float, nullable=False),
    Column("employment_years", Float, nullable=False),
)

APPLICATIONS = Table(
    "applications",
    METADATA,
    Column("application_id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, nullable=False),
    Column("applied_at", DateTime(timezone=False), nullable=False),
    Column("amount", Float, nullable=False),
    Column("term_months", Integer, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("credit_score", Integer, nullable=False),
    Column("existing_debt", Float, nullable=False),
)

OUTCOMES = Table(
    "outcomes",
    METADATA,
    Column("application_id", Integer, primary_key=True, autoincrement=False),
    Column("defaulted", Integer, nullable=False),
    Column("observed_at", DateTime(timezone=False), nullable=False),
)

# Built after the rows are in: one sort per index instead of a B-tree update per row.
_INDEXES = (
    Index("ix_applications_customer_id_applied_at", APPLICATIONS.c.customer_id, APPLICATIONS.c.applied_at),
    Index("ix_applications_applied_at", APPLICATIONS.c.applied_at),
    Index("ix_outcomes_application_id", OUTCOMES.c.application_id),
    Index("ix_outcomes_observed_at", OUTCOMES.c.observed_at),
)

_TABLES: dict[str, Table] = {t.name: t for t in (CUSTOMERS, APPLICATIONS, OUTCOMES)}

# ---------------------------------------------------------------------------------------------
# Vocabularies and effect sizes. Logit effects are on the log-odds scale; the intercept is
# solved for afterwards, so only differences between levels matter.
# ---------------------------------------------------------------------------------------------

_REGIONS = np.array(["north", "south", "east", "west", "central"], dtype=object)
_REGION_P = np.array([0.22, 0.21, 0.19, 0.18, 0.20])
_REGION_LOG_INCOME = np.array([0.04, -0.10, 0.00, 0.12, -0.03])

_PURPOSES = np.array(["car", "home", "education", "debt_consolidation", "other"], dtype=object)
_PURPOSE_P = np.array([0.26, 0.14, 0.10, 0.30, 0.20])
_PURPOSE_MEDIAN_AMOUNT = np.array([18_000.0, 45_000.0, 14_000.0, 12_000.0, 5_000.0])
_PURPOSE_LOGIT = np.array([-0.10, -0.30, 0.15, 0.30, 0.10])

_TERMS = np.array([12, 24, 36, 60])
# Rows follow _PURPOSES: big tickets are financed over longer terms.
_TERM_P_BY_PURPOSE = np.array(
    [
        [0.05, 0.20, 0.45, 0.30],
        [0.02, 0.08, 0.30, 0.60],
        [0.10, 0.30, 0.40, 0.20],
        [0.10, 0.35, 0.40, 0.15],
        [0.45, 0.35, 0.15, 0.05],
    ]
)
_TERM_LOGIT = np.array([-0.30, -0.10, 0.05, 0.30])

_CHANNELS = np.array(["branch", "web", "partner", "mobile"], dtype=object)
_PARTNER = 2  # index of "partner" in _CHANNELS
_CHANNEL_P_BEFORE_MOBILE = np.array([0.35, 0.45, 0.20])
_CHANNEL_LOGIT = np.array([-0.20, 0.00, 0.00, 0.65])  # partner's effect drifts, see below
# Mobile's share of applications ramps linearly from launch to the end of the span.
_MOBILE_SHARE = (0.10, 0.35)

# Drift. Each pair is (value at the start, value at the end of the span), interpolated
# linearly in time. Together they cost a model trained on the first ten months about 0.03-0.04
# ROC AUC on the last four months, against one trained on months 11-20.
#
# Debt-to-income (log-odds per unit of centred log DTI): irrelevant at first, the strongest
# single driver by the end.
_DTI_SLOPE = (0.0, 1.8)
# Log-odds per credit-score point: scores inflate and lose some of their bite.
_SCORE_SLOPE = (-0.011, -0.005)
# Partner-sourced loans start as the safest and end nearly as risky as mobile: the partner
# network grew and its vetting loosened.
_PARTNER_LOGIT = (-0.35, 0.55)
# Offsets part of the risk that mobile and debt add over time, so the monthly default rate
# rises gently (about 5 % to 7 % at the defaults) rather than doubling.
_TREND = (0.0, -0.4)

_INCOME_GROWTH_PER_YEAR = 0.08
_AMOUNT_GROWTH_PER_YEAR = 0.03


# ---------------------------------------------------------------------------------------------
# Settings and summary
# ---------------------------------------------------------------------------------------------


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
        _require(_is_int(self.rows) and self.rows >= 1, "rows", "an integer >= 1", self.rows)
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _require(
            isinstance(self.start, date) and not isinstance(self.start, datetime),
            "start",
            "a date (YYYY-MM-DD)",
            self.start,
        )
        _require(_is_int(self.months) and self.months >= 1, "months", "an integer >= 1", self.months)
        _require(
            _is_real(self.positive_rate) and 0.0 < self.positive_rate < 1.0,
            "positive_rate",
            "a number strictly between 0 and 1",
            self.positive_rate,
        )
        delays = self.label_delay_days
        _require(
            isinstance(delays, tuple)
            and len(delays) == 2
            and all(_is_int(d) for d in delays)
            and 0 <= delays[0] <= delays[1],
            "label_delay_days",
            "a pair of integers [low, high] with 0 <= low <= high",
            delays,
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


@dataclass(frozen=True)
class WarehouseSummary:
    """What :func:`write_warehouse` wrote.

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


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


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


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    """The data span as integer seconds since ``start``, with calendar-month boundaries."""

    start: np.datetime64
    span_s: int
    month_starts_s: np.ndarray  # month k (1-based) starts at month_starts_s[k - 1]

    @classmethod
    def from_settings(cls, settings: DemoWarehouseSettings) -> _Clock:
        origin = pd.Timestamp(settings.start)
        bounds = [origin + pd.DateOffset(months=k) for k in range(settings.months + 1)]
        bounds_s = np.array([int((b - origin).total_seconds()) for b in bounds], dtype=np.int64)
        return cls(start=np.datetime64(settings.start, "s"), span_s=int(bounds_s[-1]), month_starts_s=bounds_s[:-1])

    def to_datetime(self, t_s: np.ndarray) -> np.ndarray:
        return self.start + t_s.astype("timedelta64[s]")


def generate_tables(settings: DemoWarehouseSettings) -> dict[str, pd.DataFrame]:
    """Generate the three warehouse tables in memory.

    Pure and seeded: the same settings always return identical frames, in the same row order
    (customers by ``customer_id``, applications and outcomes by ``application_id``). IDs start
    at 1 and increase with ``signup_date`` and ``applied_at`` respectively, as they would in an
    operational system.

    Parameters
    ----------
    settings : DemoWarehouseSettings

    Returns
    -------
    dict of str to DataFrame
        ``{"customers": ..., "applications": ..., "outcomes": ...}`` with exactly the columns
        of the SQL tables, ``int64``/``float64``/``str`` dtypes and ``datetime64[us]``
        datetimes holding whole seconds.
    """
    rng = np.random.default_rng(settings.seed)
    clock = _Clock.from_settings(settings)

    counts = _draw_applications_per_customer(rng, settings.rows, settings.applications_per_customer)
    owner, applied_s = _draw_application_times(rng, counts, clock.span_s)
    customers = _draw_customers(rng, owner, applied_s)
    apps = _draw_applications(rng, owner, applied_s, customers, clock)

    logits = _default_logits(apps, customers, owner, applied_s, clock)
    intercept = _solve_intercept(logits, settings.positive_rate)
    defaulted = (rng.random(settings.rows) < _sigmoid(logits + intercept)).astype(np.int64)
    low, high = settings.label_delay_days
    delay_s = rng.integers(low * _SECONDS_PER_DAY, high * _SECONDS_PER_DAY, size=settings.rows, endpoint=True)

    return _assemble_frames(clock, owner, applied_s, customers, apps, defaulted, delay_s)


def _draw_applications_per_customer(rng: np.random.Generator, rows: int, mean: float) -> np.ndarray:
    """Geometric counts (>= 1, mean ``mean``) summing exactly to ``rows``.

    A geometric count gives what lenders see: many one-off customers and a tail of frequent
    ones. Counts are drawn in batches until they cover ``rows``; the last customer's count is
    cut so the total is exact.
    """
    p = 1.0 / mean
    batch = int(rows / mean * 1.1) + 16
    counts = rng.geometric(p, size=batch)
    while counts.sum() < rows:  # rare: only when the first batch falls short
        counts = np.concatenate([counts, rng.geometric(p, size=batch)])
    total = np.cumsum(counts)
    n_customers = int(np.searchsorted(total, rows)) + 1
    counts = counts[:n_customers].copy()
    counts[-1] -= int(total[n_customers - 1]) - rows
    return counts.astype(np.int64)


def _reflect(x: np.ndarray, length: float) -> np.ndarray:
    """Fold ``x`` into ``[0, length]`` by mirroring at both ends.

    Mirroring keeps a uniform density uniform, so bursts near the edges of the span do not
    thin out the first and last months.
    """
    period = 2.0 * length
    x = np.mod(x, period)
    return np.where(x > length, period - x, x)


def _draw_application_times(
    rng: np.random.Generator, counts: np.ndarray, span_s: int
) -> tuple[np.ndarray, np.ndarray]:
    """Customer index and application time (seconds since start) per application.

    Each customer has an anchor moment; their applications scatter around it (sd 3 months),
    so a customer's loans cluster in time while the book's volume stays flat over the span.
    """
    n_customers = len(counts)
    owner = np.repeat(np.arange(n_customers), counts)
    anchor = rng.uniform(0.0, span_s, size=n_customers)
    jitter = rng.normal(0.0, 3.0 * _SECONDS_PER_MONTH, size=len(owner))
    applied = _reflect(anchor[owner] + jitter, span_s)
    applied_s = np.minimum(np.floor(applied).astype(np.int64), span_s - 1)
    return owner, applied_s


def _draw_customers(rng: np.random.Generator, owner: np.ndarray, applied_s: np.ndarray) -> dict[str, np.ndarray]:
    """Per-customer attributes, including the latent risk ``z`` that is never written."""
    n = int(owner.max()) + 1
    first_applied_s = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_applied_s, owner, applied_s)

    # Most customers sign up shortly before borrowing; the rest are long-standing.
    is_new = rng.random(n) < 0.6
    tenure_days = np.where(is_new, rng.exponential(30.0, n), np.minimum(rng.exponential(900.0, n), 15 * 365.25))
    signup_s = first_applied_s - np.ceil(tenure_days * _SECONDS_PER_DAY).astype(np.int64)

    z = rng.standard_normal(n)
    region = rng.choice(len(_REGIONS), size=n, p=_REGION_P)
    age = 18 + np.rint(62.0 * rng.beta(2.2, 3.5, size=n)).astype(np.int64)
    employment_years = np.round((age - 18) * rng.beta(2.0, 2.5, size=n), 1)

    # Earnings peak in the late forties; nominal incomes grow year on year (the drift).
    log_income = (
        np.log(42_000.0)
        + _REGION_LOG_INCOME[region]
        - 0.9 * ((age - 48) / 30.0) ** 2
        + 0.015 * np.minimum(employment_years, 20.0)
        - 0.10 * z
        + rng.normal(0.0, 0.45, size=n)
    )
    growth = (1.0 + _INCOME_GROWTH_PER_YEAR) ** (signup_s / _SECONDS_PER_YEAR)
    income = np.round(np.maximum(np.exp(log_income) * growth, 8_000.0), 2)

    # A credit score is mostly the customer; each application adds a little bureau noise.
    score_base = 690.0 - 35.0 * z + 22.0 * (age - 42) / 13.0 + rng.normal(0.0, 45.0, size=n)
    return {
        "signup_s": signup_s,
        "z": z,
        "region": region,
        "age": age,
        "employment_years": employment_years,
        "income": income,
        "score_base": score_base,
    }


def _categorical_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One categorical draw per row of an ``(n, k)`` probability matrix, vectorised."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities)) * cumulative[:, -1]
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), probabilities.shape[1] - 1)


def _channel_probabilities(applied_s: np.ndarray, clock: _Clock) -> np.ndarray:
    """Channel mix per application: ``mobile`` opens in month 12 and grows its share."""
    n = len(applied_s)
    probabilities = np.zeros((n, len(_CHANNELS)))
    probabilities[:, :3] = _CHANNEL_P_BEFORE_MOBILE
    if len(clock.month_starts_s) >= MOBILE_LAUNCH_MONTH:
        launch_s = clock.month_starts_s[MOBILE_LAUNCH_MONTH - 1]
        live = applied_s >= launch_s
        progress = (applied_s[live] - launch_s) / max(clock.span_s - launch_s, 1)
        share = _MOBILE_SHARE[0] + (_MOBILE_SHARE[1] - _MOBILE_SHARE[0]) * progress
        probabilities[live, :3] *= (1.0 - share)[:, None]
        probabilities[live, 3] = share
    return probabilities


def _draw_applications(
    rng: np.random.Generator,
    owner: np.ndarray,
    applied_s: np.ndarray,
    customers: dict[str, np.ndarray],
    clock: _Clock,
) -> dict[str, np.ndarray]:
    """Per-application columns (indexes into the vocabularies for categoricals)."""
    n = len(owner)
    years = applied_s / _SECONDS_PER_YEAR
    z = customers["z"][owner]

    purpose = rng.choice(len(_PURPOSES), size=n, p=_PURPOSE_P)
    raw_amount = (
        _PURPOSE_MEDIAN_AMOUNT[purpose]
        * np.exp(rng.normal(0.0, 0.55, size=n))
        * (1.0 + _AMOUNT_GROWTH_PER_YEAR) ** years
    )
    amount = np.maximum(np.round(raw_amount / 50.0) * 50.0, 500.0)
    term = _categorical_rows(rng, _TERM_P_BY_PURPOSE[purpose])
    channel = _categorical_rows(rng, _channel_probabilities(applied_s, clock))

    score = np.clip(np.rint(customers["score_base"][owner] + rng.normal(0.0, 15.0, size=n)), 300, 850)

    # Debt scales with income; riskier customers carry more of it; some carry none.
    debt_ratio = np.exp(rng.normal(np.log(0.30) + 0.25 * z, 0.6))
    has_debt = rng.random(n) >= 0.12
    existing_debt = np.round(np.where(has_debt, customers["income"][owner] * debt_ratio, 0.0), 2)

    return {
        "purpose": purpose,
        "amount": amount,
        "term": term,
        "channel": channel,
        "credit_score": score.astype(np.int64),
        "existing_debt": existing_debt,
    }


def _ramp(ends: tuple[float, float], progress: np.ndarray) -> np.ndarray:
    """Linear interpolation from ``ends[0]`` (progress 0) to ``ends[1]`` (progress 1)."""
    return ends[0] + (ends[1] - ends[0]) * progress


def _default_logits(
    apps: dict[str, np.ndarray],
    customers: dict[str, np.ndarray],
    owner: np.ndarray,
    applied_s: np.ndarray,
    clock: _Clock,
) -> np.ndarray:
    """Log-odds of default, up to the intercept.

    Fixed effects: term, purpose, channel, a U-shaped age effect, employment and the latent
    customer risk ``z`` (which the credit score only partly reveals). Effects that drift with
    the application's position in the span: debt-to-income, credit score, the partner channel
    and a gentle downward trend, see the ``_*_SLOPE``, ``_PARTNER_LOGIT`` and ``_TREND``
    constants.
    """
    income = customers["income"][owner]
    age = customers["age"][owner]
    log_dti = np.log((apps["existing_debt"] + apps["amount"]) / income)
    # Centred, so that a growing slope reorders risk rather than inflating the base rate.
    log_dti -= np.median(log_dti)
    progress = applied_s / clock.span_s
    is_partner = apps["channel"] == _PARTNER

    return (
        _ramp(_SCORE_SLOPE, progress) * (apps["credit_score"] - 690.0)
        + _ramp(_DTI_SLOPE, progress) * log_dti
        + np.where(is_partner, _ramp(_PARTNER_LOGIT, progress), 0.0)
        + _ramp(_TREND, progress)
        + _TERM_LOGIT[apps["term"]]
        + _PURPOSE_LOGIT[apps["purpose"]]
        + _CHANNEL_LOGIT[apps["channel"]]
        + 0.25 * ((age - 45) / 12.0) ** 2
        - 0.15 * (age - 45) / 12.0
        - 0.03 * np.minimum(customers["employment_years"][owner], 15.0)
        + 0.7 * customers["z"][owner]
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form never overflows


def _solve_intercept(logits: np.ndarray, rate: float, tolerance: float = 1e-9) -> float:
    """Intercept ``b`` with ``mean(sigmoid(logits + b)) == rate``, by bisection.

    The mean is increasing in ``b``, so halving a bracket that surely contains the answer
    converges (about 37 passes over the logits for ``tolerance=1e-9``) and, unlike
    ``logit(rate)``, honours the actual skew of the generated risk.
    """
    low, high = -40.0, 40.0
    while high - low > tolerance:
        mid = 0.5 * (low + high)
        if _sigmoid(logits + mid).mean() < rate:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _assemble_frames(
    clock: _Clock,
    owner: np.ndarray,
    applied_s: np.ndarray,
    customers: dict[str, np.ndarray],
    apps: dict[str, np.ndarray],
    defaulted: np.ndarray,
    delay_s: np.ndarray,
) -> dict[str, pd.DataFrame]:
    """Number customers by signup and applications by time, then build the frames."""
    customer_order = np.argsort(customers["signup_s"], kind="stable")
    customer_id = np.empty_like(customer_order)
    customer_id[customer_order] = np.arange(1, len(customer_order) + 1)

    app_order = np.argsort(applied_s, kind="stable")
    application_id = np.arange(1, len(app_order) + 1, dtype=np.int64)

    def stamps(seconds: np.ndarray) -> np.ndarray:
        # Microseconds: the unit pandas 3 gives datetimes read back through SQLAlchemy.
        return clock.to_datetime(seconds).astype("datetime64[us]")

    customers_frame = pd.DataFrame(
        {
            "customer_id": np.arange(1, len(customer_order) + 1, dtype=np.int64),
            "signup_date": stamps(customers["signup_s"][customer_order]),
            "region": _REGIONS[customers["region"][customer_order]],
            "age": customers["age"][customer_order],
            "income": customers["income"][customer_order],
            "employment_years": customers["employment_years"][customer_order],
        }
    )
    applied_sorted = applied_s[app_order]
    applications_frame = pd.DataFrame(
        {
            "application_id": application_id,
            "customer_id": customer_id[owner[app_order]].astype(np.int64),
            "applied_at": stamps(applied_sorted),
            "amount": apps["amount"][app_order],
            "term_months": _TERMS[apps["term"][app_order]].astype(np.int64),
            "purpose": _PURPOSES[apps["purpose"][app_order]],
            "channel": _CHANNELS[apps["channel"][app_order]],
            "credit_score": apps["credit_score"][app_order],
            "existing_debt": apps["existing_debt"][app_order],
        }
    )
    outcomes_frame = pd.DataFrame(
        {
            "application_id": application_id,
            "defaulted": defaulted[app_order],
            "observed_at": stamps(applied_sorted + delay_s[app_order]),
        }
    )
    return {"customers": customers_frame, "applications": applications_frame, "outcomes": outcomes_frame}


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_warehouse(url: str, settings: DemoWarehouseSettings) -> WarehouseSummary:
    """Generate the tables and (re)write them to the warehouse at ``url``.

    The three tables are dropped if present, recreated with typed columns and primary keys,
    filled in batches of ``settings.chunk_rows`` rows, and indexed once full. Everything runs
    in one transaction, so on PostgreSQL and SQLite (both have transactional DDL) a failed
    write leaves the previous tables as they were. Rows travel by the fastest route that
    stores the same values: psycopg 3 ``COPY ... FROM STDIN`` on PostgreSQL, ``executemany``
    of the compiled Core INSERT with per-column bind processing on SQLite, and plain Core
    ``executemany`` inserts on any other database.

    Parameters
    ----------
    url : str
        Any SQLAlchemy URL, e.g. ``sqlite:///warehouse.db`` or
        ``postgresql+psycopg://user@host:5432/db``.
    settings : DemoWarehouseSettings

    Returns
    -------
    WarehouseSummary
    """
    frames = generate_tables(settings)
    engine = create_engine(url)
    _make_sqlite_ddl_transactional(engine)
    try:
        with engine.begin() as conn:
            METADATA.drop_all(conn, checkfirst=True)
            for table in METADATA.sorted_tables:
                conn.execute(CreateTable(table))
            for name, table in _TABLES.items():
                _load_table(conn, table, frames[name], settings.chunk_rows)
            for index in _INDEXES:
                index.create(conn)
    finally:
        engine.dispose()
    return _summarise(url, frames)


def _make_sqlite_ddl_transactional(engine: Engine) -> None:
    """Let SQLAlchemy, not the ``sqlite3`` module, open SQLite transactions.

    By default ``sqlite3`` only opens a transaction before INSERT/UPDATE/DELETE, so DROP and
    CREATE TABLE would commit on their own and a failed rewrite could leave empty tables
    behind. This is SQLAlchemy's documented pysqlite recipe: disable the module's implicit
    handling and emit BEGIN ourselves.
    """
    if engine.dialect.name != "sqlite" or engine.dialect.driver != "pysqlite":
        return

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def build_demo_warehouse(
    url: str,
    settings_path: str | Path | None = None,
    rows: int | None = None,
    seed: int | None = None,
) -> WarehouseSummary:
    """Load the settings file, apply overrides and write the warehouse.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the warehouse to (re)write.
    settings_path : str or Path, optional
        Settings YAML; defaults to ``include/demo_warehouse.yaml`` in the repository.
    rows, seed : int, optional
        Override the file's ``rows`` and ``seed``.

    Returns
    -------
    WarehouseSummary
    """
    settings = DemoWarehouseSettings.from_yaml(settings_path or DEFAULT_SETTINGS_PATH)
    overrides = {k: v for k, v in {"rows": rows, "seed": seed}.items() if v is not None}
    return write_warehouse(url, replace(settings, **overrides))


def _column_values(frame: pd.DataFrame, columns: Sequence[str]) -> list[list[Any]]:
    """Columns as lists of plain Python values, which every DBAPI driver accepts.

    ``datetime64`` goes through microseconds because numpy turns ``[us]`` (not ``[ns]``)
    into ``datetime.datetime`` objects.
    """
    values = []
    for name in columns:
        array = frame[name].to_numpy()
        if np.issubdtype(array.dtype, np.datetime64):
            array = array.astype("datetime64[us]")
        values.append(array.tolist())
    return values


def _chunks(frame: pd.DataFrame, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for begin in range(0, len(frame), chunk_rows):
        yield frame.iloc[begin : begin + chunk_rows]


def _load_table(conn: Connection, table: Table, frame: pd.DataFrame, chunk_rows: int) -> None:
    """Append ``frame`` to ``table`` in batches of ``chunk_rows``, by the fastest safe route."""
    columns = [c.name for c in table.columns]
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        _copy_postgres(conn, table, frame, columns, chunk_rows)
    elif conn.dialect.paramstyle == "qmark":
        _insert_positional(conn, table, frame, columns, chunk_rows)
    else:
        statement = table.insert()
        for part in _chunks(frame, chunk_rows):
            rows = [dict(zip(columns, row)) for row in zip(*_column_values(part, columns))]
            conn.execute(statement, rows)


def _insert_positional(
    conn: Connection, table: Table, frame: pd.DataFrame, columns: Sequence[str], chunk_rows: int
) -> None:
    """``executemany`` of a compiled Core INSERT with tuples (SQLite's ``qmark`` style).

    Passing dicts through ``Connection.execute`` makes SQLAlchemy rebuild and convert every
    row's parameters one by one, three quarters of the time spent writing. Here each column
    goes through its type's own bind processor (for SQLite, the DateTime-to-text conversion)
    in one ``map`` call, so the stored values are exactly those Core would store, about three
    times faster.
    """
    dialect = conn.dialect
    sql = str(table.insert().compile(dialect=dialect))
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns]
    for part in _chunks(frame, chunk_rows):
        values = _column_values(part, columns)
        converted = [list(map(p, v)) if p is not None else v for p, v in zip(processors, values)]
        conn.exec_driver_sql(sql, list(zip(*converted)))


# Binary COPY needs each column's PostgreSQL type up front.
_POSTGRES_COPY_TYPES: tuple[tuple[type, str], ...] = (
    (Integer, "int4"),
    (Float, "float8"),
    (DateTime, "timestamp"),
    (String, "varchar"),
)


def _copy_postgres(
    conn: Connection, table: Table, frame: pd.DataFrame, columns: Sequence[str], chunk_rows: int
) -> None:
    """Stream rows with psycopg 3 binary ``COPY ... FROM STDIN``.

    With the column types declared, psycopg's C extension packs each row in about 2 us,
    several times faster than text COPY or ``executemany``; binary also carries floats and
    timestamps bit for bit. The cursor belongs to the connection SQLAlchemy is already using,
    so the rows join the same transaction as the DROP and CREATE statements before them.
    """
    preparer = conn.dialect.identifier_preparer
    target = f"{preparer.format_table(table)} ({', '.join(preparer.quote(c) for c in columns)})"
    types = [
        next(name for kind, name in _POSTGRES_COPY_TYPES if isinstance(table.c[c].type, kind)) for c in columns
    ]
    cursor = conn.connection.driver_connection.cursor()
    try:
        with cursor.copy(f"COPY {target} FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for part in _chunks(frame, chunk_rows):
                for row in zip(*_column_values(part, columns)):
                    copy.write_row(row)
    finally:
        cursor.close()


def _summarise(url: str, frames: dict[str, pd.DataFrame]) -> WarehouseSummary:
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
