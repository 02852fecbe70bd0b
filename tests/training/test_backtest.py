"""The backtest stage: per-fold retraining of every candidate and of the champion's recipe,
scores at every model age, the staleness curve, and idempotent jobs."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pandas as pd
import pytest

from ml_tasks import pipeline
from ml_tasks.core.columns import CHAMPION
from ml_tasks.core.manifests import RunPlan
from ml_tasks.training.backtest import plan_folds
from tests.conftest import DEMO_SPEC, isolated_env


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_warehouse_url):
    monkeypatch = pytest.MonkeyPatch()
    settings = isolated_env(monkeypatch, tmp_path_factory.mktemp("backtest") / "refit")
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    plan = pipeline.plan_run(str(DEMO_SPEC), "2024-06-01", sample_size=5_000, candidates=["logistic_baseline"])
    split = pipeline.split(plan, pipeline.sample(plan, pipeline.validate(plan, pipeline.extract(plan))))
    results = [pipeline.train(plan, split, name) for name in plan["candidates"]]
    yield settings, plan, results
    monkeypatch.undo()


def register_champion(settings, result):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    version = mlflow.register_model(result["model_uri"], "credit_default")
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    client.set_registered_model_alias("credit_default", "champion", version.version)
    return str(version.version)


def test_folds_end_when_every_test_label_is_in(demo_spec, trained_run):
    _, plan, _ = trained_run
    folds = plan_folds(demo_spec, RunPlan.model_validate(plan))
    as_of = pd.Timestamp(plan["as_of"]).to_pydatetime()
    assert len(folds) == demo_spec.backtest.folds
    assert folds[-1].test_end == as_of - timedelta(days=demo_spec.backtest.label_delay_days)
    assert all(f.test_start - f.cutoff == timedelta(days=demo_spec.backtest.gap_days) for f in folds)


def test_every_candidate_and_the_champions_recipe_run_on_the_same_folds(demo_spec, trained_run, monkeypatch):
    from mlflow import MlflowClient

    settings, plan, results = trained_run
    monkeypatch.setenv("REFIT_TASK_START_S", "0")  # a free task start: every fold its own task
    jobs = pipeline.backtest_jobs(plan)
    assert jobs == [{"candidate": "logistic_baseline", "folds": [f]} for f in range(demo_spec.backtest.folds)]
    version = register_champion(settings, results[0])
    jobs = pipeline.backtest_jobs(plan)
    assert sorted({job["candidate"] for job in jobs}) == [CHAMPION, "logistic_baseline"] and len(jobs) == 8

    folds = [fold for job in jobs for fold in pipeline.backtest_folds(plan, job["candidate"], job["folds"])["results"]]
    sample = pd.read_parquet(f"{plan['run_prefix']}/sample.parquet")
    for fold in folds:
        assert fold["train_rows"] > 0 and fold["test_rows"] > 0
        # No training row's label arrived after the fold's cutoff.
        cutoff = pd.Timestamp(fold["cutoff"])
        in_window = sample[(sample.applied_at >= pd.Timestamp(fold["train_start"])) & (sample.applied_at < cutoff)]
        assert fold["train_rows"] == int((in_window.observed_at <= cutoff).sum())
        assert "0" in fold["metrics_by_age"] and fold["metrics_by_age"]["0"]["roc_auc"] > 0.55
    # The oldest fold is also scored on the later windows (staleness); the newest has none left.
    first, last = folds[0], folds[demo_spec.backtest.folds - 1]
    assert set(first["metrics_by_age"]) == {"0", "1", "2", "3"} and set(last["metrics_by_age"]) == {"0"}
    # The champion's recipe is the same logistic regression, retrained per fold: identical scores.
    by_job = {(f["candidate"], f["fold"]): f for f in folds}
    for fold in range(demo_spec.backtest.folds):
        champion = by_job[(CHAMPION, fold)]["metrics_by_age"]
        candidate = by_job[("logistic_baseline", fold)]["metrics_by_age"]
        assert set(champion) == set(candidate)
        for age in champion:
            assert champion[age] == pytest.approx(candidate[age])
    # A retried job finds its result instead of training again.
    assert pipeline.backtest_fold(plan, "logistic_baseline", 0)["reused"] is True

    summary = pipeline.backtest_summary(plan, folds, results)
    assert summary["champion_recipe_version"] == version
    assert set(summary["per_fold"]["logistic_baseline"]) == {"0", "1", "2", "3"}
    curve = summary["staleness"]["logistic_baseline"]
    assert [p["age"] for p in curve["points"]] == [0, 1, 2, 3] and curve["interval_days"] > 0
    assert "roc_auc" in curve["summary"]
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    history = client.get_metric_history(results[0]["mlflow_run_id"], "backtest_roc_auc")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]


def test_light_folds_share_a_task_and_give_the_same_results_as_one_task_each(demo_spec, trained_run, monkeypatch):
    """A task start dearer than a fold (the logistic baseline fits in well under a second) puts a
    candidate's folds in one task, which reads the sample once; the results are the per-fold ones."""
    _, plan, _ = trained_run
    shutil.rmtree(RunPlan.model_validate(plan).artifacts.backtest_folds, ignore_errors=True)  # another test's folds
    monkeypatch.setenv("REFIT_TASK_START_S", "1000")
    monkeypatch.setenv("REFIT_TRAINER_SLOTS", "1")
    folds = list(range(demo_spec.backtest.folds))
    jobs = pipeline.backtest_jobs(plan)  # the champion's recipe too, if another test registered one
    assert [job for job in jobs if job["candidate"] == "logistic_baseline"] == [
        {"candidate": "logistic_baseline", "folds": folds}]
    grouped = pipeline.backtest_folds(plan, "logistic_baseline", folds)
    assert [result["fold"] for result in grouped["results"]] == folds
    assert not any(result["reused"] for result in grouped["results"])
    # Run one at a time (a retried per-fold task), each finds the grouped job's result.
    alone = [pipeline.backtest_fold(plan, "logistic_baseline", fold) for fold in folds]
    assert all(result["reused"] for result in alone)
    assert [r["metrics_by_age"] for r in alone] == [r["metrics_by_age"] for r in grouped["results"]]
    # The summary takes the jobs' outputs as they come from the mapped tasks.
    summary = pipeline.backtest_summary(plan, [grouped], trained_run[2])
    assert set(summary["per_fold"]["logistic_baseline"]) == {str(fold) for fold in folds}


def test_an_unknown_candidate_or_fold_is_refused_by_name(trained_run):
    from ml_tasks.core.spec import SpecError
    from ml_tasks.training.backtest import BacktestError

    _, plan, _ = trained_run
    with pytest.raises(SpecError, match="unknown candidate 'xgboost'"):
        pipeline.backtest_fold(plan, "xgboost", 0)
    with pytest.raises(BacktestError, match=r"fold 9 does not exist; expected 0..3 \(backtest.folds\)"):
        pipeline.backtest_fold(plan, "logistic_baseline", 9)
