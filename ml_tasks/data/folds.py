"""Walk-forward backtest folds on event time, and the staleness curve. Pure: no I/O.

A backtest asks "how well would this recipe have done had we run it in the past?". Refit replays
the past ``F = backtest.folds`` times, each fold one test period (``T = backtest.test_days``)
earlier than the next, and splits on the rows' *event time* (``columns.timestamp``), never on row
positions (scikit-learn's ``TimeSeriesSplit`` assumes equally spaced rows and cannot do this).

Fold geometry (``make_folds``)
------------------------------
For fold ``i`` in ``0 .. F-1`` (fold ``F-1`` is the latest), with ``G = backtest.gap_days``::

    test_end_i   = as_of - (F-1-i)·T          the last fold's test window ends at as_of
    test_start_i = test_end_i - T             test windows are contiguous and never overlap
    cutoff_i     = test_start_i - G           the fold's "training time"
    train_start_i = cutoff_i - train_days     sliding: every window has the same length
                  = cutoff_0 - train_days     expanding: every fold starts where fold 0 starts

    fold 0  [train_0 ======== cutoff_0)  gap  [test_0)[age 1 ][age 2 ]
    fold 1  [train_0 ============= cutoff_1)  gap  [test_1)[age 1 ][age 2 ]
    fold 2  [train_0 ================== cutoff_2)  gap  [test_2)[age 1 ]
    fold 3  [train_0 ======================= cutoff_3)  gap  [test_3)
                                                                      ^ as_of
                                      (expanding windows; F = 4, staleness_periods = 2)

All windows are half-open ``[start, end)``. Fold 0 starts earliest, ``train_days + G + F·T`` days
before ``as_of`` whichever the window kind; given the snapshot's ``data_start`` a fold that would
reach before it is a :class:`BacktestError` naming the spec fields to change.

Which rows a fold uses (``fold_rows``)
--------------------------------------
* **Training rows**: event time in ``[train_start, cutoff)`` *and* ``label_observed_at <= cutoff``.
  The second condition is label maturity as of the fold's own cutoff: a fold never learns from a
  label that had not been observed at its training time, although the snapshot (extracted at
  ``as_of``) knows it. Without it the early folds would be trained on the future and look better
  than any real run could be. A missing ``label_observed_at`` (NaT) counts as never observed.
* **Test rows**: event time in ``[test_start, test_end)``. The gap ``[cutoff, test_start)`` is in
  neither: its events' labels may still be maturing at the cutoff (the spec requires
  ``gap_days >= label_delay_days``), which is the purge-and-embargo idea of López de Prado
  expressed in days of label delay.
* **Entity-disjoint** (``backtest.entity_disjoint``): test rows (and later-window rows) whose
  entity (``columns.entity``) occurs among the fold's training rows are dropped, and counted, so
  the score says how the model does on *new* entities. A missing entity matches nothing.

Test rows are not filtered on ``label_observed_at``: the frame is assumed to hold only labels
known by ``as_of``, as a snapshot does. Beware that a test window less than
``label_delay_days`` before ``as_of`` then holds only the events whose label came *early* (for
credit defaults: mostly the early defaults), a censored, biased sample, or nothing at all. Passing
the label horizon ``as_of - label_delay_days`` as ``as_of`` keeps every test label complete.

Staleness: how fast a model goes stale
--------------------------------------
Each fold's model is also scored on the windows after its own test window, at *age*
``j = 1 .. backtest.staleness_periods``: ``[test_start + j·T, test_end + j·T)``, kept only when
they end by ``as_of`` (fold ``i`` has ``min(k, F-1-i)`` of them; they are the later folds' test
windows). Age 0 is the fold's own test window. Window ``j`` holds events ``G + j·T`` to
``G + (j+1)·T`` days after the cutoff; its age in days is taken at its middle, ``G + j·T + T/2``.

``staleness_curve`` averages the score per age and the *paired* drop against age 0 (same fold,
so fold-to-fold differences in difficulty cancel; positive = worse, whichever way the metric
goes). It turns the curve into a retraining interval:

* In production a model trained at ``as_of`` knows the labels observed by ``as_of``, complete
  only for events older than the label delay (at most ``G``): its effective cutoff is ``G`` days
  before it goes live, just like a fold's. Used for ``R`` days, it serves events ``G`` to ``G + R`` days after that
  cutoff, which are windows ``0 .. ceil(R/T) - 1`` of the curve.
* If ``j*`` is the first age whose mean drop exceeds ``backtest.staleness_tolerance``, windows
  ``0 .. j*-1`` are within tolerance, so ``R = j*·T`` days keeps the model there: *retrain at
  least every* ``j*·T`` *days* (``bounded=True``). Later ages are not consulted: a noisy recovery
  after the first breach does not make an older model safe.
* If no measured age breaches the tolerance, with ``J`` the oldest age measured, ``R = (J+1)·T``
  is safe as far as the data go and the true limit may be longer (``bounded=False``, "at least").

``cron_interval_days`` reads the spec's ``schedule`` as an average interval in days, so a report
can put the schedule next to the recommendation without importing Airflow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

from ml_tasks.core.spec import BacktestSpec, ColumnsSpec

#: A half-open time window ``[start, end)``.
Window = tuple[datetime, datetime]


class BacktestError(ValueError):
    """Backtest folds cannot be made; the message names the spec fields, fold and dates."""


# --------------------------------------------------------------------------------------------
# Fold geometry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: train on ``[train_start, cutoff)``, test on ``[test_start, test_end)``.

    ``later_windows[j-1]`` is the window at age ``j`` (the staleness windows), oldest age last.
    """

    index: int
    train_start: datetime
    cutoff: datetime
    test_start: datetime
    test_end: datetime
    later_windows: tuple[Window, ...]

    @property
    def windows(self) -> dict[int, Window]:
        """Every scored window by age: 0 is the fold's own test window."""
        return {0: (self.test_start, self.test_end), **dict(enumerate(self.later_windows, start=1))}

    def describe(self) -> str:
        """One line for logs and error messages."""
        return (f"fold {self.index}: train [{_day(self.train_start)}, {_day(self.cutoff)}), "
                f"test [{_day(self.test_start)}, {_day(self.test_end)}), {len(self.later_windows)} later window(s)")


