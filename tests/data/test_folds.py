"""Walk-forward folds on event time, the rows they select, the staleness curve and cron intervals.

The fold geometry and the row selection are checked as properties over random specs, dates and
frames (hypothesis); the curve's recommendation and the messages by examples.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_tasks.core.spec import BacktestSpec, ColumnsSpec
from ml_tasks.data.folds import (
    BacktestError,
    Fold,
    cron_interval_days,
    fold_rows,
    history_days,
    make_folds,
    staleness_curve,
)

COLUMNS = ColumnsSpec(id="id", label="y", timestamp="t", label_observed_at="seen", entity="customer")
DAY = timedelta(days=1)
# Shared 2-core machines: no per-example deadline, and few enough examples to stay well under 20 s.
PROPERTY = settings(deadline=None, max_examples=120)
ROWS = settings(deadline=None, max_examples=60)


@st.composite
def backtest_specs(draw) -> BacktestSpec:
    delay = draw(st.integers(0, 120))
    return BacktestSpec(folds=draw(st.integers(1, 12)), window=draw(st.sampled_from(["expanding", "sliding"])),
                        train_days=draw(st.integers(1, 400)), test_days=draw(st.integers(1, 90)),
                        gap_days=delay + draw(st.integers(0, 60)), label_delay_days=delay,
                        staleness_periods=draw(st.integers(0, 6)), entity_disjoint=draw(st.booleans()))


as_of_dates = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1))


# ------------------------------------------------------------------------------------------
# Fold geometry
# ------------------------------------------------------------------------------------------

@PROPERTY
@given(spec=backtest_specs(), as_of=as_of_dates)
def test_folds_walk_forward_to_as_of(spec: BacktestSpec, as_of: datetime):
    folds = make_folds(spec, as_of)
    period, gap = spec.test_days * DAY, spec.gap_days * DAY
    assert [f.index for f in folds] == list(range(spec.folds))
    assert folds[-1].test_end == as_of
    cutoffs = [f.cutoff for f in folds]
    assert cutoffs == sorted(cutoffs) and len(set(cutoffs)) == len(cutoffs)
    for f in folds:
        assert f.test_end - f.test_start == period
        assert f.test_start - f.cutoff == gap >= spec.label_delay_days * DAY
        assert f.train_start < f.cutoff
    for earlier, later in pairwise(folds):
        assert earlier.test_end == later.test_start  # contiguous, so never overlapping
    if spec.window == "expanding":
        assert {f.train_start for f in folds} == {folds[0].train_start}
        assert folds[0].cutoff - folds[0].train_start == spec.train_days * DAY
    else:
        assert {f.cutoff - f.train_start for f in folds} == {spec.train_days * DAY}
    assert as_of - folds[0].train_start == history_days(spec) * DAY


@PROPERTY
@given(spec=backtest_specs(), as_of=as_of_dates)
def test_later_windows_follow_the_test_window_and_end_by_as_of(spec: BacktestSpec, as_of: datetime):
    folds = make_folds(spec, as_of)
    period = spec.test_days * DAY
    for f in folds:
        assert len(f.later_windows) == min(spec.staleness_periods, spec.folds - 1 - f.index)
        for age, (start, end) in enumerate(f.later_windows, start=1):
            assert (start, end) == (f.test_start + age * period, f.test_end + age * period)
            assert start >= f.test_end and end <= as_of
            # Age j of fold i is fold i+j's test window: staleness is scored on windows already in use.
            assert (start, end) == (folds[f.index + age].test_start, folds[f.index + age].test_end)
        assert f.windows[0] == (f.test_start, f.test_end)


@PROPERTY
@given(spec=backtest_specs(), as_of=as_of_dates, spare=st.integers(-3, 3))
def test_data_start_check_is_exact(spec: BacktestSpec, as_of: datetime, spare: int):
    data_start = as_of - (history_days(spec) + spare) * DAY
    if spare >= 0:
        assert make_folds(spec, as_of, data_start=data_start)[0].train_start >= data_start
    else:
        with pytest.raises(BacktestError):
            make_folds(spec, as_of, data_start=data_start)


def test_too_little_history_names_the_fields():
    spec = BacktestSpec(folds=6, train_days=200, test_days=30, gap_days=90, label_delay_days=60)
    as_of = datetime(2024, 7, 1)
    with pytest.raises(BacktestError) as error:
        make_folds(spec, as_of, data_start=as_of - 365 * DAY)
    message = str(error.value)
    for field in ("backtest.folds 6", "backtest.train_days 200", "backtest.test_days 30", "backtest.gap_days 90",
                  "source.window_days"):
        assert field in message
    assert "470 days" in message and "365 days before" in message


def test_aware_as_of_is_read_as_utc():
    aware = datetime(2024, 7, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert make_folds(BacktestSpec(), aware)[-1].test_end == datetime(2024, 7, 1)


# ------------------------------------------------------------------------------------------
# Rows of a fold
# ------------------------------------------------------------------------------------------

def random_frame(seed: int, first: datetime, last: datetime, rows: int, max_delay_days: int,
                 edges: list[datetime], entity_dtype: str) -> pd.DataFrame:
    """Events over [first, last], labels observed 0..max_delay days later (some never).

    A fifth of the events and of the label dates fall exactly on ``edges`` (the folds' window
    bounds and cutoffs), where an off-by-one in a half-open window would show.
    """
    rng = np.random.default_rng(seed)
    span = (last - first).total_seconds()
    stamps = pd.Timestamp(first) + pd.to_timedelta(rng.uniform(0, span, rows).round(), unit="s")
    on_edge = rng.random(rows) < 0.2
    stamps = stamps.where(~on_edge, pd.DatetimeIndex(rng.choice(np.array(edges, dtype="datetime64[us]"), rows)))
    seen = stamps + pd.to_timedelta(rng.integers(0, max_delay_days + 1, rows), unit="D")
    edge_seen = pd.DatetimeIndex(rng.choice(np.array(edges, dtype="datetime64[us]"), rows))
    seen = seen.where(~((rng.random(rows) < 0.2) & (edge_seen >= stamps)), edge_seen)
    seen = seen.where(rng.random(rows) > 0.05)  # a few labels never observed (NaT)
    customer = pd.Series(rng.integers(0, max(rows // 3, 1), rows)).astype(entity_dtype)
    if entity_dtype == "object":
        customer = "c" + customer.astype(str)
    customer[rng.random(rows) < 0.05] = None  # a few rows without an entity
    return pd.DataFrame({"id": np.arange(rows), "t": stamps, "seen": seen, "customer": customer,
                         "y": rng.integers(0, 2, rows)})


def expected_rows(frame: pd.DataFrame, fold: Fold, entity_disjoint: bool) -> tuple[set, set, dict]:
    """The window predicates row by row, in plain Python: the reference for the vectorised code."""
    rows = list(frame.itertuples(index=False))

    def inside(moment, start, end):
        return moment is not pd.NaT and start <= moment < end

    train = {i for i, r in enumerate(rows)
             if inside(r.t, fold.train_start, fold.cutoff) and r.seen is not pd.NaT and r.seen <= fold.cutoff}
    seen_entities = {rows[i].customer for i in train if not pd.isna(rows[i].customer)}

    def keep(r):
        return not (entity_disjoint and not pd.isna(r.customer) and r.customer in seen_entities)

    picked = {age: {i for i, r in enumerate(rows) if inside(r.t, *window) and keep(r)}
              for age, window in fold.windows.items()}
    return train, picked.pop(0), picked


@ROWS
@given(spec=backtest_specs(), as_of=as_of_dates, seed=st.integers(0, 2**32 - 1), rows=st.integers(0, 200),
       margin=st.integers(0, 200), entity_dtype=st.sampled_from(["Int64", "float64", "object"]))
def test_fold_rows_are_exactly_the_window_predicates(spec, as_of, seed, rows, margin, entity_dtype):
    folds = make_folds(spec, as_of)
    edges = sorted({moment for f in folds for w in f.windows.values() for moment in (f.train_start, f.cutoff, *w)})
    frame = random_frame(seed, folds[0].train_start - margin * DAY, as_of + 5 * DAY, rows,
                         max_delay_days=2 * spec.gap_days + 1, edges=edges, entity_dtype=entity_dtype)
    for fold in folds:
        train, test, later = expected_rows(frame, fold, spec.entity_disjoint)
        try:
            got = fold_rows(frame, fold, COLUMNS, spec.entity_disjoint)
        except BacktestError as error:
            assert not train or not test, error
            continue
        assert set(got.train.tolist()) == train and set(got.test.tolist()) == test
        assert {age: set(idx.tolist()) for age, idx in got.later.items()} == later
        stamps, observed = frame["t"].to_numpy(), frame["seen"].to_numpy()
        assert (stamps[got.train] < np.datetime64(fold.cutoff)).all()
        assert (observed[got.train] <= np.datetime64(fold.cutoff)).all()
        assert not set(got.train.tolist()) & set(got.test.tolist())
        if spec.entity_disjoint:
            train_entities = set(frame["customer"].iloc[got.train].dropna())
            scored = np.concatenate([got.test, *got.later.values()]).astype(int)
            assert not train_entities & set(frame["customer"].iloc[scored].dropna())
            all_test = {i for i in range(rows) if frame["t"].iloc[i] is not pd.NaT
                        and fold.test_start <= frame["t"].iloc[i] < fold.test_end}
            assert got.dropped_rows == len(all_test) - len(test)
            assert got.dropped_entities == frame["customer"].iloc[sorted(all_test - test)].nunique()
        else:
            assert got.dropped_rows == got.dropped_entities == 0


def test_entity_disjoint_drops_and_counts_repeat_entities():
    fold = make_folds(BacktestSpec(folds=1, train_days=10, test_days=5, gap_days=2, label_delay_days=1,
                                   staleness_periods=0), datetime(2024, 1, 20))[0]
    stamps = pd.to_datetime(["2024-01-05", "2024-01-06", "2024-01-16", "2024-01-17", "2024-01-18", "2024-01-19"])
    frame = pd.DataFrame({"t": stamps, "seen": stamps + pd.Timedelta(days=1), "customer": [1, 2, 1, 1, 3, None]})
    got = fold_rows(frame, fold, COLUMNS, entity_disjoint=True)
    assert got.train.tolist() == [0, 1] and got.test.tolist() == [4, 5]
    assert (got.dropped_rows, got.dropped_entities) == (2, 1)
    plain = fold_rows(frame, fold, COLUMNS, entity_disjoint=False)
    assert plain.test.tolist() == [2, 3, 4, 5] and plain.dropped_rows == 0


def test_a_fold_does_not_learn_labels_observed_after_its_cutoff():
    fold = make_folds(BacktestSpec(folds=1, train_days=10, test_days=5, gap_days=3, label_delay_days=3,
                                   staleness_periods=0), datetime(2024, 1, 20))[0]
    assert fold.cutoff == datetime(2024, 1, 12)
    stamps = pd.to_datetime(["2024-01-05", "2024-01-10", "2024-01-16"])
    seen = pd.to_datetime(["2024-01-12", "2024-01-13", "2024-01-17"])  # the second one is learnt too late
    got = fold_rows(pd.DataFrame({"t": stamps, "seen": seen}), fold, COLUMNS, entity_disjoint=False)
    assert got.train.tolist() == [0] and got.test.tolist() == [2]


def test_empty_windows_name_the_fold_and_dates():
    fold = make_folds(BacktestSpec(folds=2, train_days=10, test_days=5, gap_days=3, label_delay_days=3),
                      datetime(2024, 1, 20))[1]
    stamps = pd.to_datetime(["2024-01-16"])
    with pytest.raises(BacktestError, match=r"fold 1: .*no training rows .*'t' in \[2023-12-28, 2024-01-12\)"):
        fold_rows(pd.DataFrame({"t": stamps, "seen": stamps}), fold, COLUMNS, entity_disjoint=False)
    stamps = pd.to_datetime(["2024-01-05"])
    with pytest.raises(BacktestError, match=r"fold 1: .*no test rows .*\[2024-01-15, 2024-01-20\)"):
        fold_rows(pd.DataFrame({"t": stamps, "seen": stamps}), fold, COLUMNS, entity_disjoint=False)


def test_bad_columns_are_named():
    fold = make_folds(BacktestSpec(), datetime(2024, 7, 1))[0]
    frame = pd.DataFrame({"t": ["2024-01-01"], "seen": pd.to_datetime(["2024-01-01"])})
    with pytest.raises(BacktestError, match=r"columns.timestamp 't' has dtype"):
        fold_rows(frame, fold, COLUMNS, entity_disjoint=False)
    stamped = frame.assign(t=pd.to_datetime(frame["t"]))
    with pytest.raises(BacktestError, match=r"columns.label_observed_at 'seen' is not a column"):
        fold_rows(stamped.drop(columns="seen"), fold, COLUMNS, entity_disjoint=False)
    stamps = pd.to_datetime(["2023-11-01", "2024-03-10"])
    no_entity = ColumnsSpec(id="id", label="y", timestamp="t", label_observed_at="seen")
    with pytest.raises(BacktestError, match="columns.entity is not set"):
        fold_rows(pd.DataFrame({"t": stamps, "seen": stamps}), fold, no_entity, entity_disjoint=True)


# ------------------------------------------------------------------------------------------
# Staleness curve
# ------------------------------------------------------------------------------------------

def decaying_scores(spec: BacktestSpec, drop_per_age: dict[int, float], base: float = 0.80,
                    higher_is_better: bool = True) -> list[tuple[int, int, float]]:
    """Each fold's score at each age it has, worsening by ``drop_per_age`` (with fold offsets)."""
    scores = []
    for fold in make_folds(spec, datetime(2024, 7, 1)):
        offset = 0.01 * fold.index  # folds differ in difficulty; the paired drop cancels it
        for age in fold.windows:
            loss = drop_per_age[age] if higher_is_better else -drop_per_age[age]
            scores.append((fold.index, age, base + offset - loss))
    return scores


