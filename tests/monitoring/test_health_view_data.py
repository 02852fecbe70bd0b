"""What the champion-health page reads and draws: the health history read back from the store by
model name, the table's rows and the chart's geometry (pure functions of the records)."""

from __future__ import annotations

import pytest

from ml_tasks import pipeline
from ml_tasks.io.store import ArtifactStore, store_from_settings
from ml_tasks.monitoring.health import models_with_health, read_history, read_latest
from ml_tasks.monitoring.health_page import LEFT, RIGHT, WIDTH, health_chart, table_rows
from tests.conftest import DEMO_SPEC
from tests.monitoring.health_records import MAX_PSI, monitor_record, write_history


def points_of(polyline: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in polyline.split())]


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def test_the_history_is_read_back_oldest_first_and_the_limit_reads_only_the_newest(store):
    write_history(store, [monitor_record("m", day) for day in (30, 10, 20)])
    assert [r.as_of.day for r in read_history(store, "m")] == [11, 21, 31]  # days after 2024-03-01
    # An unreadable old record does not matter to a reader of the two newest: only those are read.
    oldest = store.layout.health_record("m", read_history(store, "m")[0].run_key)
    store.write_text(oldest, "{not json")
    assert [r.as_of.day for r in read_history(store, "m", limit=2)] == [21, 31]
    assert read_history(store, "m", limit=0) == []
    assert read_latest(store, "m").as_of.day == 31
    assert read_history(store, "other") == [] and read_latest(store, "other") is None


@pytest.mark.parametrize("name", ["../reports", "a/b", "", "credit default"])
def test_a_string_that_is_no_model_name_never_reaches_the_store(store, name):
    with pytest.raises(ValueError, match="parameter 'model'"):
        read_history(store, name)
    with pytest.raises(ValueError, match="parameter 'model'"):
        read_latest(store, name)


def test_only_models_with_a_health_record_are_listed(store):
    write_history(store, [monitor_record("credit_default", 5), monitor_record("churn", 5), monitor_record("churn", 6)])
    store.write_json(store.layout.drift_profile("profiled_only", "ab12"), {"bins": []})  # a profile, no run yet
    store.write_json(store.layout.latest_report("gated_only"), {})
    assert models_with_health(store) == ["churn", "credit_default"]
    assert models_with_health(ArtifactStore(str(store.root) + "-empty")) == []


def test_status_reads_the_history_through_the_same_reader(refit_home):
    write_history(store_from_settings(refit_home),
                  [monitor_record("credit_default", day, drift="fired" if day == 20 else "ok") for day in (20, 10)])
    shown = pipeline.health(DEMO_SPEC)
    assert shown["latest"]["as_of"].startswith("2024-03-21")
    assert [row["as_of"][:10] for row in shown["trend"]] == ["2024-03-11", "2024-03-21"]
    assert [row["fired"] for row in shown["trend"]] == [[], ["drift"]]


def test_table_rows_are_newest_first_with_the_interval_largest_psi_and_every_trigger_state():
    records = [monitor_record("m", 10, live=0.8, psi={"age": 0.31, "income": 0.05}, drift="fired"),
               monitor_record("m", 20, live=None, drift="cooling", psi={"age": 0.25, "zip": 0.4}),
               monitor_record("m", 30, live=0.7, half_width=0.02, registered=0.79, version="2")]
    newest, middle, oldest = table_rows(records)
    assert [newest.as_of, middle.as_of, oldest.as_of] == ["2024-03-31", "2024-03-21", "2024-03-11"]
    assert (newest.metric, newest.live, newest.low, newest.high, newest.registered, newest.champion_version) == (
        "roc_auc", 0.7, pytest.approx(0.68), pytest.approx(0.72), 0.79, "2")
    assert newest.decayed and not oldest.decayed
    assert (oldest.psi_feature, oldest.max_psi) == ("age", 0.31)  # the largest, not the first key
    assert (middle.psi_feature, middle.max_psi) == ("zip", 0.4)
    assert middle.live is None and middle.decay_note == "too few rows"
    assert [(t.name, t.status) for t in oldest.triggers] == [("drift", "fired"), ("volume", "ok")]
    assert [(t.name, t.status) for t in middle.triggers] == [("drift", "cooling"), ("volume", "ok")]
    assert oldest.fired == ("drift",) and middle.fired == () and newest.fired == ()
    assert (oldest.rows, oldest.label_rate, oldest.reference_label_rate) == (400, 0.12, 0.10)