def history_days(spec: BacktestSpec) -> int:
    """Days of history before ``as_of`` the backtest needs: fold 0's training start to ``as_of``."""
    return spec.train_days + spec.gap_days + spec.folds * spec.test_days


def make_folds(spec: BacktestSpec, as_of: datetime, data_start: datetime | None = None) -> list[Fold]:
    """The ``spec.folds`` folds ending at ``as_of``, oldest first (see the module docstring).

    ``as_of`` is naive UTC (an aware one is converted). With ``data_start`` (the snapshot's window
    start) a first fold reaching before the data raises :class:`BacktestError`, instead of a
    silently shorter first training window.
    """
    as_of = _naive_utc(as_of)
    period = timedelta(days=spec.test_days)
    test_ends = [as_of - (spec.folds - 1 - i) * period for i in range(spec.folds)]
    cutoffs = [end - period - timedelta(days=spec.gap_days) for end in test_ends]
    first_start = cutoffs[0] - timedelta(days=spec.train_days)
    if data_start is not None:
        _check_history(spec, as_of, _naive_utc(data_start), first_start)
    folds = []
    for i, (end, cutoff) in enumerate(zip(test_ends, cutoffs, strict=True)):
        start = end - period
        # A later window exists only once it is over by as_of: fold i has F-1-i of them at most.
        ages = range(1, min(spec.staleness_periods, spec.folds - 1 - i) + 1)
        folds.append(Fold(
            index=i,
            train_start=first_start if spec.window == "expanding" else cutoff - timedelta(days=spec.train_days),
            cutoff=cutoff, test_start=start, test_end=end,
            later_windows=tuple((start + j * period, end + j * period) for j in ages)))
    return folds


