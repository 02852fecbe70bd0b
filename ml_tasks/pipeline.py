"""Stage entry points: manifests (plain dicts) in, manifest out.

These are what the DAG's tasks and the CLI call. Each one resolves the settings, the store
and the spec, turns its inputs into typed manifests, runs one stage and returns the stage's
manifest as a JSON-safe dict (small enough for XCom). The stage logic itself lives in the
stage modules, which know nothing about where their inputs came from.

Kept whole: this is the one module that reads and writes the store (DESIGN.md's rule), so every
stage's entry point is here; each is a few lines of I/O around one stage function and reads on
its own, and splitting them by phase would spread the store access the rule keeps in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ml_tasks.core.manifests import (
    CLI_RUN_ID,
    BacktestManifest,
    EvaluationManifest,
    GateManifest,
    Manifest,
    RegistrationManifest,
    RunPlan,
    SampleManifest,
    SnapshotManifest,
    SplitManifest,
    TrainResult,
    ValidationManifest,
)
from ml_tasks.core.settings import Settings, load_settings
from ml_tasks.core.spec import ModelSpec, load_spec
from ml_tasks.io.store import ArtifactStore, store_from_settings

M = TypeVar("M", bound=Manifest)
log = logging.getLogger(__name__)


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
    return run_plan, _planned_context(run_plan)


def _planned_context(run_plan: RunPlan) -> StageContext:
    """The spec a run was planned with, from its folder, so every later stage runs the same
    recipe: a trainer container whose image holds another copy of the spec (or none), and a
    stage that runs after someone edited the spec file. Runs planned before the plan kept a
    copy read the spec file, as they did then."""
    settings = load_settings()
    store = store_from_settings(settings)
    if store.exists(run_plan.artifacts.spec):
        spec = ModelSpec.model_validate(store.read_json(run_plan.artifacts.spec))
    else:
        spec = load_spec(_local_spec_path(run_plan.spec_path, settings))
    return StageContext(settings=settings, store=store, spec=spec)


def plan_run(spec_path: str, as_of: datetime | str, sample_size: int | None = None,
             candidates: list[str] | None = None, dry_run: bool = False, dag_run_id: str = CLI_RUN_ID,
             trigger: str | None = None) -> dict:
    """Plan a retrain run; ``trigger`` says what started it when a monitor's retrain trigger did."""
    from ml_tasks.core.plan import make_plan
    from ml_tasks.registry.tracking import check_reachable
    from ml_tasks.reporting.notify import load_notify_settings

    ctx = context_for(spec_path)
    # A bad setting, or a service that does not answer, stops the run here, named, in seconds:
    # not after extraction and training, nor after minutes of retries.
    load_notify_settings(ctx.settings.home)
    plan = make_plan(ctx.spec, Path(spec_path), ctx.settings.include_dir, ctx.store.layout, as_of,
                     sample_size=sample_size, candidates=candidates, dry_run=dry_run, dag_run_id=dag_run_id,
                     trigger=trigger)
    check_reachable(ctx.settings)
    ctx.store.write_json(plan.artifacts.spec, ctx.spec.model_dump(mode="json"))  # also proves the store takes writes
    ctx.store.write_json(plan.artifacts.plan, plan.to_xcom())
    return plan.to_xcom()


def extract(plan: dict, warehouse_url: str | None = None) -> dict:
    from ml_tasks.data.extract import extract_snapshot

    run_plan, ctx = _plan(plan)
    snapshot = extract_snapshot(ctx.spec, run_plan, ctx.store, _warehouse(ctx, warehouse_url), ctx.settings.include_dir)
    ctx.store.write_json(run_plan.artifacts.snapshot, snapshot.to_xcom())
    return snapshot.to_xcom()


def _warehouse(ctx: StageContext, warehouse_url: str | None) -> str:
    """``warehouse_url`` comes from the deployment (an Airflow connection) and wins; embedded
    mode falls back to the spec's URL, then REFIT_WAREHOUSE_URL."""
    return warehouse_url or ctx.spec.source.warehouse_url or ctx.settings.warehouse_url


