"""Batch-scoring DAGs: one per model spec with a ``scoring:`` section, built by :func:`build_score_dag`.

``plan → score``. ``plan`` resolves the interval ending at the run's as-of moment (the trigger
form's ``as_of``, else the logical date, else when the run was due: a run triggered by the
champion Asset has no logical date) and pins the champion version, and with ``shadow:
latest_challenger`` the shadow version, it scores with. ``score`` streams the interval's rows
from the warehouse, scores them in bounded memory and replaces the interval's rows in the
destination table (the shadow model's in ``<destination>_shadow``). Clearing either task, or
running the interval again, replaces its rows; it never duplicates them.

Scheduled by the spec's ``scoring.schedule`` (cron), by the champion Asset
(``scoring.on_champion``: whenever the champion alias moves), or both; neither: by hand only.
mlflow is imported only inside tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, get_current_context, task

from ml_tasks.core.spec import ModelSpec, ScoringSpec
from refit_airflow.assets import champion_asset
from refit_airflow.connections import warehouse_url
from refit_airflow.dag_ids import score_dag_id
from refit_airflow.run_moment import as_of_param, run_as_of
from refit_airflow.spec_dags import dags_per_spec, spec_dag

# mlflow's logging set-up otherwise replaces the handlers of Airflow's task logs.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")


def score_schedule(scoring: ScoringSpec, registry_name: str) -> str | list[Asset] | AssetOrTimeSchedule | None:
    """The cron, the champion Asset, either of the two, or None (manual runs only)."""
    if not scoring.on_champion:
        return scoring.schedule
    asset = champion_asset(registry_name)
    if scoring.schedule is None:
        return [asset]
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(scoring.schedule, timezone="UTC"), assets=[asset])


def build_score_dag(spec_path: Path, spec: ModelSpec) -> DAG | None:
    if spec.scoring is None:
        return None
    with spec_dag(
        spec, "score", score_dag_id(spec.name), __doc__,
        description=f"Score {spec.name}'s rows with its champion into {spec.scoring.destination}",
        schedule=score_schedule(spec.scoring, spec.registry_name),
        params={"as_of": as_of_param("Score the interval ending at this date")},
    ) as dag:

        @task
        def plan() -> dict:
            from ml_tasks import pipeline

            context = get_current_context()
            return pipeline.plan_scoring(str(spec_path), run_as_of(context), dag_run_id=context["dag_run"].run_id)

        @task
        def score(scoring_plan: dict) -> dict:
            from ml_tasks import pipeline

            return pipeline.score(scoring_plan, warehouse_url=warehouse_url())

        score(plan())
    return dag


# One DAG per spec with a scoring section; such a spec that does not load becomes a placeholder DAG.
globals().update(dags_per_spec(build_score_dag, score_dag_id, kind="score", section="scoring"))