def _check_history(spec: BacktestSpec, as_of: datetime, data_start: datetime, first_start: datetime) -> None:
    if first_start >= data_start:
        return
    available = (as_of - data_start) / timedelta(days=1)
    raise BacktestError(
        f"backtest needs {history_days(spec)} days of history before as_of {_day(as_of)} "
        f"(backtest.train_days {spec.train_days} + backtest.gap_days {spec.gap_days} + "
        f"backtest.folds {spec.folds} × backtest.test_days {spec.test_days}), but the data start at "
        f"{_day(data_start)}, {available:g} days before: raise source.window_days to at least "
        f"{history_days(spec)} or lower backtest.folds, backtest.train_days, backtest.test_days or backtest.gap_days")


# --------------------------------------------------------------------------------------------
# Rows of a fold
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FoldRows:
    """Positional row indices (into the frame given to :func:`fold_rows`) of one fold.

    ``later`` maps each age ``j >= 1`` to its window's rows (possibly empty: skip it when
    scoring). ``dropped_rows``/``dropped_entities`` count the test-window rows and distinct
    entities removed by the entity-disjoint option; ``later_dropped_rows`` the same per age.
    """

    train: np.ndarray
    test: np.ndarray
    later: dict[int, np.ndarray]
    dropped_rows: int = 0
    dropped_entities: int = 0
    later_dropped_rows: dict[int, int] = field(default_factory=dict)


def fold_rows(frame: pd.DataFrame, fold: Fold, columns: ColumnsSpec, entity_disjoint: bool) -> FoldRows:
    """Select a fold's training, test and later-window rows of ``frame``. Vectorised; pure.

    Raises :class:`BacktestError` naming the fold and its dates when the training or the test
    rows are empty, and naming the column when a column is missing or not a timestamp.
    """
    stamps = _timestamps(frame, columns.timestamp, "columns.timestamp")
    observed = _timestamps(frame, columns.label_observed_at, "columns.label_observed_at")
    # NaT compares False both ways, so a row without a time or label date is never selected.
    train_mask = _within(stamps, fold.train_start, fold.cutoff) & (observed <= np.datetime64(fold.cutoff))
    if not train_mask.any():
        raise BacktestError(f"backtest {fold.describe()}: no training rows with {columns.timestamp!r} in "
                            f"[{_day(fold.train_start)}, {_day(fold.cutoff)}) and {columns.label_observed_at!r} "
                            f"<= {_day(fold.cutoff)}; check the snapshot covers this window "
                            "or lengthen backtest.train_days")
    test_mask = _within(stamps, fold.test_start, fold.test_end)
    if not test_mask.any():
        raise BacktestError(f"backtest {fold.describe()}: no test rows with {columns.timestamp!r} in "
                            f"[{_day(fold.test_start)}, {_day(fold.test_end)})")
    later_masks = {age: _within(stamps, start, end) for age, (start, end) in enumerate(fold.later_windows, start=1)}
    if not entity_disjoint:
        return FoldRows(train=np.flatnonzero(train_mask), test=np.flatnonzero(test_mask),
                        later={age: np.flatnonzero(mask) for age, mask in later_masks.items()},
                        later_dropped_rows=dict.fromkeys(later_masks, 0))
    return _entity_disjoint_rows(frame, fold, columns, train_mask, test_mask, later_masks)