def extraction_source(plan: dict, warehouse_url: str | None = None) -> tuple[str, list[str]]:
    """The warehouse a run's extraction reads (as :func:`extract` picks it) and the planned spec's
    tables there: what the extraction's lineage names as its inputs."""
    _, ctx = _plan(plan)
    return _warehouse(ctx, warehouse_url), list(ctx.spec.source.tables)


def validate(plan: dict, snapshot: dict) -> dict:
    from ml_tasks.data.validate import run_validation

    run_plan, ctx = _plan(plan)
    return run_validation(ctx.spec, run_plan, SnapshotManifest.model_validate(snapshot), ctx.store).to_xcom()


def sample(plan: dict, validation_manifest: dict) -> dict:
    from ml_tasks.data.sample import run_sampling

    run_plan, ctx = _plan(plan)
    return run_sampling(ctx.spec, run_plan, ValidationManifest.model_validate(validation_manifest), ctx.store).to_xcom()


def split(plan: dict, sample_manifest: dict) -> dict:
    from ml_tasks.data.split import run_split

    run_plan, ctx = _plan(plan)
    return run_split(ctx.spec, run_plan, SampleManifest.model_validate(sample_manifest), ctx.store).to_xcom()


def train(plan: dict, split_manifest: dict, candidate: str) -> dict:
    from ml_tasks.training.train import train_candidate

    run_plan, ctx = _plan(plan)
    result = train_candidate(ctx.spec, run_plan, SplitManifest.model_validate(split_manifest), candidate,
                             ctx.store, ctx.settings)
    return result.to_xcom()


def backtest_jobs(plan: dict) -> list[dict]:
    """The mapped backtest tasks' arguments: one ``{"candidate", "folds"}`` each."""
    from ml_tasks.training.backtest import backtest_jobs as jobs

    run_plan, ctx = _plan(plan)
    return jobs(ctx.spec, run_plan, ctx.settings, ctx.store)


def backtest_fold(plan: dict, candidate: str, fold: int) -> dict:
    """One fold's result (``train --fold N``)."""
    return backtest_folds(plan, candidate, [fold])["results"][0]


def backtest_folds(plan: dict, candidate: str, folds: list[int]) -> dict:
    """A backtest job: ``{"candidate", "results"}``, a fold result per fold (``train --folds 0 1``)."""
    from ml_tasks.training.backtest import run_folds

    run_plan, ctx = _plan(plan)
    results = run_folds(ctx.spec, run_plan, candidate, [int(fold) for fold in folds], ctx.store, ctx.settings)
    return {"candidate": candidate, "results": [result.to_xcom() for result in results]}


def backtest_summary(plan: dict, results: list[dict], train_results: list[dict]) -> dict:
    """Every fold gathered; ``results`` holds fold results, or backtest jobs' outputs holding them."""
    from ml_tasks.core.manifests import FoldResult
    from ml_tasks.training.backtest import summarize_backtest

    run_plan, ctx = _plan(plan)
    folds = [fold for result in results for fold in result.get("results", [result])]
    return summarize_backtest(ctx.spec, run_plan, [FoldResult.model_validate(r) for r in folds], ctx.store,
                              ctx.settings, [TrainResult.model_validate(r) for r in train_results]).to_xcom()


def evaluate(plan: dict, split_manifest: dict, results: list[dict]) -> dict:
    from ml_tasks.gating.evaluate import evaluate_candidates

    run_plan, ctx = _plan(plan)
    trained = [TrainResult.model_validate(r) for r in results]
    return evaluate_candidates(ctx.spec, run_plan, SplitManifest.model_validate(split_manifest), trained,
                               ctx.store, ctx.settings).to_xcom()


def gate(plan: dict, evaluation: dict, backtest: dict | None = None) -> dict:
    from ml_tasks.core.columns import CHAMPION
    from ml_tasks.gating.gate import run_gate
    from ml_tasks.training.backtest import champion_recipe

    run_plan, ctx = _plan(plan)
    backtested = BacktestManifest.model_validate(backtest) if backtest else None
    # The recipe the backtest retrained for the champion: with it the fold check knows when the
    # challenger's recipe is the same one (not informative) even if the folds do not tie exactly.
    recipes = None
    if backtested is not None and backtested.champion_recipe_version is not None:
        recipe = champion_recipe(ctx.spec, ctx.settings)
        if recipe is not None and recipe.get("version") == backtested.champion_recipe_version:
            recipes = {CHAMPION: recipe}
    return run_gate(ctx.spec, run_plan, EvaluationManifest.model_validate(evaluation), ctx.store, backtested,
                    recipes=recipes).to_xcom()


