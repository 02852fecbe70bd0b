"""Stage entry points: manifests (plain dicts) in, manifest out.

These are what the DAG's tasks and the CLI call. Each one resolves the settings, the store
and the spec, turns its inputs into typed manifests, runs one stage and returns the stage's
manifest as a JSON-safe dict (small enough for XCom). The stage logic itself lives in the
stage modules, which know nothing about where their inputs came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ml_tasks.manifests import (
    EvaluationManifest, GateManifest, RegistrationManifest, RunPlan, SampleManifest, SnapshotManifest,
    SplitManifest, TrainResult, ValidationManifest,
)
from ml_tasks.settings import Settings, load_settings
from ml_tasks.spec import ModelSpec, load_spec
from ml_tasks.storage import ArtifactStore, store_from_settings


@dataclass(frozen=True)
class StageContext:
    settings: Settings
    store: ArtifactStore
    spec: ModelSpec


def context_for(spec_path: str | Path) -> StageContext:
    settings = load_settings()
    return StageContext(settings=settings, store=store_from_settings(settings),
                        spec=load_spec(_local_spec_path(spec_path, settings)))


def _local_spec_path(spec_path: str | Path, settings: Settings) -> Path:
    """The plan records the spec's path on the machine that planned the run; a trainer
    container keeps ``include/`` elsewhere, so there the spec is found by name."""
    path = Path(spec_path)
    if not path.exists() and (settings.models_dir / path.name).exists():
        return settings.models_dir / path.name
    return path


def _plan(plan: dict) -> tuple[RunPlan, StageContext]:
    run_plan = RunPlan.model_validate(plan)
    return run_plan, context_for(run_plan.spec_path)


def plan_run(spec_path: str, as_of: datetime | str, sample_size: int | None = None,
             candidates: list[str] | None = None, dry_run: bool = False, dag_run_id: str = "cli") -> dict:
    from ml_tasks.plan import make_plan

    ctx = context_for(spec_path)
    plan = make_plan(ctx.spec, Path(spec_path), ctx.settings.include_dir, ctx.store, as_of,
                     sample_size=sample_size, candidates=candidates, dry_run=dry_run, dag_run_id=dag_run_id)
    ctx.store.write_json(f"{plan.run_prefix}/plan.json", plan.to_xcom())
    return plan.to_xcom()


def extract(plan: dict, warehouse_url: str | None = None) -> dict:
    """``warehouse_url`` comes from the deployment (an Airflow connection) and wins; embedded
    mode falls back to the spec's URL, then REFIT_WAREHOUSE_URL."""
    from ml_tasks.extract import extract_snapshot

    run_plan, ctx = _plan(plan)
    url = warehouse_url or ctx.spec.source.warehouse_url or ctx.settings.warehouse_url
    snapshot = extract_snapshot(ctx.spec, run_plan, ctx.store, url, ctx.settings.include_dir)
    ctx.store.write_json(f"{run_plan.run_prefix}/snapshot.json", snapshot.to_xcom())
    return snapshot.to_xcom()


def validate(plan: dict, snapshot: dict) -> dict:
    from ml_tasks.validate import run_validation

    run_plan, ctx = _plan(plan)
    return run_validation(ctx.spec, run_plan, SnapshotManifest.model_validate(snapshot), ctx.store).to_xcom()


def sample(plan: dict, validation_manifest: dict) -> dict:
    from ml_tasks.sample import run_sampling

    run_plan, ctx = _plan(plan)
    return run_sampling(ctx.spec, run_plan, ValidationManifest.model_validate(validation_manifest), ctx.store).to_xcom()


def split(plan: dict, sample_manifest: dict) -> dict:
    from ml_tasks.split import run_split

    run_plan, ctx = _plan(plan)
    return run_split(ctx.spec, run_plan, SampleManifest.model_validate(sample_manifest), ctx.store).to_xcom()


def train(plan: dict, split_manifest: dict, candidate: str) -> dict:
    from ml_tasks.train import train_candidate

    run_plan, ctx = _plan(plan)
    result = train_candidate(ctx.spec, run_plan, SplitManifest.model_validate(split_manifest), candidate,
                             ctx.store, ctx.settings)
    return result.to_xcom()


def evaluate(plan: dict, split_manifest: dict, results: list[dict]) -> dict:
    from ml_tasks.evaluate import evaluate_candidates

    run_plan, ctx = _plan(plan)
    trained = [TrainResult.model_validate(r) for r in results]
    return evaluate_candidates(ctx.spec, run_plan, SplitManifest.model_validate(split_manifest), trained,
                               ctx.store, ctx.settings).to_xcom()


def gate(plan: dict, evaluation: dict) -> dict:
    from ml_tasks.gate import run_gate

    run_plan, ctx = _plan(plan)
    return run_gate(ctx.spec, run_plan, EvaluationManifest.model_validate(evaluation), ctx.store).to_xcom()


def register(plan: dict, validation_manifest: dict, evaluation: dict, gate_manifest: dict) -> dict:
    from ml_tasks.registry import register_challenger
    from ml_tasks.report import report_uris

    run_plan, ctx = _plan(plan)
    registration = register_challenger(
        ctx.spec, run_plan, EvaluationManifest.model_validate(evaluation), GateManifest.model_validate(gate_manifest),
        ValidationManifest.model_validate(validation_manifest).snapshot_id, report_uris(run_plan)[0], ctx.settings,
    )
    ctx.store.write_json(f"{run_plan.run_prefix}/registration.json", registration.to_xcom())
    return registration.to_xcom()


def report(plan: dict, validation_manifest: dict, sample_manifest: dict, split_manifest: dict, evaluation: dict,
           gate_manifest: dict, registration: dict) -> dict:
    from ml_tasks.report import build_report, write_report

    run_plan, ctx = _plan(plan)
    evaluation_manifest = EvaluationManifest.model_validate(evaluation)
    content = build_report(
        run_plan, ValidationManifest.model_validate(validation_manifest),
        SampleManifest.model_validate(sample_manifest), SplitManifest.model_validate(split_manifest),
        evaluation_manifest, GateManifest.model_validate(gate_manifest),
        RegistrationManifest.model_validate(registration),
    )
    return write_report(content, run_plan, ctx.store, ctx.settings, evaluation_manifest.challenger_run_id,
                        ctx.spec.acceptance.champion.alpha).to_xcom()


def run_all(spec_path: str, as_of: datetime | str, **plan_options) -> dict:
    """Every stage in order in this process: the DAG's path without Airflow (CLI ``run``)."""
    plan = plan_run(spec_path, as_of, **plan_options)
    snapshot = extract(plan)
    validation_manifest = validate(plan, snapshot)
    sample_manifest = sample(plan, validation_manifest)
    split_manifest = split(plan, sample_manifest)
    results = [train(plan, split_manifest, name) for name in plan["candidates"]]
    evaluation = evaluate(plan, split_manifest, results)
    gate_manifest = gate(plan, evaluation)
    registration = register(plan, validation_manifest, evaluation, gate_manifest)
    return report(plan, validation_manifest, sample_manifest, split_manifest, evaluation, gate_manifest, registration)