def _entity_disjoint_rows(frame: pd.DataFrame, fold: Fold, columns: ColumnsSpec, train_mask: np.ndarray,
                          test_mask: np.ndarray, later_masks: dict[int, np.ndarray]) -> FoldRows:
    if columns.entity is None:
        raise BacktestError("backtest.entity_disjoint is true but columns.entity is not set: "
                            "name the entity column or turn backtest.entity_disjoint off")
    if columns.entity not in frame.columns:
        raise BacktestError(f"columns.entity {columns.entity!r} is not a column of the frame")
    entities = frame[columns.entity]
    seen = entities[train_mask].dropna().unique()  # without NaN: isin would match NaN to NaN
    shared = entities.isin(seen).to_numpy(dtype=bool)
    dropped = test_mask & shared
    test_mask = test_mask & ~shared
    if not test_mask.any():
        raise BacktestError(f"backtest {fold.describe()}: all {int(dropped.sum())} test rows belong to entities "
                            f"({columns.entity!r}) seen in training; backtest.entity_disjoint leaves no test rows")
    return FoldRows(train=np.flatnonzero(train_mask), test=np.flatnonzero(test_mask),
                    later={age: np.flatnonzero(mask & ~shared) for age, mask in later_masks.items()},
                    dropped_rows=int(dropped.sum()), dropped_entities=int(entities[dropped].nunique()),
                    later_dropped_rows={age: int((mask & shared).sum()) for age, mask in later_masks.items()})


def _timestamps(frame: pd.DataFrame, column: str, field: str) -> np.ndarray:
    """The column as naive-UTC ``datetime64``, ready for vectorised comparisons."""
    if column not in frame.columns:
        raise BacktestError(f"{field} {column!r} is not a column of the frame; it has {list(frame.columns)}")
    values = frame[column]
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    if not pd.api.types.is_datetime64_dtype(values.dtype):
        raise BacktestError(f"{field} {column!r} has dtype {values.dtype}; expected a timestamp")
    return values.to_numpy()


def _within(stamps: np.ndarray, start: datetime, end: datetime) -> np.ndarray:
    return (stamps >= np.datetime64(start)) & (stamps < np.datetime64(end))


# --------------------------------------------------------------------------------------------
# Staleness curve
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CurvePoint:
    """The staleness curve at one age (in test periods since the fold's own test window).

    ``mean_drop`` is the mean over folds scored at both age 0 and this age of
    (age-0 score − this score), sign-flipped for lower-is-better metrics, so positive means worse;
    ``drop_se`` its standard error (None below two pairs). Both are None without a pair.
    """

    age: int
    age_days: float
    mean: float
    folds: int
    mean_drop: float | None
    paired_folds: int
    drop_se: float | None


@dataclass(frozen=True)
class StalenessCurve:
    """Score against model age, and the retraining interval it implies (module docstring).

    ``bounded`` is True when some age breached the tolerance (``exceeded_age``): retrain at least
    every ``interval_days``. False: no breach within the measured ages, and ``interval_days`` is
    a lower bound of the safe interval.
    """

    metric: str
    higher_is_better: bool
    tolerance: float
    test_days: int
    gap_days: int
    points: tuple[CurvePoint, ...]
    interval_days: int
    bounded: bool
    exceeded_age: int | None
    summary: str


def age_days(age: int, *, test_days: int, gap_days: int) -> float:
    """Model age, in days since its cutoff, at the middle of its age-``age`` window."""
    return gap_days + age * test_days + test_days / 2