def register(plan: dict, validation_manifest: dict, gate_manifest: dict) -> dict:
    """Register a PASS and make it champion; a verdict the spec's ``promotion`` holds for a person
    registers nothing yet (``awaiting_approval``: :func:`apply_approval` finishes it)."""
    from ml_tasks.core.spec import approval_needed
    from ml_tasks.registry.versions import register_challenger

    run_plan, ctx = _plan(plan)
    gate_result = GateManifest.model_validate(gate_manifest)
    registration = register_challenger(
        ctx.spec, run_plan, gate_result,
        ValidationManifest.model_validate(validation_manifest).snapshot_id, run_plan.artifacts.report_html,
        ctx.settings, hold=approval_needed(ctx.spec.promotion, gate_result.verdict, run_plan.dry_run),
    )
    ctx.store.write_json(run_plan.artifacts.registration, registration.to_xcom())
    return registration.to_xcom()


def report(plan: dict, validation_manifest: dict, sample_manifest: dict, split_manifest: dict, evaluation: dict,
           gate_manifest: dict, registration: dict, backtest: dict | None = None,
           warehouse_url: str | None = None) -> dict:
    from ml_tasks.reporting.report import build_report, write_report

    run_plan, ctx = _plan(plan)
    evaluation_manifest = EvaluationManifest.model_validate(evaluation)
    gate_result = GateManifest.model_validate(gate_manifest)
    validation = ValidationManifest.model_validate(validation_manifest)
    # Sections the verdict does not depend on: one that cannot be built (a champion snapshot gone
    # or corrupt, a chart that fails) becomes a warning in the report, never a missing report.
    section_warnings: list[str] = []
    no_calibration: tuple[dict[str, Any] | None, bytes | None] = (None, None)
    calibration, reliability_png = _optional(
        "challenger calibration", lambda: _challenger_calibration(run_plan, ctx.store, gate_result.challenger),
        no_calibration, section_warnings)
    drift = _optional("feature drift against the champion's snapshot",
                      lambda: _champion_drift(ctx, evaluation_manifest, validation), None, section_warnings)
    test_reliability = _optional("reliability on the test rows",
                                 lambda: _test_reliability(ctx, evaluation_manifest, gate_result.challenger), None,
                                 section_warnings)
    shadow = _optional("the shadow model's scores against the champion's",
                       lambda: _shadow_comparison(ctx, validation, warehouse_url), None, section_warnings)
    from ml_tasks.registry.approval import pending_approval

    registered = RegistrationManifest.model_validate(registration)
    content = build_report(
        run_plan, validation, SampleManifest.model_validate(sample_manifest),
        SplitManifest.model_validate(split_manifest), evaluation_manifest, gate_result, registered,
        BacktestManifest.model_validate(backtest) if backtest else None, ctx.spec,
        calibration, reliability_png, drift, test_reliability, section_warnings=section_warnings, shadow=shadow,
        approval=pending_approval(ctx.spec, registered),
    )
    written = write_report(content, run_plan, ctx.store, ctx.settings,
                           gate_result.challenger_model.run_id,
                           ctx.spec.acceptance.alpha)
    from ml_tasks.reporting.notify import load_notify_settings, notify, report_notifications

    # A champion failing its own bars is told on every verdict; a failed gate after it.
    notifications = report_notifications(run_plan.model, content, run_plan.dag_run_id, written.html_uri)
    if notifications:
        notify_settings = load_notify_settings(ctx.settings.home)
        for notification in notifications:
            notify(notification, notify_settings)
    return written.to_xcom()


def approval_form(plan: dict, gate_manifest: dict, registration: dict, report_manifest: dict,
                  report_link: str | None = None) -> dict | None:
    """The approve task's ``subject`` and Markdown ``body`` (verdict, failing reasons, the report's
    link), or None when the run's registration waits for no one (the task then asks nothing)."""
    from ml_tasks.registry.approval import approval_form as form

    run_plan, ctx = _plan(plan)
    return form(ctx.spec, run_plan, GateManifest.model_validate(gate_manifest),
                RegistrationManifest.model_validate(registration), report_manifest["html_uri"], report_link)


