"""Manual registry actions, one DAG per model spec: promote a reviewed challenger, or roll back.

Triggered from the Airflow UI's form (no schedule). ``promote`` registers the challenger of the
run named by ``run_key`` (the run folder shown in its gating report) and makes it champion even
though its gate failed; ``rollback`` points ``champion`` back at ``previous``. Either needs a
reason, recorded as a tag of the model version with who asked.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Param, get_current_context, task

from ml_tasks.core.spec import ModelSpec
from refit_airflow.assets import announce_champion
from refit_airflow.dag_ids import registry_dag_id
from refit_airflow.spec_dags import dags_per_spec, spec_dag

os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")


def build_registry_dag(spec_path: Path, spec: ModelSpec) -> DAG:
    with spec_dag(
        spec, "registry", registry_dag_id(spec.name), __doc__,
        description=f"Promote a reviewed challenger of {spec.name}, or roll its champion back",
        # Retries (the shared task defaults) are safe: promotion is idempotent per run, and a
        # rollback refuses to run twice.
        schedule=None,
        params={
            "action": Param("promote", type="string", enum=["promote", "rollback"],
                            description="promote: make the run's challenger champion; rollback: champion <- previous."),
            "run_key": Param(None, type=["null", "string"], pattern=r"^\d{8}T\d{6}-[0-9a-f]{8}$",
                             description="promote only: the run key from the gating report "
                                         "(e.g. 20240901T000000-1a2b3c4d)."),
            "reason": Param("", type="string", minLength=10,
                            description="Why (recorded on the model version for the audit trail)."),
        },
    ) as dag:

        @task
        def apply() -> dict:
            from ml_tasks import pipeline

            context = get_current_context()
            params, run = context["params"], context["dag_run"]
            requested_by = getattr(run, "triggering_user_name", None) or "airflow"
            return pipeline.registry_action(str(spec_path), params["action"], params.get("run_key"), params["reason"],
                                            requested_by)

        announce_champion(spec.registry_name)(apply())  # a promotion or rollback moves the champion
    return dag


# One DAG per spec; a spec that does not load becomes a placeholder DAG that names its file and field.
globals().update(dags_per_spec(build_registry_dag, registry_dag_id, kind="registry"))
