"""What one monitor run measured and decided: the health record, and the history of them.

Each monitor run writes one :class:`HealthRecord` (a few kilobytes of JSON) to
``monitoring/<model>/history/<run_key>.json`` and as ``monitoring/<model>/latest.json``
(:class:`ml_tasks.core.artifacts.StoreLayout`). The history is what the cool-down reads (when
did each trigger last fire?), what ``python -m ml_tasks status`` turns into a trend and what the
champion-health page of the Airflow UI tabulates and charts; :func:`read_history` and
:func:`models_with_health` are the one way to read it back.

A trigger has two states in a record: *tripped*, its condition holds on this run's data, and
*fired*, it tripped and is not cooling down, so the run asks for a retrain. Only fired triggers
reach the retrain Asset's event.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from statistics import NormalDist
from typing import TypedDict

from ml_tasks.core.manifests import Manifest
from ml_tasks.io.store import ArtifactStore
from ml_tasks.monitoring.live import DecayJudgement
from ml_tasks.reporting.gate_results import MODEL_PATTERN


class TriggerState(Manifest):
    """One configured trigger's outcome on one run."""

    name: str
    tripped: bool
    fired: bool
    reason: str
    value: float | None = None
    threshold: float | None = None

    @property
    def status(self) -> str:
        """``fired``, ``cooling`` (tripped but held back by the cool-down) or ``ok``."""
        return "fired" if self.fired else ("cooling" if self.tripped else "ok")


class Health(Manifest):
    """What a monitor run measured on the rows whose labels matured since the champion's as-of."""

    rows: int
    label_rate: float | None
    reference_label_rate: float | None
    #: Rows of the champion's training snapshot (the label-rate shift's standard error needs both sizes).
    reference_rows: int = 0
    #: Feature → share of missing values in the new rows.
    null_rates: dict[str, float]
    #: Data-quality findings (a feature's null rate above the limit), one sentence each.
    quality: list[str] = []
    #: Feature → PSI against the champion's training snapshot, largest first.
    psi: dict[str, float]
    decay: DecayJudgement | None = None
    #: Why the decay was not judged (too few rows or classes, no registered metric), if it was not.
    decay_note: str | None = None
    age_days: float
    recommended_interval_days: int | None = None
    #: Rows whose score was read from the scoring table (what the champion served), and rows the
    #: champion scored in the monitor run because the table lacked them.
    served_rows: int = 0
    scored_rows: int = 0

    @property
    def label_rate_shift(self) -> float | None:
        if self.label_rate is None or self.reference_label_rate is None:
            return None
        return abs(self.label_rate - self.reference_label_rate)

    def label_rate_shift_bound(self, alpha: float) -> float | None:
        """The shift's one-sided lower bound at ``alpha``: ``|Δ| − z·se`` with the two rates' binomial
        standard errors; a shift a few hundred rows show only by chance stays below zero."""
        shift = self.label_rate_shift
        if shift is None or self.label_rate is None or self.reference_label_rate is None or not self.rows:
            return None
        variance = self.label_rate * (1 - self.label_rate) / self.rows
        if self.reference_rows:
            variance += self.reference_label_rate * (1 - self.reference_label_rate) / self.reference_rows
        return shift - float(NormalDist().inv_cdf(1 - alpha)) * math.sqrt(variance)


class HealthRecord(Manifest):
    """One monitor run: whose health, of which window, what was measured and which triggers fired."""

    model: str
    registry_name: str
    run_key: str
    as_of: datetime
    #: The champion's as-of: the new rows are those of [window_start, as_of) with mature labels.
    window_start: datetime
    dag_run_id: str
    champion_version: str
    champion_snapshot: str | None
    health: Health
    triggers: list[TriggerState]
    written_at: datetime

    @property
    def fired(self) -> list[str]:
        return [state.name for state in self.triggers if state.fired]

    @property
    def reasons(self) -> list[str]:
        """One line per fired trigger: what the retrain Asset's event carries."""
        return [f"{state.name}: {state.reason}" for state in self.triggers if state.fired]


def _checked(model: str) -> str:
    """``model`` if it is a model name: one from a URL never reaches the store as a path elsewhere."""
    if not MODEL_PATTERN.match(model):
        raise ValueError(f"parameter 'model': {model!r} is not a model name (letters, digits, '_', '.', '-')")
    return model