def apply_approval(plan: dict, validation_manifest: dict, gate_manifest: dict, registration: dict,
                   answer: dict | None) -> dict:
    """Act on a person's answer to a held promotion: ``Approve`` registers the gate's put-forward
    model and makes it champion (tagged with who and why), ``Reject`` or a timeout leaves the
    champion alone. The decision goes to the run's ``approval.json`` and into its report. Returns
    the registration after it (what the champion Asset announces); a registration that waited
    for no one (``answer`` None) is returned as it was."""
    from ml_tasks.registry.approval import ApprovalAnswer, decide
    from ml_tasks.reporting.report import write_report

    run_plan, ctx = _plan(plan)
    held = RegistrationManifest.model_validate(registration)
    if held.action != "awaiting_approval":
        return held.to_xcom()
    if answer is None:
        raise ValueError(f"run {run_plan.run_key}: its registration waits for an approval, but the approve task "
                         "handed over no answer")
    gate_result = GateManifest.model_validate(gate_manifest)
    given = ApprovalAnswer.from_dict(answer)
    approval = _recorded_approval(ctx, run_plan, given)
    if approval is None:
        approval = decide(ctx.spec, run_plan, gate_result, held,
                          ValidationManifest.model_validate(validation_manifest).snapshot_id,
                          run_plan.artifacts.report_html, given, ctx.settings)
        ctx.store.write_json(run_plan.artifacts.approval, approval.to_xcom())
    ctx.store.write_json(run_plan.artifacts.registration, approval.registration.to_xcom())
    # The report the person read now says what they decided (and the champion after it).
    content = ctx.store.read_json(run_plan.artifacts.report_json)
    content["registration"] = approval.registration.to_xcom()
    content["approval"] = approval.to_xcom()
    write_report(content, run_plan, ctx.store, ctx.settings, gate_result.challenger_model.run_id,
                 ctx.spec.acceptance.alpha)
    log.info("run %s: %s by %s (%s); registry: %s", run_plan.run_key, approval.decision, approval.by or "nobody",
             approval.reason, approval.registration.action)
    return approval.registration.to_xcom()


def _recorded_approval(ctx: StageContext, run_plan: RunPlan, answer: Any) -> Any:
    """The run's recorded decision when it was made on this very answer (a retry of the task after
    the registry moved): its registration says what the first try did, e.g. ``approved``."""
    from ml_tasks.core.manifests import ApprovalManifest

    if not ctx.store.exists(run_plan.artifacts.approval):
        return None
    recorded = ApprovalManifest.model_validate(ctx.store.read_json(run_plan.artifacts.approval))
    same = (recorded.decision, recorded.by, recorded.at) == (answer.decision, answer.by, answer.at)
    return recorded if same else None


def _shadow_comparison(ctx: StageContext, validation: ValidationManifest, warehouse_url: str | None) -> dict | None:
    """The latest scoring run's shadow model against its champion, on the rows whose labels this
    run's snapshot holds; None when that run scored no shadow model."""
    from ml_tasks.core.manifests import ScoringManifest
    from ml_tasks.scoring.shadow import compare_shadow, labelled_ids, read_scores

    latest = ctx.store.layout.latest_scoring(ctx.spec.name)
    if ctx.spec.scoring is None or not ctx.store.exists(latest):
        return None
    scoring = ScoringManifest.model_validate(ctx.store.read_json(latest))
    if scoring.shadow is None:
        return None
    url, columns = _warehouse(ctx, warehouse_url), ctx.spec.columns
    snapshot = ctx.store.read_frame(validation.snapshot.uri, columns=[columns.id, columns.label])
    return compare_shadow(scoring, read_scores(url, scoring.served.table, scoring.run_key),
                          read_scores(url, scoring.shadow.table, scoring.run_key),
                          labelled_ids(snapshot, columns.id, columns.label))


