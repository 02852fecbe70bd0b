"""One monitor run: read the rows whose labels matured since the champion's as-of, measure, decide.

The rows come from the warehouse through the spec's own source query(ies), bound with
``window_start`` = the champion's as-of date and ``as_of`` = the run's moment, so the point-in-time
joins and the label-maturity rule (only labels observed by ``as_of``) are exactly the training
extraction's (:func:`ml_tasks.data.extract.stream_batches`). They stream as Arrow batches and
are never kept: each batch is counted into the reference's bins (PSI), its nulls and labels are
counted, and it gets the champion's scores: those the scoring DAG served, read from its table
where it has them (:mod:`ml_tasks.monitoring.served_scores`), else the champion's own (its
registered pyfunc form). Only the scores and labels are kept, 16 bytes a row, for the metric's
interval.

The store (the reference profile, the registered metrics, the history) is read by
:func:`ml_tasks.pipeline.monitor`, which hands the results here; this module reads only the
warehouse and the registry's model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ml_tasks.core.spec import ModelSpec, MonitoringSpec
from ml_tasks.data.extract import CHUNK_ROWS, stream_batches
from ml_tasks.monitoring.health import Health, HealthRecord, last_fired
from ml_tasks.monitoring.live import judge_decay, live_interval
from ml_tasks.monitoring.profile import Profile, ProfileCounter, psi
from ml_tasks.monitoring.served_scores import Scorer, WindowScorer
from ml_tasks.monitoring.triggers import apply_cooldown, evaluate_triggers


@dataclass(frozen=True)
class Champion:
    """The champion as the monitor needs it: found in the registry and its gating run's manifests."""

    version: str
    model_uri: str
    as_of: datetime
    snapshot_id: str | None
    #: Its test metrics when its run gated it (that run's evaluation), by metric name.
    registered_metrics: dict[str, float] = field(default_factory=dict)
    #: The retraining interval its run's backtest recommended (None: no backtest recorded).
    recommended_interval_days: int | None = None


@dataclass
class WindowStats:
    """What the new rows leave behind: their profile over the reference's bins, null counts, and
    the champion's scores with the labels."""

    rows: int = 0
    nulls: dict[str, int] = field(default_factory=dict)
    profile: Profile | None = None
    labels: list[npt.NDArray[np.float64]] = field(default_factory=list)
    scores: list[npt.NDArray[np.float64]] = field(default_factory=list)
    #: Rows whose score came from the scoring table, and rows the champion scored in this run.
    served_rows: int = 0
    scored_rows: int = 0


def window_batches(spec: ModelSpec, url: str, include_dir: Path, window_start: datetime, as_of: datetime,
                   chunk_rows: int = CHUNK_ROWS, engine: str = "auto") -> Iterator[pa.RecordBatch]:
    """Every source stream's rows of ``[window_start, as_of)`` with labels observed by ``as_of``."""
    params = {"window_start": window_start, "as_of": as_of}
    for stream in spec.source.stream_list:
        yield from stream_batches(spec, stream, params, url, include_dir, chunk_rows, engine)


def measure_window(spec: ModelSpec, batches: Iterable[pa.RecordBatch], reference: Profile | None,
                   scorer: WindowScorer | None) -> WindowStats:
    """One pass over the new rows: counts into the reference's bins, nulls, labels and scores."""
    stats = WindowStats(nulls=dict.fromkeys(spec.features.all, 0))
    # A feature the spec has dropped since the champion's snapshot is in its profile, not in the rows.
    bins = {name: bins for name, bins in (reference.features if reference else {}).items() if name in stats.nulls}
    counter = ProfileCounter(bins, spec.columns.label) if reference is not None else None
    label = spec.columns.label
    for batch in batches:
        if not batch.num_rows:
            continue
        stats.rows += batch.num_rows
        for name in stats.nulls:
            stats.nulls[name] += batch.column(name).null_count
        if counter is not None:
            counter.add(batch)
        if scorer is not None:
            stats.labels.append(np.asarray(batch.column(label).to_numpy(zero_copy_only=False), dtype=float))
            stats.scores.append(scorer(batch))
    stats.profile = counter.profile() if counter is not None else None
    if scorer is not None:
        stats.served_rows, stats.scored_rows = scorer.served_rows, scorer.scored_rows
    return stats