def staleness_curve(scores: Iterable[tuple[int, int, float]], *, higher_is_better: bool, tolerance: float,
                    test_days: int, gap_days: int, metric: str = "metric") -> StalenessCurve:
    """Build the staleness curve from ``(fold, age, value)`` scores and recommend an interval.

    A non-finite value (e.g. ROC AUC of a window with one class) counts as not measured. Raises
    :class:`BacktestError` on a repeated (fold, age), a negative age, or no age-0 score at all.
    """
    if tolerance <= 0 or test_days <= 0 or gap_days < 0:
        raise BacktestError(f"staleness curve: expected tolerance > 0, test_days > 0, gap_days >= 0; "
                            f"got {tolerance}, {test_days}, {gap_days}")
    table = _score_table(scores)
    if not any(0 in by_age for by_age in table.values()):
        raise BacktestError(f"staleness curve of {metric}: no fold has an age-0 score, so no drop can be measured")
    sign = 1.0 if higher_is_better else -1.0
    ages = sorted({age for by_age in table.values() for age in by_age})
    points = tuple(_point(table, age, sign, test_days, gap_days) for age in ages)
    exceeded = next((p for p in points if p.age >= 1 and p.mean_drop is not None and p.mean_drop > tolerance), None)
    if exceeded is not None:
        interval = exceeded.age * test_days
    else:
        oldest = max(p.age for p in points if p.mean_drop is not None)
        interval = (oldest + 1) * test_days
    return StalenessCurve(metric=metric, higher_is_better=higher_is_better, tolerance=tolerance,
                          test_days=test_days, gap_days=gap_days, points=points, interval_days=interval,
                          bounded=exceeded is not None, exceeded_age=exceeded.age if exceeded else None,
                          summary=_summary(metric, tolerance, points, exceeded, interval))


def _score_table(scores: Iterable[tuple[int, int, float]]) -> dict[int, dict[int, float]]:
    """``{fold: {age: value}}`` of the finite scores, checking the keys."""
    table: dict[int, dict[int, float]] = {}
    for fold, age, value in scores:
        if age < 0:
            raise BacktestError(f"staleness score of fold {fold}: age {age} is negative")
        by_age = table.setdefault(int(fold), {})
        if age in by_age:
            raise BacktestError(f"staleness scores: fold {fold} has two scores at age {age}")
        if math.isfinite(value):
            by_age[int(age)] = float(value)
    return table


def _point(table: dict[int, dict[int, float]], age: int, sign: float, test_days: int, gap_days: int) -> CurvePoint:
    values = [by_age[age] for by_age in table.values() if age in by_age]
    drops = np.array([sign * (by_age[0] - by_age[age]) for by_age in table.values() if age in by_age and 0 in by_age])
    se = float(drops.std(ddof=1) / math.sqrt(len(drops))) if len(drops) >= 2 else None
    return CurvePoint(age=age, age_days=age_days(age, test_days=test_days, gap_days=gap_days),
                      mean=float(np.mean(values)), folds=len(values),
                      mean_drop=float(drops.mean()) if len(drops) else None, paired_folds=len(drops), drop_se=se)


def _summary(metric: str, tolerance: float, points: Sequence[CurvePoint], exceeded: CurvePoint | None,
             interval: int) -> str:
    if exceeded is not None:
        return (f"{metric} drops by {exceeded.mean_drop:.3f} at age {exceeded.age} period(s) "
                f"({exceeded.age_days:g} days, mean over {exceeded.paired_folds} fold(s)) > tolerance {tolerance:g}: "
                f"retrain at least every {interval} days")
    measured = [(p, p.mean_drop) for p in points if p.age >= 1 and p.mean_drop is not None]
    if not measured:
        return (f"{metric}: no later window was scored (backtest.staleness_periods is 0 or too few folds), "
                f"so staleness is unmeasured beyond the test window: retraining every {interval} days is safe "
                "as far as measured")
    oldest = measured[-1][0]
    worst, largest_drop = max(measured, key=lambda point_drop: point_drop[1])
    return (f"{metric} stays within tolerance {tolerance:g} up to age {oldest.age} period(s) "
            f"({oldest.age_days:g} days; largest drop {largest_drop:.3f} at age {worst.age}): "
            f"retraining every {interval} days is safe as far as measured, and at least that interval is allowed")


# --------------------------------------------------------------------------------------------
# Cron schedule → interval
# --------------------------------------------------------------------------------------------

#: Airflow's presets as cron expressions (``@once`` and friends have no interval).
_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
            "@monthly": "0 0 1 * *", "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