def promote(spec_path: str, run_key: str, reason: str, requested_by: str) -> dict:
    """Promote the model an earlier run's gate put forward (found by its run key) after human review.

    That is the gate's choice, not the validation winner: after a fallback it is the baseline.
    """
    from ml_tasks.registry.versions import RegistryActionError, promote_run

    ctx = context_for(spec_path)
    run = ctx.store.layout.run(ctx.spec.name, run_key)
    needed = {name: run.manifest(name) for name in ("plan", "gate", "validation")}
    missing = [uri for uri in needed.values() if not ctx.store.exists(uri)]
    if missing:
        raise RegistryActionError(f"parameter 'run_key': run {run_key!r} of model {ctx.spec.name!r} has no "
                                  f"{', '.join(missing)}; expected a run that reached the gate stage")
    def read(kind: type[M], stage: str) -> M:
        try:
            return kind.model_validate(ctx.store.read_json(needed[stage]))
        except ValueError as exc:  # pydantic's ValidationError, or JSON cut short
            raise RegistryActionError(f"parameter 'run_key': {needed[stage]} of run {run_key!r} is not a {stage} "
                                      f"manifest this release can read: {exc}") from exc

    run_plan, gate_manifest = read(RunPlan, "plan"), read(GateManifest, "gate")
    validation = read(ValidationManifest, "validation")
    registration = promote_run(ctx.spec, run_plan, gate_manifest, validation.snapshot_id,
                               run_plan.artifacts.report_html, reason, requested_by, ctx.settings)
    return registration.to_xcom()


def registry_action(spec_path: str, action: str, run_key: str | None, reason: str, requested_by: str) -> dict:
    """The manual registry DAG's one task: ``promote`` a run's challenger or ``rollback``."""
    from ml_tasks.registry.versions import RegistryActionError

    if action == "rollback":
        return rollback(spec_path, reason, requested_by)
    if action != "promote":
        raise RegistryActionError(f"parameter 'action': expected 'promote' or 'rollback', got {action!r}")
    if not run_key:
        raise RegistryActionError("parameter 'run_key': promote needs the run key of the run whose gated model to "
                                  "promote")
    return promote(spec_path, run_key, reason, requested_by)


def rollback(spec_path: str, reason: str, requested_by: str) -> dict:
    """Move ``champion`` back to ``previous``."""
    from ml_tasks.registry.versions import rollback as registry_rollback

    ctx = context_for(spec_path)
    return registry_rollback(ctx.spec, reason, requested_by, ctx.settings).to_xcom()


def scoring_parity(spec_path: str, as_of: datetime | str, days: int | None = None) -> dict:
    """Whether the scoring query computes every feature as the training query does, over the
    ``days`` (default: the source's ``window_days``) before ``as_of`` (CLI ``check-scoring``)."""
    from ml_tasks.core.plan import parse_as_of
    from ml_tasks.scoring.parity import check_feature_parity

    ctx = context_for(spec_path)
    end = parse_as_of(as_of)
    return check_feature_parity(ctx.spec, ctx.settings.include_dir, _warehouse(ctx, None),
                                end - timedelta(days=days or ctx.spec.source.window_days), end).to_dict()


def plan_scoring(spec_path: str, as_of: datetime | str, dag_run_id: str = CLI_RUN_ID) -> dict:
    """Plan a batch-scoring run of the interval ending at ``as_of``: its run key and the champion
    (and shadow) version it scores with, pinned so that a retry tags its rows the same way."""
    from ml_tasks.scoring.plan import gated_challenger, make_scoring_plan

    ctx = context_for(spec_path)
    latest = ctx.store.layout.latest_report(ctx.spec.name)
    verdict = ctx.store.read_json(latest) if ctx.store.exists(latest) else None
    report = (ctx.store.read_json(verdict["json_uri"]) if verdict and verdict.get("verdict") == "FAIL"
              and ctx.store.exists(verdict["json_uri"]) else None)
    plan = make_scoring_plan(ctx.spec, Path(spec_path), ctx.store.layout, as_of, ctx.settings, dag_run_id,
                             gated=gated_challenger(verdict, report))
    ctx.store.write_json(plan.artifacts.plan, plan.to_xcom())
    return plan.to_xcom()


