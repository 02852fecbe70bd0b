"""Retrain DAGs: one per model spec in ``include/models/``, built by :func:`build_retrain_dag`.

The DAG is the list of stages; every task calls one ``ml_tasks`` function and passes small
manifests (URIs, counts, hashes, metrics) through XCom. mlflow is imported only inside tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Param, get_current_context, task

from ml_tasks.core.spec import SAMPLE_SIZES, ModelSpec
from refit_airflow.approval import approval_tasks
from refit_airflow.assets import announce_champion, retrain_schedule, trigger_reasons
from refit_airflow.connections import warehouse_url
from refit_airflow.dag_ids import retrain_dag_id
from refit_airflow.lineage import extraction_lineage, registration_lineage
from refit_airflow.run_moment import run_as_of
from refit_airflow.spec_dags import dags_per_spec, spec_dag
from refit_airflow.trainer import trainer_task

# mlflow's logging set-up otherwise replaces the handlers of Airflow's task logs.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")


def _params(spec: ModelSpec) -> dict[str, Param]:
    """The manual-trigger form: typed and bounded, so the UI rejects bad values before a run."""
    return {
        "as_of": Param(None, type=["null", "string"], format="date",
                       description="Train on data up to this date (UTC). Empty: the run's logical date."),
        "sample_size": Param(spec.sampling.size, type="integer", minimum=SAMPLE_SIZES[0], maximum=SAMPLE_SIZES[1],
                             description="Rows in the stratified training sample."),
        "candidates": Param(spec.candidate_names, type="array", minItems=1, uniqueItems=True,
                            items={"type": "string", "enum": spec.candidate_names},
                            description="Candidates to train (the baseline is always trained)."),
        "dry_run": Param(False, type="boolean", description="Gate and report, but never touch the registry."),
    }


def build_retrain_dag(spec_path: Path, spec: ModelSpec) -> DAG:
    with spec_dag(
        spec, "retrain", retrain_dag_id(spec.name), __doc__,
        description=spec.description or f"Retrain {spec.name}",
        # Its cron, or also the monitor's retrain-trigger Asset when the spec has a monitoring section.
        schedule=retrain_schedule(spec.schedule, spec.registry_name, monitored=spec.monitoring is not None),
        params=_params(spec),
    ) as dag:

        @task
        def plan() -> dict:
            from ml_tasks import pipeline

            context = get_current_context()
            params, run = context["params"], context["dag_run"]
            return pipeline.plan_run(str(spec_path), run_as_of(context), sample_size=params["sample_size"],
                                     candidates=list(params["candidates"]), dry_run=params["dry_run"],
                                     dag_run_id=run.run_id, trigger=trigger_reasons(context))

        @task
        def extract(run_plan: dict) -> dict:
            from ml_tasks import pipeline

            url = warehouse_url()
            snapshot = pipeline.extract(run_plan, warehouse_url=url)
            extraction_lineage(run_plan, snapshot, url)  # warehouse tables -> snapshot, when OpenLineage is on
            return snapshot

        @task
        def validate(run_plan: dict, snapshot: dict) -> dict:
            from ml_tasks import pipeline

            return pipeline.validate(run_plan, snapshot)

        @task
        def sample(run_plan: dict, validation_manifest: dict) -> dict:
            from ml_tasks import pipeline

            return pipeline.sample(run_plan, validation_manifest)

        @task
        def split(run_plan: dict, sample_manifest: dict) -> dict:
            from ml_tasks import pipeline

            return pipeline.split(run_plan, sample_manifest)

        @task
        def candidates(run_plan: dict) -> list[str]:
            # Mapping needs a task whose return value is the list to map over.
            return run_plan["candidates"]

        @task
        def backtest_jobs(run_plan: dict, results) -> list[dict]:
            # After training: each job retrains the recipe (parameters) its candidate's tuning chose.
            from ml_tasks import pipeline

            return pipeline.backtest_jobs(run_plan)

        @task
        def backtest_summary(run_plan: dict, fold_results, results) -> dict:
            from ml_tasks import pipeline

            return pipeline.backtest_summary(run_plan, list(fold_results), list(results))

        @task
        def evaluate(run_plan: dict, split_manifest: dict, results) -> dict:
            from ml_tasks import pipeline

            return pipeline.evaluate(run_plan, split_manifest, list(results))

        @task
        def gate(run_plan: dict, evaluation: dict, backtest: dict) -> dict:
            from ml_tasks import pipeline

            return pipeline.gate(run_plan, evaluation, backtest)

        @task
        def register(run_plan: dict, validation_manifest: dict, gate_manifest: dict) -> dict:
            from ml_tasks import pipeline

            registration = pipeline.register(run_plan, validation_manifest, gate_manifest)
            registration_lineage(validation_manifest, registration)  # snapshot -> model version, likewise
            return registration

        @task
        def report(run_plan, validation_manifest, sample_manifest, split_manifest, evaluation, gate_manifest,
                   registration, backtest) -> dict:
            from ml_tasks import pipeline

            return pipeline.report(run_plan, validation_manifest, sample_manifest, split_manifest, evaluation,
                                   gate_manifest, registration, backtest, warehouse_url=warehouse_url())

        run_plan = plan()
        snapshot = extract(run_plan)
        checked = validate(run_plan, snapshot)  # commits the snapshot only if every check passes
        sampled = sample(run_plan, checked)
        splits = split(run_plan, sampled)
        # A local process or the GPU trainer image, as REFIT_TRAINER_MODE says; the same command.
        trained = trainer_task(spec, task_id="train", plan=run_plan, split=splits).expand(
            candidate=candidates(run_plan))
        # One mapped task per candidate and group of folds (as many as a task start is worth): in parallel.
        folds = trainer_task(spec, task_id="backtest", plan=run_plan).expand_kwargs(
            backtest_jobs(run_plan, trained.output))
        backtested = backtest_summary(run_plan, folds.output, trained.output)
        evaluation = evaluate(run_plan, splits, trained.output)
        verdict = gate(run_plan, evaluation, backtested)
        registration = register(run_plan, checked, verdict)
        reported = report(run_plan, checked, sampled, splits, evaluation, verdict, registration, backtested)
        if spec.promotion != "auto":
            # A verdict the spec holds for a person waits in the approve task's form, after the report.
            registration = approval_tasks(spec, run_plan, checked, verdict, registration, reported)
        announce_champion(spec.registry_name)(registration)  # the champion Asset, only when the alias moved
    return dag


# One DAG per spec; a spec that does not load becomes a placeholder DAG that names its file and field.
globals().update(dags_per_spec(build_retrain_dag, retrain_dag_id, kind="retrain"))
