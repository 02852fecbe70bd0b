"""Health records as a monitor run writes them, for the tests of what reads them back (the history
reader, the champion-health page's table and chart, the page in the Airflow UI)."""

from __future__ import annotations

from datetime import datetime, timedelta

from ml_tasks.io.store import ArtifactStore
from ml_tasks.monitoring.health import Health, HealthRecord, TriggerState
from ml_tasks.monitoring.live import DecayJudgement, MetricInterval
from ml_tasks.scoring.plan import scoring_run_key

CHAMPION_AS_OF = datetime(2024, 3, 1)
MAX_PSI = 0.2


def monitor_record(model: str, day: int, *, live: float | None = 0.78, half_width: float = 0.03,
                   registered: float = 0.80, psi: dict[str, float] | None = None, drift: str = "ok",
                   version: str = "1", rows: int = 400) -> HealthRecord:
    """The record of a monitor run ``day`` days after the champion's as-of: live ROC AUC ``live`` (None:
    not judged) ± ``half_width``, PSI per feature, and the drift trigger ``fired``, ``cooling`` or ``ok``."""
    as_of = CHAMPION_AS_OF + timedelta(days=day)
    psi = {"income": 0.04, "age": 0.01} if psi is None else psi
    decay = None if live is None else DecayJudgement(
        live=MetricInterval(metric="roc_auc", value=live, low=live - half_width, high=live + half_width,
                            se=half_width / 1.645, rows=rows, alpha=0.05),
        registered=registered, margin=0.02, decayed=live + half_width < registered - 0.02, reason="judged")
    top = max(psi.values(), default=0.0)
    triggers = [
        TriggerState(name="drift", tripped=drift != "ok", fired=drift == "fired",
                     reason=f"max PSI {top:.3f} vs {MAX_PSI}", value=top, threshold=MAX_PSI),
        TriggerState(name="volume", tripped=False, fired=False, reason=f"{rows} new rows", value=float(rows),
                     threshold=5000.0),
    ]
    health = Health(rows=rows, label_rate=0.12, reference_label_rate=0.10, reference_rows=4000, null_rates={},
                    psi=psi, decay=decay, decay_note="too few rows" if decay is None else None,
                    age_days=float(day))
    return HealthRecord(model=model, registry_name=model, run_key=scoring_run_key(as_of, CHAMPION_AS_OF),
                        as_of=as_of, window_start=CHAMPION_AS_OF, dag_run_id=f"scheduled__{as_of:%Y-%m-%d}",
                        champion_version=version, champion_snapshot="feedfacecafebeef", health=health,
                        triggers=triggers, written_at=as_of + timedelta(hours=1))


def write_history(store: ArtifactStore, records: list[HealthRecord]) -> None:
    """Each record in its model's history, the newest also as its ``latest.json`` (as ``pipeline.monitor``)."""
    layout = store.layout
    for record in records:
        store.write_json(layout.health_record(record.model, record.run_key), record.to_xcom())
    for model in {record.model for record in records}:
        newest = max((record for record in records if record.model == model), key=lambda record: record.as_of)
        store.write_json(layout.latest_health(model), newest.to_xcom())