def assess(spec: ModelSpec, champion: Champion, reference: Profile | None, window: WindowStats,
           as_of: datetime) -> Health:
    """The health of the champion on the new rows (no triggers yet)."""
    monitoring = _section(spec)
    current = window.profile
    null_rates = {name: count / window.rows if window.rows else 0.0 for name, count in window.nulls.items()}
    return Health(
        rows=window.rows,
        label_rate=current.positive_rate if current is not None else None,
        reference_label_rate=reference.positive_rate if reference is not None else None,
        reference_rows=reference.rows if reference is not None else 0,
        null_rates=null_rates,
        quality=_quality(spec, monitoring, null_rates, window.rows),
        psi=psi(reference, current) if reference is not None and current is not None and window.rows else {},
        **_decay(spec, monitoring, champion, window),
        served_rows=window.served_rows,
        scored_rows=window.scored_rows,
        age_days=round((as_of - champion.as_of).total_seconds() / 86_400, 3),
        recommended_interval_days=champion.recommended_interval_days,
    )


def _section(spec: ModelSpec) -> MonitoringSpec:
    return spec.monitoring or MonitoringSpec()


def _quality(spec: ModelSpec, monitoring: MonitoringSpec, null_rates: dict[str, float], rows: int) -> list[str]:
    """A sentence per feature whose null rate in the new rows is above its limit."""
    default = monitoring.max_null_rate if monitoring.max_null_rate is not None else spec.validation.max_null_rate
    found = []
    for name, rate in null_rates.items():
        limit = spec.validation.null_rate.get(name, default)
        if rows and rate > limit:
            found.append(f"{name}: {rate:.1%} missing in the new rows (limit {limit:.1%})")
    return found


def _decay(spec: ModelSpec, monitoring: MonitoringSpec, champion: Champion, window: WindowStats) -> dict:
    """``decay`` (the judgement) or ``decay_note`` (why there is none) for :class:`Health`."""
    trigger = monitoring.triggers.decay
    metric, alpha, margin = (trigger.metric, trigger.alpha, trigger.margin) if trigger else ("roc_auc", 0.05, 0.0)
    if not window.scores:
        return {"decay_note": "no new rows were scored"}
    y, p = np.concatenate(window.labels), np.concatenate(window.scores)
    positives, least = int(y.sum()), spec.acceptance.min_class_rows
    if min(positives, len(y) - positives) < least:
        return {"decay_note": f"{positives} positive and {len(y) - positives} negative new rows; needs at least "
                              f"{least} of each (acceptance.min_class_rows)"}
    registered = champion.registered_metrics.get(metric)
    if registered is None:
        return {"decay_note": f"champion v{champion.version} has no registered test {metric} (its run's "
                              "evaluation is not in the store)"}
    return {"decay": judge_decay(live_interval(metric, y, p, alpha), registered, margin)}


def health_record(spec: ModelSpec, champion: Champion, health: Health, history: Iterable[HealthRecord],
                  as_of: datetime, run_key: str, dag_run_id: str) -> HealthRecord:
    """The run's record: its health, every configured trigger, and the cool-down applied."""
    monitoring = _section(spec)
    states = apply_cooldown(evaluate_triggers(monitoring, health), last_fired(history, as_of), as_of,
                            monitoring.cooldown_days)
    return HealthRecord(model=spec.name, registry_name=spec.registry_name, run_key=run_key, as_of=as_of,
                        window_start=champion.as_of, dag_run_id=dag_run_id, champion_version=champion.version,
                        champion_snapshot=champion.snapshot_id, health=health, triggers=states,
                        written_at=datetime.now(UTC).replace(tzinfo=None))


def champion_scorer(spec: ModelSpec, model_uri: str) -> Scorer:
    """Scores with the champion's registered pyfunc model, fed the columns its signature asks for."""
    from ml_tasks.gating.evaluate import signature_frame
    from ml_tasks.registry.pyfunc import load_pyfunc, positive_probability
    from ml_tasks.scoring.score import model_inputs

    model = load_pyfunc(model_uri)
    inputs = model_inputs(model, spec)
    return lambda frame: positive_probability(model, signature_frame(frame, inputs))
