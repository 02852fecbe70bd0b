"""Monitor DAGs: one per model spec with a ``monitoring:`` section, built by :func:`build_monitor_dag`.

``monitor → announce_retrain``. ``monitor`` reads, with the spec's point-in-time query, the rows
whose labels matured since the champion's as-of date (up to the run's as-of moment: the trigger
form's ``as_of``, else the logical date, else when the run was due), scores them with the
champion, measures drift against its training snapshot, volume and age, evaluates the spec's
triggers with their cool-down and appends the health record to the artifact store
(``python -m ml_tasks status`` shows it). ``announce_retrain`` emits the Asset
``refit://<registry_name>/retrain-trigger`` with the reasons in its extra when a trigger fired,
and is skipped otherwise; the ``retrain_<model>`` DAG is scheduled on its cron or that Asset.

Scheduled by ``monitoring.schedule``. mlflow is imported only inside tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, get_current_context, task

from ml_tasks.core.spec import ModelSpec
from refit_airflow.assets import announce_retrain
from refit_airflow.connections import warehouse_url
from refit_airflow.dag_ids import monitor_dag_id
from refit_airflow.run_moment import as_of_param, run_as_of
from refit_airflow.spec_dags import dags_per_spec, spec_dag

# mlflow's logging set-up otherwise replaces the handlers of Airflow's task logs.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")


def build_monitor_dag(spec_path: Path, spec: ModelSpec) -> DAG | None:
    if spec.monitoring is None:
        return None
    with spec_dag(
        spec, "monitor", monitor_dag_id(spec.name), __doc__,
        description=f"Champion health of {spec.name}; queues retrain_{spec.name} when a trigger fires",
        schedule=spec.monitoring.schedule,
        params={"as_of": as_of_param("Monitor the labels matured up to this date")},
    ) as dag:

        @task
        def monitor() -> dict:
            from ml_tasks import pipeline

            context = get_current_context()
            return pipeline.monitor(str(spec_path), run_as_of(context), dag_run_id=context["dag_run"].run_id,
                                    warehouse_url=warehouse_url())

        announce_retrain(spec.registry_name)(monitor())
    return dag


# One DAG per spec with a monitoring section; such a spec that does not load becomes a placeholder DAG.
globals().update(dags_per_spec(build_monitor_dag, monitor_dag_id, kind="monitor", section="monitoring"))
