"""What the champion-health page shows of a model's health records: table rows and chart geometry.

Pure functions of :class:`~ml_tasks.monitoring.health.HealthRecord` lists (no store, no web
framework): the Airflow UI's view (``plugins/refit_airflow/health_view.py``) reads the records
with :func:`~ml_tasks.monitoring.health.read_history` and renders these in a Jinja template as a
table and an inline SVG, which needs no JavaScript and no asset from the network.

The chart has two panels over the runs' as-of times (oldest left): the live metric with its
interval as a band and the registered metric as a step line (it changes when the champion does),
and the largest PSI of any feature with the drift trigger's threshold. A run in which a trigger
fired is marked across both panels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ml_tasks.monitoring.health import Health, HealthRecord

#: The SVG's size and the plot area's margins, in user units (the SVG scales to the page's width).
WIDTH = 760.0
PANEL_HEIGHT = 170.0
LEFT, RIGHT, TOP, BOTTOM = 58.0, 36.0, 22.0, 12.0  # the right margin keeps the last date label inside
AXIS_HEIGHT = 26.0
MAX_X_LABELS = 6


@dataclass(frozen=True)
class TriggerCell:
    name: str
    #: ``fired``, ``cooling`` or ``ok`` (:attr:`~ml_tasks.monitoring.health.TriggerState.status`).
    status: str
    reason: str


@dataclass(frozen=True)
class HealthRow:
    """One monitor run as the table shows it."""

    run_key: str
    as_of: str
    dag_run_id: str
    champion_version: str
    rows: int
    metric: str | None
    live: float | None
    low: float | None
    high: float | None
    registered: float | None
    decayed: bool
    #: Why the decay was not judged, when it was not.
    decay_note: str | None
    max_psi: float | None
    psi_feature: str | None
    label_rate: float | None
    reference_label_rate: float | None
    triggers: tuple[TriggerCell, ...]
    fired: tuple[str, ...]


def top_psi(health: Health) -> tuple[str, float] | None:
    """The feature with the largest PSI and its value (the store sorts JSON keys: it is found, not assumed first)."""
    return max(health.psi.items(), key=lambda item: item[1], default=None)


def _moment(record: HealthRecord) -> str:
    as_of = record.as_of
    return f"{as_of:%Y-%m-%d}" if (as_of.hour, as_of.minute) == (0, 0) else f"{as_of:%Y-%m-%d %H:%M}"


def table_rows(records: Sequence[HealthRecord]) -> list[HealthRow]:
    """The table's rows, newest first."""
    rows = []
    for record in sorted(records, key=lambda r: r.as_of, reverse=True):
        health, decay = record.health, record.health.decay
        top = top_psi(health)
        rows.append(HealthRow(
            run_key=record.run_key, as_of=_moment(record), dag_run_id=record.dag_run_id,
            champion_version=record.champion_version, rows=health.rows,
            metric=None if decay is None else decay.live.metric,
            live=None if decay is None else decay.live.value,
            low=None if decay is None else decay.live.low,
            high=None if decay is None else decay.live.high,
            registered=None if decay is None else decay.registered,
            decayed=decay is not None and decay.decayed,
            decay_note=health.decay_note if decay is None else None,
            max_psi=None if top is None else top[1], psi_feature=None if top is None else top[0],
            label_rate=health.label_rate, reference_label_rate=health.reference_label_rate,
            triggers=tuple(TriggerCell(state.name, state.status, state.reason) for state in record.triggers),
            fired=tuple(record.fired),
        ))
    return rows


@dataclass(frozen=True)
class ChartPoint:
    """One run's value in a panel, with its interval (the live metric's) when it has one."""

    x: float
    y: float
    run_key: str
    #: What a pointer over the point shows (the SVG ``<title>``).
    label: str
    fired: bool
    #: The interval's ends (both ``y`` for a value without one).
    y_low: float
    y_high: float