def score(plan: dict, warehouse_url: str | None = None) -> dict:
    """Score a planned interval into the destination table(s); the manifest is recorded under the
    run's folder and as the model's latest scoring."""
    from ml_tasks.core.manifests import ScoringPlan
    from ml_tasks.scoring.parity import check_key
    from ml_tasks.scoring.score import score_interval

    scoring_plan = ScoringPlan.model_validate(plan)
    ctx = context_for(scoring_plan.spec_path)
    # The features check runs once per champion and pair of queries; later runs reuse its record
    # (one that found no differing feature: it raises otherwise). Its inputs are fixed by the key.
    check_uri = ctx.store.layout.feature_check(ctx.spec.name, check_key(ctx.spec, ctx.settings.include_dir,
                                                                        scoring_plan.champion.version))
    passed = ctx.store.read_json(check_uri) if ctx.store.exists(check_uri) else None
    manifest = score_interval(ctx.spec, scoring_plan, _warehouse(ctx, warehouse_url), ctx.settings.include_dir,
                              ctx.settings, passed_check=passed)
    if passed is None and manifest.feature_check and "skipped" not in manifest.feature_check:
        ctx.store.write_json(check_uri, manifest.feature_check)
    ctx.store.write_json(manifest.uri, manifest.to_xcom())
    ctx.store.write_json(ctx.store.layout.latest_scoring(ctx.spec.name), manifest.to_xcom())
    return manifest.to_xcom()


def score_all(spec_path: str, as_of: datetime | str, dag_run_id: str = CLI_RUN_ID) -> dict:
    """Plan and score in this process: the scoring DAG's path without Airflow (CLI ``score``)."""
    return score(plan_scoring(spec_path, as_of, dag_run_id))


def monitor(spec_path: str, as_of: datetime | str, dag_run_id: str = CLI_RUN_ID,
            warehouse_url: str | None = None) -> dict:
    """Measure the champion on the rows whose labels matured since its as-of, decide which retrain
    triggers fire, and append the health record to the store (the monitor DAG's task; CLI ``monitor``)."""
    from ml_tasks.core.plan import PlanError, parse_as_of
    from ml_tasks.core.spec import monitoring_section
    from ml_tasks.monitoring.monitor import assess, champion_scorer, health_record, measure_window, window_batches
    from ml_tasks.monitoring.served_scores import WindowScorer, read_served_scores
    from ml_tasks.registry.tracking import use_store
    from ml_tasks.scoring.plan import scoring_run_key

    ctx = context_for(spec_path)
    monitoring_section(ctx.spec)
    moment = parse_as_of(as_of)
    champion = _monitored_champion(ctx)
    if moment <= champion.as_of:
        raise PlanError(f"param 'as_of': {moment.isoformat()} is not after champion v{champion.version}'s as-of "
                        f"{champion.as_of.isoformat()}; expected a later moment, when new labels can have matured")
    reference = _reference_profile(ctx, champion.snapshot_id)
    use_store(ctx.settings)  # models:/ URIs resolve through the configured registry
    url = _warehouse(ctx, warehouse_url)
    served = None if ctx.spec.scoring is None else read_served_scores(url, ctx.spec.scoring.destination,
                                                                       champion.version)
    scorer = WindowScorer(ctx.spec.columns.id, served, lambda: champion_scorer(ctx.spec, champion.model_uri))
    batches = window_batches(ctx.spec, url, ctx.settings.include_dir, champion.as_of, moment)
    window = measure_window(ctx.spec, batches, reference, scorer)
    health = assess(ctx.spec, champion, reference, window, moment)
    latest, history = _health_history(ctx)
    record = health_record(ctx.spec, champion, health, history, moment, scoring_run_key(moment, champion.as_of),
                           dag_run_id)
    layout = ctx.store.layout
    ctx.store.write_json(layout.health_record(ctx.spec.name, record.run_key), record.to_xcom())
    if latest is None or record.as_of >= latest.as_of:  # a re-run of an older moment leaves the latest alone
        ctx.store.write_json(layout.latest_health(ctx.spec.name), record.to_xcom())
    if record.fired:
        from ml_tasks.reporting.notify import load_notify_settings, notify, retrain_triggered

        notify(retrain_triggered(ctx.spec.name, record.champion_version, record.reasons, dag_run_id),
               load_notify_settings(ctx.settings.home))
    return record.to_xcom()


