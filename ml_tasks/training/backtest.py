"""The backtest stage: does a candidate win consistently across time, and how fast does it age?

Folds come from :mod:`ml_tasks.data.folds` (walk-forward on event time, a gap of at least the label
delay, labels mature as of each fold's own cutoff). One *job* is one candidate on one or more
folds; the DAG maps the trainer command over the jobs (``python -m ml_tasks train --folds 0 1``),
so folds run in parallel on workers or GPU containers. How many folds a job runs is chosen from
what a fold and a task start cost (:mod:`ml_tasks.training.fold_tasks`, the spec's
``backtest.folds_per_task``): light folds share a process and its one read of the sample, heavy
ones get a task each. For each fold a job:

* retrains the candidate's recipe (family and the parameters its tuning chose in this run) on
  the fold's training rows, with the last part of them (still before the cutoff) for early
  stopping;
* scores it on the fold's test window (age 0) and on the later windows (ages 1..k) without
  retraining: the points of the staleness curve;
* writes ``<run>/backtest/<candidate>/fold-<N>.json``; a retried job finds it and stops.

The champion's recipe (its family and parameters, read from its MLflow run) is backtested on
the same folds as the pseudo-candidate ``champion``, so the comparison is like for like.
:func:`summarize_backtest` gathers the jobs: per-fold metrics of every candidate, the staleness
curve and the recommended retraining interval, logged to MLflow and handed to the gate and the
report.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import timedelta

import numpy as np
import pandas as pd

from ml_tasks.core.columns import CHAMPION, HIGHER_IS_BETTER, WEIGHT
from ml_tasks.core.fault_points import reached
from ml_tasks.core.manifests import BacktestManifest, FoldResult, RunPlan, TrainResult
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import CandidateSpec, ModelSpec
from ml_tasks.data.folds import Fold, fold_rows, make_folds, staleness_curve
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.io.store import ArtifactStore
from ml_tasks.models import build_candidate, feature_frame
from ml_tasks.training.fold_tasks import FoldCost, fold_groups, folds_per_task

#: Share of a fold's training rows (the latest) used for early stopping.
EARLY_STOPPING_SHARE = 0.2


class BacktestError(RuntimeError):
    """A backtest job cannot run; the message names the candidate and fold."""


def backtest_jobs(spec: ModelSpec, plan: RunPlan, settings: Settings, store: ArtifactStore) -> list[dict]:
    """The mapped backtest tasks: ``{"candidate", "folds"}`` for every candidate of the run and the
    champion's recipe, its folds cut into groups of :func:`folds_per_candidate_task`."""
    recipe = champion_recipe(spec, settings)
    names = list(plan.candidates) + ([CHAMPION] if recipe else [])
    fold_seconds = _fold_seconds(plan, store, recipe)
    jobs = []
    for name in names:
        per_task = folds_per_candidate_task(spec, len(names), fold_seconds.get(name), settings)
        jobs += [{"candidate": name, "folds": group} for group in fold_groups(spec.backtest.folds, per_task)]
    return jobs


def folds_per_candidate_task(spec: ModelSpec, jobs: int, fold_seconds: float | None, settings: Settings) -> int:
    """The spec's ``backtest.folds_per_task``, or for ``auto`` the cheapest by the measured costs
    (a candidate with no measured fit gets a task per fold, the safe choice for a heavy one)."""
    chosen = spec.backtest.folds_per_task
    if chosen != "auto":
        return int(chosen)
    if fold_seconds is None:
        return 1
    slots = settings.trainer_slots or os.cpu_count() or 1
    return folds_per_task(jobs, spec.backtest.folds, FoldCost(settings.task_start_s, fold_seconds, slots))


def _fold_seconds(plan: RunPlan, store: ArtifactStore, recipe: dict | None) -> dict[str, float]:
    """Seconds one fold of each candidate should take: one fit of its tuning (a fold trains on at
    most the rows the candidate trained on); the champion's recipe as its family's candidate."""
    seconds: dict[str, float] = {}
    families: dict[str, float] = {}
    for name in plan.candidates:
        uri = plan.artifacts.train_result(name)
        if store.exists(uri):
            trained = TrainResult.model_validate(store.read_json(uri))
            seconds[name] = trained.fit_seconds / max(trained.trials, 1)
            families[trained.family] = max(families.get(trained.family, 0.0), seconds[name])
    if recipe is not None and seconds:
        seconds[CHAMPION] = families.get(recipe["family"], max(seconds.values()))
    return seconds