def test_curve_recommends_retraining_before_the_first_breach():
    spec = BacktestSpec(folds=6, test_days=30, gap_days=75, label_delay_days=60, staleness_periods=3)
    scores = decaying_scores(spec, {0: 0.0, 1: 0.005, 2: 0.013, 3: 0.02})
    curve = staleness_curve(scores, higher_is_better=True, tolerance=0.01, test_days=30, gap_days=75, metric="roc_auc")
    assert curve.bounded and curve.exceeded_age == 2 and curve.interval_days == 60
    assert [p.age for p in curve.points] == [0, 1, 2, 3]
    assert [p.folds for p in curve.points] == [6, 5, 4, 3]
    assert [p.age_days for p in curve.points] == [90, 120, 150, 180]
    assert curve.points[2].mean_drop == pytest.approx(0.013) and curve.points[0].mean_drop == 0
    assert curve.points[2].drop_se == pytest.approx(0.0, abs=1e-12)
    assert curve.summary == ("roc_auc drops by 0.013 at age 2 period(s) (150 days, mean over 4 fold(s)) "
                             "> tolerance 0.01: retrain at least every 60 days")


def test_lower_is_better_metrics_drop_when_they_rise():
    spec = BacktestSpec(folds=4, test_days=30, gap_days=90, staleness_periods=3)
    scores = decaying_scores(spec, {0: 0.0, 1: 0.02, 2: 0.03, 3: 0.04}, base=0.3, higher_is_better=False)
    curve = staleness_curve(scores, higher_is_better=False, tolerance=0.01, test_days=30, gap_days=90,
                            metric="log_loss")
    assert curve.points[1].mean_drop == pytest.approx(0.02)
    assert (curve.exceeded_age, curve.interval_days) == (1, 30)