def health(spec_path: str | Path) -> dict:
    """The latest health record and the trend of the newest ones (what ``status`` shows)."""
    from ml_tasks.monitoring.health import trend

    latest, history = _health_history(context_for(spec_path))
    return {"latest": latest.to_xcom() if latest else None, "trend": trend(history)}


def _health_history(ctx: StageContext) -> tuple[Any, list[Any]]:
    """The latest :class:`~ml_tasks.monitoring.health.HealthRecord` (or None) and every one, oldest first."""
    from ml_tasks.monitoring.health import read_history, read_latest

    return read_latest(ctx.store, ctx.spec.name), read_history(ctx.store, ctx.spec.name)


def _monitored_champion(ctx: StageContext) -> Any:
    """The champion with its as-of, training snapshot, registered test metrics and recommended
    interval (the last two from the manifests of the run that gated it, when they are in the store)."""
    from ml_tasks.core.plan import to_naive_utc
    from ml_tasks.monitoring.monitor import Champion
    from ml_tasks.registry.versions import RegistryError, get_champion
    from ml_tasks.scoring.plan import NoChampionError

    spec = ctx.spec
    info = get_champion(ctx.settings, spec.registry_name)
    if info is None:
        raise NoChampionError(f"registered model {spec.registry_name!r} has no 'champion' alias, so there is nothing "
                              f"to monitor; expected a champion (a retrain_{spec.name} run whose gate passed)")
    as_of = info.tags.get("refit.as_of")
    if not as_of:
        raise RegistryError(f"champion v{info.version} of {spec.registry_name!r} has no tag 'refit.as_of'; expected "
                            "the as-of date of the run that registered it (a version Refit registered)")
    run_key, candidate = info.tags.get("refit.run_key"), info.tags.get("refit.candidate")
    registered: dict[str, float] = {}
    interval = None
    if run_key and candidate:
        run = ctx.store.layout.run(spec.name, run_key)
        if ctx.store.exists(run.evaluation):
            evaluation = EvaluationManifest.model_validate(ctx.store.read_json(run.evaluation))
            registered = next((dict(s.metrics) for s in evaluation.candidates if s.name == candidate), {})
        if ctx.store.exists(run.backtest):
            curve = BacktestManifest.model_validate(ctx.store.read_json(run.backtest)).staleness.get(candidate) or {}
            interval = curve.get("interval_days")
    return Champion(version=info.version, model_uri=info.model_uri, as_of=to_naive_utc(as_of),
                    snapshot_id=info.tags.get("refit.snapshot_id"), registered_metrics=registered,
                    recommended_interval_days=interval)


def _reference_profile(ctx: StageContext, snapshot_id: str | None) -> Any:
    """The champion's training snapshot binned (:mod:`ml_tasks.monitoring.profile`): read from the store
    when an earlier monitor run built it, else built batch by batch from the snapshot and kept; None
    when the snapshot is gone (drift is then not measured)."""
    from ml_tasks.monitoring.profile import PARQUET_OPTIONS, Profile, build_profile

    if snapshot_id is None:
        return None
    spec, layout = ctx.spec, ctx.store.layout
    kept = layout.drift_profile(spec.name, snapshot_id)
    if ctx.store.exists(kept):
        return Profile.model_validate(ctx.store.read_json(kept))
    data = layout.snapshot_data(spec.name, snapshot_id)
    if not ctx.store.exists(data):
        log.warning("monitor %s: the champion's snapshot %s is not in the store; drift is not measured", spec.name,
                    snapshot_id)
        return None
    with ctx.store.parquet_file(data, **PARQUET_OPTIONS) as parquet:
        names = set(parquet.schema_arrow.names)
        numeric = [c for c in spec.features.numeric if c in names]
        categorical = [c for c in spec.features.categorical if c in names]
        columns = [*numeric, *categorical, spec.columns.label]
        profile = build_profile(lambda: parquet.iter_batches(batch_size=65_536, columns=columns),
                                parquet.metadata.num_rows, numeric, categorical, spec.columns.label)
    ctx.store.write_json(kept, profile.to_xcom())
    return profile


T = TypeVar("T")


def _optional(section: str, build: Callable[[], T], fallback: T, warnings: list[str]) -> T:
    """``build()``, or ``fallback`` with a warning naming the section and the error when it fails."""
    try:
        return build()
    except Exception as exc:  # an optional section must never cost the report
        log.warning("report section %r left out: %s", section, exc, exc_info=True)
        warnings.append(f"{section}: left out ({type(exc).__name__}: {exc})")
        return fallback