@dataclass(frozen=True)
class Panel:
    """One panel: its series, band and reference line in SVG coordinates (``"x,y x,y …"``)."""

    name: str
    title: str
    top: float
    height: float
    points: tuple[ChartPoint, ...]
    line: str
    #: The interval band's polygon ("" with fewer than two runs: each point then has its bar).
    band: str
    #: The reference: the registered metric or the drift threshold, one step per run ("" when none).
    reference: str
    reference_label: str
    y_ticks: tuple[tuple[float, str], ...]


@dataclass(frozen=True)
class FiredMark:
    """A run in which a trigger fired: a vertical mark across the panels."""

    x: float
    run_key: str
    label: str


@dataclass(frozen=True)
class HealthChart:
    width: float
    height: float
    left: float
    right: float
    panels: tuple[Panel, ...]
    x_ticks: tuple[tuple[float, str], ...]
    axis_y: float
    fired: tuple[FiredMark, ...]


def _x_positions(records: Sequence[HealthRecord]) -> list[float]:
    """Each run's x, proportional to its as-of time (one run: the middle)."""
    first, last = records[0].as_of, records[-1].as_of
    span = (last - first).total_seconds()
    if span <= 0:
        return [LEFT + (WIDTH - LEFT - RIGHT) / 2] * len(records)
    return [LEFT + (record.as_of - first).total_seconds() / span * (WIDTH - LEFT - RIGHT) for record in records]


def _nice_step(span: float) -> float:
    """A tick step of 1, 2 or 5 times a power of ten that cuts ``span`` into about four."""
    raw = span / 4
    power = 10 ** math.floor(math.log10(raw))
    return next(factor * power for factor in (1, 2, 5, 10) if factor * power >= raw)


def _domain(values: Sequence[float], floor_zero: bool = False) -> tuple[float, float]:
    low, high = min(values), max(values)
    if floor_zero:
        low = 0.0
    pad = (high - low) * 0.08 or max(abs(high) * 0.05, 0.01)
    return (low if floor_zero else low - pad), high + pad


def _ticks(low: float, high: float, scale: Callable[[float], float]) -> tuple[tuple[float, str], ...]:
    step = _nice_step(high - low)
    digits = max(0, -math.floor(math.log10(step)))
    first = math.ceil(low / step - 1e-9)
    values = [index * step for index in range(first, math.floor(high / step + 1e-9) + 1)]
    return tuple((round(scale(value), 2), f"{value:.{digits}f}") for value in values)


def _polyline(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.2f},{y:.2f}" for x, y in points)


def _steps(xs: Sequence[float], ys: Sequence[float | None]) -> str:
    """A step line through each run's value, from halfway to the previous run to halfway to the
    next (the first from the plot's left edge, the last to its right); a run without one breaks it."""
    if not any(y is not None for y in ys):
        return ""
    edges = [LEFT, *[(a + b) / 2 for a, b in zip(xs, xs[1:], strict=False)], WIDTH - RIGHT]
    points: list[tuple[float, float]] = []
    for index, y in enumerate(ys):
        if y is not None:
            points += [(edges[index], y), (edges[index + 1], y)]
    return _polyline(points)