def test_no_breach_gives_a_lower_bound():
    spec = BacktestSpec(folds=5, test_days=30, gap_days=90, staleness_periods=3)
    scores = decaying_scores(spec, {0: 0.0, 1: 0.002, 2: 0.004, 3: 0.003})
    curve = staleness_curve(scores, higher_is_better=True, tolerance=0.01, test_days=30, gap_days=90, metric="roc_auc")
    assert not curve.bounded and curve.exceeded_age is None
    assert curve.interval_days == 120  # ages 0..3 all within tolerance: 4 periods are safe
    assert "stays within tolerance 0.01 up to age 3" in curve.summary and "at least" in curve.summary


def test_a_single_fold_without_later_windows_is_unmeasured():
    curve = staleness_curve([(0, 0, 0.8)], higher_is_better=True, tolerance=0.01, test_days=30, gap_days=90)
    assert (curve.bounded, curve.interval_days) == (False, 30)
    assert "no later window was scored" in curve.summary


def test_drops_are_paired_within_folds():
    # Fold 1 has no age-0 score: its age-1 value counts in the mean, never in the drop.
    scores = [(0, 0, 0.80), (0, 1, 0.78), (1, 1, 0.50), (2, 0, 0.70), (2, 1, float("nan"))]
    curve = staleness_curve(scores, higher_is_better=True, tolerance=0.01, test_days=30, gap_days=90)
    age1 = curve.points[1]
    assert (age1.folds, age1.paired_folds) == (2, 1)
    assert age1.mean == pytest.approx(0.64) and age1.mean_drop == pytest.approx(0.02)
    assert age1.drop_se is None