def _test_reliability(ctx: StageContext, evaluation: EvaluationManifest, challenger: str) -> bytes:
    """Reliability of the challenger and the champion on the same test rows."""
    from ml_tasks.core.columns import CHAMPION_COLUMN
    from ml_tasks.evaluation.charts import reliability_diagram_png

    frame = ctx.store.read_frame(evaluation.predictions_uri)
    y, w = frame["label"].to_numpy(), frame["weight"].to_numpy()
    curves = {f"challenger {challenger}": (y, frame[f"p_{challenger}"].to_numpy(), w)}
    if CHAMPION_COLUMN in frame and evaluation.champion is not None:
        curves[evaluation.champion.name] = (y, frame[CHAMPION_COLUMN].to_numpy(), w)
    return reliability_diagram_png(curves, bins=ctx.spec.calibration.ece_bins, title="Reliability on the test rows")


def _champion_drift(ctx: StageContext, evaluation: EvaluationManifest, validation: ValidationManifest) -> dict | None:
    """PSI of each feature between the champion's training snapshot and this run's."""
    from ml_tasks.data.drift import feature_drift
    from ml_tasks.registry.tracking import use_store

    if evaluation.champion_version is None:
        return None
    tags = use_store(ctx.settings).get_model_version(ctx.spec.registry_name, evaluation.champion_version).tags
    snapshot_id = tags.get("refit.snapshot_id")
    uri = ctx.store.layout.snapshot_data(ctx.spec.name, snapshot_id) if snapshot_id else None
    if uri is None or not ctx.store.exists(uri):
        return None
    features = ctx.spec.features.all
    reference = ctx.store.read_frame(uri, columns=features)
    current = ctx.store.read_frame(validation.snapshot.uri, columns=features)
    return {"champion_snapshot": snapshot_id, "features": feature_drift(reference, current, features)}


def _challenger_calibration(plan: RunPlan, store: ArtifactStore, challenger: str) -> tuple[dict | None, bytes | None]:
    """The challenger's calibration summary and reliability diagram, from its train result."""
    uri = plan.artifacts.train_result(challenger)
    calibration = TrainResult.model_validate(store.read_json(uri)).calibration if store.exists(uri) else {}
    png_uri = calibration.get("reliability_uri")
    return (calibration or None), (store.read_bytes(png_uri) if png_uri and store.exists(png_uri) else None)


def run_all(spec_path: str, as_of: datetime | str, **plan_options) -> dict:
    """Every stage in order in this process: the DAG's path without Airflow (CLI ``run``).

    Returns the report's manifest plus ``stage_seconds``: each stage's wall time in this process
    (``bench/bench_dag.py`` sets them beside the Airflow task instances' durations)."""
    seconds: dict[str, float] = {}

    def timed(stage: str, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return work()
        finally:
            seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started

    plan = timed("plan", lambda: plan_run(spec_path, as_of, **plan_options))
    snapshot = timed("extract", lambda: extract(plan))
    validation_manifest = timed("validate", lambda: validate(plan, snapshot))
    sample_manifest = timed("sample", lambda: sample(plan, validation_manifest))
    split_manifest = timed("split", lambda: split(plan, sample_manifest))
    results = [timed("train", partial(train, plan, split_manifest, name)) for name in plan["candidates"]]
    folds = [timed("backtest", partial(backtest_folds, plan, job["candidate"], job["folds"]))
             for job in timed("backtest", lambda: backtest_jobs(plan))]
    backtest = timed("backtest", lambda: backtest_summary(plan, folds, results))
    evaluation = timed("evaluate", lambda: evaluate(plan, split_manifest, results))
    gate_manifest = timed("gate", lambda: gate(plan, evaluation, backtest))
    registration = timed("register", lambda: register(plan, validation_manifest, gate_manifest))
    reported = timed("report", lambda: report(plan, validation_manifest, sample_manifest, split_manifest, evaluation,
                                              gate_manifest, registration, backtest))
    return {**reported, "stage_seconds": {stage: round(s, 3) for stage, s in seconds.items()}}