def champion_recipe(spec: ModelSpec, settings: Settings) -> dict | None:
    """The champion's ``{"family", "params", "version"}`` from its MLflow run, or None."""
    from ml_tasks.registry.tracking import use_store
    from ml_tasks.registry.versions import get_champion

    champion = get_champion(settings, spec.registry_name)
    if champion is None or champion.run_id is None:
        return None
    recipe = use_store(settings).get_run(champion.run_id).data.tags.get("refit.recipe")
    if recipe is None:
        return None  # registered before recipes were recorded: nothing to retrain
    return {**json.loads(recipe), "version": champion.version}


def _recipe(spec: ModelSpec, plan: RunPlan, candidate: str, store: ArtifactStore, settings: Settings) -> dict:
    if candidate == CHAMPION:
        recipe = champion_recipe(spec, settings)
        if recipe is None:
            raise BacktestError(f"backtest job {candidate!r}: no champion with a recorded recipe (tag refit.recipe)")
        try:  # a champion trained by an earlier release may hold a parameter this one refuses
            CandidateSpec(name="champion", family=recipe["family"], params=recipe["params"])
        except ValueError as exc:
            raise BacktestError(f"backtest job {candidate!r}: the recipe of champion version {recipe['version']} "
                                f"(tag refit.recipe) is not one this release can train: {exc}") from None
        return recipe
    spec.candidate(candidate)  # an unknown name fails here, naming the spec's candidates
    uri = plan.artifacts.train_result(candidate)
    if not store.exists(uri):
        raise BacktestError(f"backtest job {candidate!r}: its train result {uri} is missing; the train task runs first")
    trained = TrainResult.model_validate(store.read_json(uri))
    return {"family": trained.family, "params": trained.params}


def plan_folds(spec: ModelSpec, plan: RunPlan):
    """The run's folds: the latest test window ends when its labels are all in (label delay)."""
    labels_complete = plan.as_of - timedelta(days=spec.backtest.label_delay_days)
    return make_folds(spec.backtest, labels_complete, data_start=plan.window_start)


def run_fold(spec: ModelSpec, plan: RunPlan, candidate: str, fold_index: int, store: ArtifactStore,
             settings: Settings) -> FoldResult:
    """Train ``candidate``'s recipe on one fold and score it at every age; idempotent per run."""
    return run_folds(spec, plan, candidate, [fold_index], store, settings)[0]


def run_folds(spec: ModelSpec, plan: RunPlan, candidate: str, fold_indexes: list[int], store: ArtifactStore,
              settings: Settings) -> list[FoldResult]:
    """:func:`run_fold` for each of ``fold_indexes`` in one process: the sample is read once, and a
    fold whose result a retried job already wrote is not trained again."""
    folds = plan_folds(spec, plan)
    for fold_index in fold_indexes:
        if not 0 <= fold_index < len(folds):
            raise BacktestError(f"backtest job {candidate!r}: fold {fold_index} does not exist; "
                                f"expected 0..{len(folds) - 1} (backtest.folds)")
    done = {index: plan.artifacts.fold_result(candidate, index) for index in fold_indexes}
    done = {index: uri for index, uri in done.items() if store.exists(uri)}
    results: list[FoldResult] = []
    frame, recipe = None, None
    for fold_index in fold_indexes:
        if fold_index in done:
            results.append(FoldResult.model_validate(store.read_json(done[fold_index])).model_copy(
                update={"reused": True}))
            continue
        if frame is None:
            reached("backtest.inputs")  # the job is ready to read (bench/bench_cold_start.py times a process to here)
            frame = store.read_frame(plan.artifacts.sample_data)
            recipe = _recipe(spec, plan, candidate, store, settings)
        assert recipe is not None
        results.append(_run_one_fold(spec, plan, candidate, fold_index, folds[fold_index], frame, recipe, store))
    return results