def test_bad_scores_are_refused():
    with pytest.raises(BacktestError, match="two scores at age 1"):
        staleness_curve([(0, 0, 0.8), (0, 1, 0.7), (0, 1, 0.6)], higher_is_better=True, tolerance=0.01,
                        test_days=30, gap_days=90)
    with pytest.raises(BacktestError, match="no fold has an age-0 score"):
        staleness_curve([(0, 1, 0.7)], higher_is_better=True, tolerance=0.01, test_days=30, gap_days=90)


# ------------------------------------------------------------------------------------------
# Cron intervals
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expression", "days"), [
    ("@hourly", 1 / 24), ("@daily", 1), ("@weekly", 7), ("@monthly", 30.436875), ("@quarterly", 91.310625),
    ("@yearly", 365.2425), ("0 3 1 * *", 30.436875), ("0 3 * * 1", 7), ("0 3 * * *", 1), ("30 2 * * 1-5", 1.4),
    ("*/15 * * * *", 1 / 96), ("0 */6 * * *", 0.25), ("0 0 1 jan,jul *", 182.62125), ("0 0 * * SUN", 7),
    ("0 0 * * 7", 7), ("0 4 1 */3 *", 91.310625),
])
def test_cron_interval_days(expression: str, days: float):
    assert cron_interval_days(expression) == pytest.approx(days)


@pytest.mark.parametrize("expression", ["@once", "0 0 L * *", "0 0 15W * *", "0 0 * * 1#2", "0 0 30 2 *",
                                        "0 0 0 * * *", "every day", "61 * * * *", "0 0 5-1 * *"])
def test_cron_interval_days_unknown(expression: str):
    assert cron_interval_days(expression) is None


@pytest.mark.parametrize("expression", ["0 0 */2 * 1", "0 6 13 * 5", "0 3 1 * *", "15 8 * * 1-5", "0 0 1,15 * *"])
def test_cron_interval_days_agrees_with_croniter(expression: str):
    croniter = pytest.importorskip("croniter").croniter
    start, end = datetime(2001, 1, 1), datetime(2029, 1, 1)  # 28 years: whole weekday/leap-year cycles
    runs = croniter(expression, start - timedelta(seconds=1))
    count = 0
    while runs.get_next(datetime) < end:
        count += 1
    assert cron_interval_days(expression) == pytest.approx((end - start).days / count, rel=1e-3)