def _panel(name: str, title: str, top: float, records: Sequence[HealthRecord], xs: Sequence[float],
           values: Sequence[tuple[float, float, float] | None], references: Sequence[float | None],
           reference_label: str, describe: Callable[[HealthRecord], str], floor_zero: bool = False) -> Panel:
    """A panel of ``values`` (value, low, high per run, None where a run has none) over ``records``."""
    seen = [v for triple in values if triple is not None for v in triple] + [r for r in references if r is not None]
    low, high = _domain(seen, floor_zero) if seen else (0.0, 1.0)
    bottom = top + PANEL_HEIGHT - BOTTOM

    def scale(value: float) -> float:
        return bottom - (value - low) / (high - low) * (PANEL_HEIGHT - TOP - BOTTOM)

    points = tuple(ChartPoint(x=round(x, 2), y=round(scale(triple[0]), 2), run_key=record.run_key,
                              label=describe(record), fired=bool(record.fired),
                              y_low=round(scale(triple[1]), 2), y_high=round(scale(triple[2]), 2))
                   for record, x, triple in zip(records, xs, values, strict=True) if triple is not None)
    band = ""
    if len(points) > 1 and any(p.y_low != p.y_high for p in points):
        band = _polyline([(p.x, p.y_high) for p in points] + [(p.x, p.y_low) for p in reversed(points)])
    return Panel(name=name, title=title, top=top, height=PANEL_HEIGHT, points=points,
                 line=_polyline([(p.x, p.y) for p in points]), band=band,
                 reference=_steps(xs, [None if r is None else scale(r) for r in references]),
                 reference_label=reference_label, y_ticks=_ticks(low, high, scale))


def _live(record: HealthRecord) -> tuple[float, float, float] | None:
    decay = record.health.decay
    return None if decay is None else (decay.live.value, decay.live.low, decay.live.high)


def _psi(record: HealthRecord) -> tuple[float, float, float] | None:
    top = top_psi(record.health)
    return None if top is None else (top[1], top[1], top[1])


def _drift_threshold(record: HealthRecord) -> float | None:
    return next((state.threshold for state in record.triggers if state.name == "drift"), None)


def _x_ticks(records: Sequence[HealthRecord], xs: Sequence[float]) -> tuple[tuple[float, str], ...]:
    every = max(1, math.ceil(len(records) / MAX_X_LABELS))
    return tuple((round(x, 2), f"{record.as_of:%Y-%m-%d}")
                 for index, (record, x) in enumerate(zip(records, xs, strict=True)) if index % every == 0)


def health_chart(records: Sequence[HealthRecord]) -> HealthChart | None:
    """The chart of ``records`` (any order; drawn oldest left), or None when there are none."""
    if not records:
        return None
    ordered = sorted(records, key=lambda r: r.as_of)
    xs = _x_positions(ordered)
    metric = next((r.health.decay.live.metric for r in reversed(ordered) if r.health.decay is not None), None)

    def live_label(record: HealthRecord) -> str:
        decay = record.health.decay
        assert decay is not None
        return (f"{record.as_of:%Y-%m-%d} · {decay.live.metric} {decay.live.value:.4f} "
                f"[{decay.live.low:.4f}, {decay.live.high:.4f}] · registered {decay.registered:.4f}"
                + (f" · fired: {', '.join(record.fired)}" if record.fired else ""))

    def psi_label(record: HealthRecord) -> str:
        top = top_psi(record.health)
        assert top is not None
        return f"{record.as_of:%Y-%m-%d} · max PSI {top[1]:.3f} ({top[0]})"

    panels = (
        _panel("live", f"live {metric or 'metric'} with its interval; registered metric dashed", 0.0, ordered, xs,
               [_live(r) for r in ordered],
               [None if r.health.decay is None else r.health.decay.registered for r in ordered],
               "registered", live_label),
        _panel("psi", "largest feature PSI; drift threshold dashed", PANEL_HEIGHT, ordered, xs,
               [_psi(r) for r in ordered], [_drift_threshold(r) for r in ordered], "drift threshold", psi_label,
               floor_zero=True),
    )
    axis_y = 2 * PANEL_HEIGHT
    fired = tuple(FiredMark(x=round(x, 2), run_key=record.run_key,
                            label=f"{record.as_of:%Y-%m-%d}: {'; '.join(record.reasons)}")
                  for record, x in zip(ordered, xs, strict=True) if record.fired)
    return HealthChart(width=WIDTH, height=axis_y + AXIS_HEIGHT, left=LEFT, right=WIDTH - RIGHT, panels=panels,
                       x_ticks=_x_ticks(ordered, xs), axis_y=axis_y, fired=fired)