#: (low, high, names) of minute, hour, day of month, month, day of week.
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 7, _WEEKDAYS))
_ITEM = re.compile(r"^(?:(?P<star>[*?])|(?P<low>\w+)(?:-(?P<high>\w+))?)(?:/(?P<step>\d+))?$")
#: The Gregorian calendar repeats every 400 years, exactly 20,871 weeks: averaging over one full
#: cycle gives every schedule its exact long-run interval (a monthly one is 30.44 days).
_CYCLE_START, _CYCLE_END = np.datetime64("2000-01-01"), np.datetime64("2400-01-01")


def cron_interval_days(expression: str) -> float | None:
    """Average days between runs of a 5-field cron expression or an Airflow preset; None if unknown.

    ``"0 3 1 * *"`` → 30.44 (monthly), ``"0 3 * * 1"`` → 7, ``"0 3 * * *"`` → 1, ``"@hourly"`` →
    1/24. The count of runs over a full 400-year Gregorian cycle gives the average exactly. Day of
    month and day of week combine as in cron and croniter: when both are restricted (neither
    written ``*``/``?``), a day matching either runs. Quartz extensions (``L``, ``W``, ``#``),
    seconds fields, ``@once`` and schedules that never run give None. Airflow is not imported:
    ``ml_tasks`` must not depend on it (and croniter is not in the trainer image).
    """
    text = _PRESETS.get(expression.strip().lower(), expression.strip().lower())
    parts = text.split()
    if len(parts) != 5:
        return None
    parsed = [_cron_field(part, *bounds) for part, bounds in zip(parts, _FIELDS, strict=True)]
    sets = [values for values in parsed if values is not None]
    if len(sets) != len(parsed):
        return None
    minutes, hours, days_of_month, months, weekdays = sets
    weekdays = {day % 7 for day in weekdays}  # 7 is Sunday too
    month, day, weekday = _calendar()
    in_month = np.isin(month, list(months))
    by_date, by_weekday = np.isin(day, list(days_of_month)), np.isin(weekday, list(weekdays))
    if parts[2] in ("*", "?") or parts[4] in ("*", "?"):
        days = in_month & by_date & by_weekday
    else:
        days = in_month & (by_date | by_weekday)
    runs = int(days.sum()) * len(hours) * len(minutes)
    return len(day) / runs if runs else None


def _cron_field(text: str, low: int, high: int, names: dict[str, int]) -> set[int] | None:
    """The values one cron field selects, or None when it is not plain cron."""
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if not match:
            return None
        first: int | None
        last: int | None
        if match["star"]:
            first, last = low, high
        else:
            first = _cron_value(match["low"], names)
            last = _cron_value(match["high"], names) if match["high"] else (high if match["step"] else first)
        step = int(match["step"]) if match["step"] else 1
        if first is None or last is None or not low <= first <= last <= high or step < 1:
            return None  # wrapping ranges such as "5-1" are not supported everywhere: unknown
        values.update(range(first, last + 1, step))
    return values


def _cron_value(token: str, names: dict[str, int]) -> int | None:
    if token.isdigit():
        return int(token)
    return names.get(token)


@lru_cache(maxsize=1)
def _calendar() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Month (1-12), day of month (1-31) and weekday (0 = Sunday) of every day of the cycle."""
    days = np.arange(_CYCLE_START, _CYCLE_END, dtype="datetime64[D]")
    months = days.astype("datetime64[M]")
    month = (months.astype(np.int64) % 12 + 1).astype(np.int8)
    day = ((days - months).astype(np.int64) + 1).astype(np.int8)
    weekday = ((days.astype(np.int64) + 4) % 7).astype(np.int8)  # 1970-01-01 was a Thursday
    return month, day, weekday


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

def _naive_utc(moment: datetime) -> datetime:
    """Refit's convention: naive datetimes in UTC; an aware one is converted, not rejected."""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _day(moment: datetime) -> str:
    """A date for messages: the day alone at midnight, else to the minute."""
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return f"{moment:%Y-%m-%d}"
    return f"{moment:%Y-%m-%d %H:%M}"