def test_the_chart_has_one_point_per_run_over_time_with_the_band_reference_and_fired_marks():
    records = [monitor_record("m", day, live=live, registered=0.8, drift="fired" if day == 40 else "ok",
                              psi={"income": psi})
               for day, live, psi in [(40, 0.72, 0.35), (10, 0.8, 0.02), (20, 0.78, 0.05)]]
    chart = health_chart(records)
    live, drift = chart.panels
    assert len(live.points) == len(drift.points) == 3
    # Oldest left, spaced by time: days 10, 20, 40 are one gap and then two.
    xs = [p.x for p in live.points]
    assert xs[0] == pytest.approx(LEFT) and xs[-1] == pytest.approx(WIDTH - RIGHT)
    assert xs[2] - xs[1] == pytest.approx(2 * (xs[1] - xs[0]), abs=0.05)
    assert [p.run_key for p in live.points] == [r.run_key for r in sorted(records, key=lambda r: r.as_of)]
    # SVG y grows downward: a higher metric is drawn higher; the first run's live metric equals the
    # registered one, so it sits on the reference line, which spans the whole plot.
    assert live.points[0].y < live.points[1].y < live.points[2].y
    reference = points_of(live.reference)
    assert [y for _, y in reference] == [pytest.approx(live.points[0].y, abs=0.01)] * 6
    assert reference[0][0] == LEFT and reference[-1][0] == WIDTH - RIGHT
    # The band runs along the interval's upper ends and back along the lower ones.
    band = points_of(live.band)
    assert len(band) == 6 and all(p.y_high < p.y < p.y_low for p in live.points)
    assert [y for _, y in band[:3]] == [p.y_high for p in live.points]
    # Max PSI with the drift threshold: only the run above it is above the line, and it is marked fired.
    threshold_y = points_of(drift.reference)[0][1]
    assert [p.y < threshold_y for p in drift.points] == [False, False, True]
    assert [p.fired for p in drift.points] == [False, False, True]
    assert [(mark.x, mark.run_key) for mark in chart.fired] == [(xs[2], live.points[2].run_key)]
    assert "drift:" in chart.fired[0].label and f"vs {MAX_PSI}" in chart.fired[0].label
    # Every tick is inside its panel.
    for panel in chart.panels:
        assert panel.y_ticks and all(panel.top <= y <= panel.top + panel.height for y, _ in panel.y_ticks)


def test_a_run_without_a_live_metric_has_no_live_point_but_keeps_its_psi_point():
    chart = health_chart([monitor_record("m", 10), monitor_record("m", 20, live=None)])
    live, drift = chart.panels
    assert len(live.points) == 1 and len(drift.points) == 2
    assert len(points_of(live.reference)) == 2  # the registered metric only where the run judged decay


def test_one_run_is_drawn_in_the_middle_with_its_interval_as_a_bar_and_no_runs_as_no_chart():
    chart = health_chart([monitor_record("m", 10)])
    (point,) = chart.panels[0].points
    assert point.x == pytest.approx((LEFT + WIDTH - RIGHT) / 2)
    assert chart.panels[0].band == "" and point.y_high < point.y < point.y_low
    assert chart.panels[0].points[0].run_key == chart.panels[1].points[0].run_key
    assert chart.fired == ()
    assert health_chart([]) is None