def read_history(store: ArtifactStore, model: str, limit: int | None = None) -> list[HealthRecord]:
    """``model``'s health records, oldest first by as-of: every one, or only the ``limit`` newest
    (only those are read). Raises ValueError naming the parameter for a string that is no model name."""
    # Names sort by as-of (a run key starts with its as-of stamp): the newest are the last names.
    uris = store.list(store.layout.health_history(_checked(model)), suffix=".json")
    if limit is not None:
        uris = uris[-limit:] if limit > 0 else []
    return sorted((HealthRecord.model_validate(store.read_json(uri)) for uri in uris), key=lambda r: r.as_of)


def read_latest(store: ArtifactStore, model: str) -> HealthRecord | None:
    """The latest monitor run's record of ``model`` (``latest.json``), or None before the first run."""
    uri = store.layout.latest_health(_checked(model))
    return HealthRecord.model_validate(store.read_json(uri)) if store.exists(uri) else None


def models_with_health(store: ArtifactStore) -> list[str]:
    """Models with at least one health record, sorted (a model with only a drift profile has none)."""
    layout = store.layout
    root = layout.monitoring("").rstrip("/") + "/"  # no model name: the folder every model's lies in
    found = {(uri.removeprefix(root).partition("/")[0], uri.rpartition("/")[0])
             for uri in store.list(root, suffix=".json")}
    return sorted({model for model, folder in found
                   if MODEL_PATTERN.match(model) and folder == layout.health_history(model)})


def last_fired(history: Iterable[HealthRecord], before: datetime) -> dict[str, datetime]:
    """When each trigger last fired in runs whose as-of is earlier than ``before`` (a re-run of the
    same moment, or an earlier one, never cools itself down)."""
    fired: dict[str, datetime] = {}
    for record in history:
        if record.as_of >= before:
            continue
        for name in record.fired:
            fired[name] = max(fired.get(name, record.as_of), record.as_of)
    return fired


class TrendRow(TypedDict):
    """One monitor run in the trend ``status`` shows."""

    as_of: str
    champion_version: str
    rows: int
    metric: str | None
    live: float | None
    interval: list[float] | None
    max_psi: float | None
    fired: list[str]


def trend(history: list[HealthRecord], limit: int = 10) -> list[TrendRow]:
    """The newest ``limit`` records, oldest first, as the rows ``status`` shows."""
    rows: list[TrendRow] = []
    for record in sorted(history, key=lambda r: r.as_of)[-limit:]:
        health = record.health
        decay = health.decay
        rows.append(TrendRow(
            as_of=record.as_of.isoformat(), champion_version=record.champion_version, rows=health.rows,
            metric=None if decay is None else decay.live.metric,
            live=None if decay is None else round(decay.live.value, 4),
            interval=None if decay is None else [round(decay.live.low, 4), round(decay.live.high, 4)],
            max_psi=max(health.psi.values(), default=None),
            fired=record.fired,
        ))
    return rows


def format_health(latest: HealthRecord | None, rows: list[TrendRow]) -> list[str]:
    """The lines ``status`` adds: the latest health, then the trend (:func:`trend`'s rows)."""
    if latest is None:
        return ["  health: no monitor run yet"]
    health = latest.health
    lines = [f"  health (as of {latest.as_of:%Y-%m-%d}, champion v{latest.champion_version}): "
             f"{health.rows} new labelled rows since {latest.window_start:%Y-%m-%d}"]
    if health.served_rows:
        lines.append(f"    scores: {health.served_rows} as served (scoring table), {health.scored_rows} scored by the "
                     "champion in this run")
    judged_by_trigger = any(state.name == "decay" for state in latest.triggers)
    if health.decay is not None and not judged_by_trigger:
        lines.append(f"    {health.decay.reason}")
    elif health.decay is None and health.decay_note:
        lines.append(f"    decay not judged: {health.decay_note}")
    if health.psi:
        # The store writes JSON with sorted keys: the largest PSI is found, not assumed first.
        feature, value = max(health.psi.items(), key=lambda item: item[1])
        lines.append(f"    max PSI {value:.3f} ({feature}); label rate {_number(health.label_rate, 3)} vs "
                     f"{_number(health.reference_label_rate, 3)} at training")
    lines += [f"    quality: {finding}" for finding in health.quality]
    for state in latest.triggers:
        mark = "FIRED" if state.fired else ("tripped, cooling down" if state.tripped else "ok")
        lines.append(f"    trigger {state.name}: {mark} · {state.reason}")
    if len(rows) > 1:
        lines.append("  trend (oldest first): as of · rows · live metric · max PSI · fired")
        lines += [f"    {row['as_of'][:10]} · {row['rows']} · {_number(row['live'], 4)} · "
                  f"{_number(row['max_psi'], 3)} · {', '.join(row['fired']) or '—'}" for row in rows]
    return lines


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