def _run_one_fold(spec: ModelSpec, plan: RunPlan, candidate: str, fold_index: int, fold: Fold,
                  frame: pd.DataFrame, recipe: dict, store: ArtifactStore) -> FoldResult:
    uri = plan.artifacts.fold_result(candidate, fold_index)
    rows = fold_rows(frame, fold, spec.columns, spec.backtest.entity_disjoint)
    model = _fit_on_fold(spec, recipe, frame.iloc[rows.train])
    label = spec.columns.label
    ages = {0: rows.test, **rows.later}
    metrics = {}
    for age, index in sorted(ages.items()):
        part = frame.iloc[index]
        if part[label].nunique() < 2:
            continue  # a window with one class has no ROC AUC; the curve skips that point
        p = model.predict_proba(feature_frame(part, spec.features))[:, 1]
        metrics[str(age)] = compute_metrics(part[label], p, part[WEIGHT])
    result = FoldResult(
        candidate=candidate, fold=fold_index, family=recipe["family"], train_start=fold.train_start,
        cutoff=fold.cutoff, test_start=fold.test_start, test_end=fold.test_end, train_rows=len(rows.train),
        test_rows=len(rows.test), dropped_entity_rows=rows.dropped_rows, metrics_by_age=metrics, reused=False,
        recipe_version=recipe.get("version"),
    )
    store.write_json(uri, result.to_xcom())
    return result


def _fit_on_fold(spec: ModelSpec, recipe: dict, train: pd.DataFrame):
    """Fit the recipe on the fold's rows; its latest rows (still before the cutoff) stop early."""
    label = spec.columns.label
    ordered = train.sort_values(spec.columns.timestamp, kind="stable")
    cut = int(len(ordered) * (1 - EARLY_STOPPING_SHARE))
    fit, stop = ordered.iloc[:cut], ordered.iloc[cut:]
    if fit[label].nunique() < 2 or stop[label].nunique() < 2:
        fit, stop = ordered, None  # too few rows of a class to hold some back
    model = build_candidate(CandidateSpec(name="fold", family=recipe["family"], params=recipe["params"]),
                            spec.features, seed=spec.sampling.seed)
    X_stop = None if stop is None else feature_frame(stop, spec.features)
    y_stop = None if stop is None else stop[label].to_numpy()
    w_stop = None if stop is None else stop[WEIGHT].to_numpy()
    model.fit(feature_frame(fit, spec.features), fit[label].to_numpy(), fit[WEIGHT].to_numpy(), X_stop, y_stop, w_stop)
    return model


def summarize_backtest(spec: ModelSpec, plan: RunPlan, results: list[FoldResult], store: ArtifactStore,
                       settings: Settings, train_results: list[TrainResult] | None = None) -> BacktestManifest:
    """Per-fold metrics of every candidate, staleness curves and the retraining recommendation."""
    by_candidate: dict[str, list[FoldResult]] = defaultdict(list)
    for result in results:
        by_candidate[result.candidate].append(result)
    metric = spec.backtest.staleness_metric
    per_fold = {name: {str(r.fold): r.metrics_by_age.get("0", {}) for r in sorted(rs, key=lambda r: r.fold)}
                for name, rs in by_candidate.items()}
    curves = {}
    for name, fold_results in by_candidate.items():
        scores = [(r.fold, int(age), m[metric]) for r in fold_results for age, m in r.metrics_by_age.items()]
        if scores:
            curves[name] = staleness_curve(scores, higher_is_better=HIGHER_IS_BETTER[metric],
                                           tolerance=spec.backtest.staleness_tolerance,
                                           test_days=spec.backtest.test_days, gap_days=spec.backtest.gap_days,
                                           metric=metric)
    manifest = BacktestManifest(
        folds=spec.backtest.folds, metric=metric, per_fold=per_fold,
        staleness={name: _curve_dict(curve) for name, curve in curves.items()},
        champion_recipe_version=next((r.recipe_version for r in by_candidate.get(CHAMPION, [])), None),
        uri=plan.artifacts.backtest,
    )
    store.write_json(manifest.uri, manifest.to_xcom())
    _log_to_candidate_runs(settings, per_fold, train_results or [])
    return manifest


def _curve_dict(curve) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(curve), default=str))


def _log_to_candidate_runs(settings: Settings, per_fold: dict, train_results: list[TrainResult]) -> None:
    """Per-fold metrics into each candidate's MLflow run (step = fold), beside its validation metrics."""
    from mlflow.entities import Metric

    from ml_tasks.registry.tracking import use_store

    mlflow_client = use_store(settings)
    now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    for trained in train_results:
        folds = per_fold.get(trained.candidate, {})
        entries = [Metric(f"backtest_{name}", float(value), now, int(fold))
                   for fold, metrics in folds.items() for name, value in metrics.items() if np.isfinite(value)]
        if entries:
            mlflow_client.log_batch(trained.mlflow_run_id, metrics=entries)
