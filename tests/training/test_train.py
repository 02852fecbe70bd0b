"""Training: every family beats the prior-only baseline, every candidate gets the same tuning
budget, learning curves are logged, and warm start continues from the champion."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ml_tasks import pipeline
from ml_tasks.core.columns import WEIGHT
from ml_tasks.core.spec import CandidateSpec, ModelSpec
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.models import build_candidate, feature_frame
from ml_tasks.registry.tracking import model_requirements
from ml_tasks.training.tuning import tune

FAMILY_PARAMS = {
    "prior": {},
    "logistic_regression": {"C": 1.0},
    "lightgbm": {"learning_rate": 0.05, "num_leaves": 15, "n_estimators": 300, "min_child_samples": 40},
    "torch_mlp": {"hidden": "64,32", "max_epochs": 30, "batch_size": 256, "patience": 4},
}


def frames(split):
    import pandas as pd

    return {part: pd.read_parquet(split[part]["uri"]) for part in ("train", "validation", "test")}


def xyw(spec, frame):
    return feature_frame(frame, spec.features), frame[spec.columns.label].to_numpy(), frame[WEIGHT].to_numpy()


@pytest.mark.parametrize("family", ["logistic_regression", "lightgbm", "torch_mlp"])
def test_every_family_beats_the_prior_only_baseline_on_test_roc_auc(demo_run, demo_spec, family):
    _, _, split = demo_run
    parts = frames(split)
    (X, y, w), (Xv, yv, wv), (Xt, yt, wt) = (xyw(demo_spec, parts[p]) for p in ("train", "validation", "test"))
    scores = {}
    for name in ("prior", family):
        model = build_candidate(CandidateSpec(name=name, family=name, params=FAMILY_PARAMS[name]), demo_spec.features,
                                seed=3)
        model.fit(X, y, w, Xv, yv, wv)
        scores[name] = compute_metrics(yt, model.predict_proba(Xt)[:, 1], wt)
    assert scores["prior"]["roc_auc"] == pytest.approx(0.5)
    assert scores[family]["roc_auc"] > scores["prior"]["roc_auc"] + 0.1, scores
    assert scores[family]["log_loss"] < scores["prior"]["log_loss"], scores


def test_every_candidate_gets_the_same_seeded_budget():
    searched = CandidateSpec(name="gbm", family="lightgbm", params={"num_leaves": 15},
                             search={"num_leaves": [7, 15, 31, 63],
                                     "learning_rate": {"low": 0.01, "high": 0.3, "log": True}})
    seen: list[tuple[int, dict]] = []

    def fit_and_score(params, number, report):
        seen.append((number, params))
        return params, -abs(params.get("learning_rate", 0.1) - 0.05)

    # 16 trials: past TPE's random start-up trials, so its model of the scores decides too.
    first = tune(searched, fit_and_score, trials=16, time_budget_seconds=None, higher_is_better=True, seed=1)
    again = tune(searched, lambda p, _, __: (p, -abs(p.get("learning_rate", 0.1) - 0.05)), trials=16,
                 time_budget_seconds=None, higher_is_better=True, seed=1)
    other = tune(searched, lambda p, _, __: (p, -abs(p.get("learning_rate", 0.1) - 0.05)), trials=16,
                 time_budget_seconds=None, higher_is_better=True, seed=2)
    assert len(first.trials) == 16 and [t.params for t in first.trials] == [t.params for t in again.trials]
    assert first.params == again.params and first.score == again.score  # the same seed chooses the same
    assert [t.params for t in other.trials] != [t.params for t in first.trials]
    assert first.trials[0].params == {"num_leaves": 15}  # the spec's own parameters come first
    assert [number for number, _ in seen] == list(range(16))  # trial numbers name the checkpoints
    assert all(0.01 <= p["learning_rate"] <= 0.3 and p["num_leaves"] in (7, 15, 31, 63) for _, p in seen[1:])
    assert first.score == max(t.score for t in first.trials) and first.params == first.model
    # Nothing to search: one fit is the whole budget, and nobody listens to its steps.
    plain = tune(CandidateSpec(name="lr", family="logistic_regression"), lambda p, _, report: (report, 0.7),
                 trials=6, time_budget_seconds=None, higher_is_better=True, seed=1)
    assert len(plain.trials) == 1 and plain.model is None


def test_tpe_finds_a_better_point_than_its_random_start():
    """Once TPE models the scores, its trials gather near the optimum of a smooth objective."""
    searched = CandidateSpec(name="gbm", family="lightgbm", search={
        "learning_rate": {"low": 0.001, "high": 1.0, "log": True},
        "num_leaves": {"low": 2, "high": 256, "integer": True}})

    def score(params, number, report):
        learning_rate, leaves = params.get("learning_rate", 0.1), params.get("num_leaves", 31)
        return params, -np.log10(learning_rate / 0.05) ** 2 - (leaves - 40) ** 2 / 1e4

    result = tune(searched, score, trials=40, time_budget_seconds=None, higher_is_better=True, seed=3)
    start = [t.score for t in result.trials[1:11]]  # TPE's random start-up trials
    modelled = sorted(t.score for t in result.trials[11:])
    assert modelled[len(modelled) // 2] > np.median(start)  # the median modelled trial beats the median random one
    assert result.score > -0.02 and all(isinstance(t.params["num_leaves"], int) for t in result.trials[1:])


@pytest.mark.parametrize(("spec_params", "told"), [
    ({"num_leaves": 31, "learning_rate": 0.05}, True),
    ({"num_leaves": 31, "learning_rate": 0.5}, False),   # outside the searched range
    ({"num_leaves": 40, "learning_rate": 0.05}, False),  # not one of the listed values
    ({"learning_rate": 0.05}, False),                    # a searched parameter the spec leaves unset
])
def test_the_sampler_learns_from_trial_0_only_when_the_specs_params_lie_in_the_search_space(spec_params, told):
    import optuna

    from ml_tasks.core.spec import SearchRange
    from ml_tasks.training.tuning import _add_spec_trial, search_distributions

    space = search_distributions({"num_leaves": [15, 31, 63],
                                  "learning_rate": SearchRange(low=0.01, high=0.2, log=True)})
    study = optuna.create_study(direction="maximize")

    _add_spec_trial(study, space, spec_params, 0.8, {1: 0.3}, higher_is_better=True)

    assert [(t.params, t.value) for t in study.trials] == ([(spec_params, 0.8)] if told else [])


def test_pruning_stops_trials_whose_validation_loss_lags_and_never_chooses_them():
    """A trial reports its validation loss per step; one among the worst of the earlier trials at
    the same step (after the warm-up steps) is stopped and cannot be chosen."""
    searched = CandidateSpec(name="gbm", family="lightgbm", params={"learning_rate": 0.05},
                             search={"learning_rate": {"low": 0.001, "high": 1.0, "log": True}})
    steps_run: dict[int, int] = {}

    def fit_and_score(params, number, report):
        badness = abs(np.log10(params["learning_rate"] / 0.05))  # 0 at the best learning rate
        for step in range(1, 101):
            steps_run[number] = step
            report(step, 0.3 + badness + 1.0 / step)
        return params, -badness

    result = tune(searched, fit_and_score, trials=30, time_budget_seconds=None, higher_is_better=True, seed=0)
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned and all(np.isnan(t.score) for t in pruned)
    assert all(steps_run[t.number] < 100 for t in pruned)
    assert all(steps_run[t.number] == 100 for t in result.trials if t.state == "complete")
    assert result.params == {"learning_rate": 0.05} and result.trials[0].state == "complete"
    # The same budget without pruning runs every trial to its end.
    unpruned = tune(searched, fit_and_score, trials=30, time_budget_seconds=None, higher_is_better=True, seed=0,
                    prune=False)
    assert all(t.state == "complete" for t in unpruned.trials)


def test_a_loss_to_minimise_prunes_in_the_same_direction():
    searched = CandidateSpec(name="gbm", family="lightgbm", search={"num_leaves": [2, 4, 8, 16, 32, 64]})

    def fit_and_score(params, number, report):
        badness = abs(params.get("num_leaves", 16) - 16) / 16
        for step in range(1, 51):
            report(step, 0.3 + badness)
        return params, 0.3 + badness  # the selection metric is a loss here too

    result = tune(searched, fit_and_score, trials=25, time_budget_seconds=None, higher_is_better=False, seed=0)
    assert result.params == {} and result.score == 0.3  # trial 0: the family's default, 16 leaves
    pruned = {t.params["num_leaves"] for t in result.trials if t.state == "pruned"}
    assert pruned and pruned <= {2, 4, 32, 64}


def test_logged_models_pin_only_pypi_packages_their_family_needs_to_serve():
    import lightgbm
    import mlflow

    lightgbm_requirements = model_requirements("lightgbm")
    assert f"lightgbm=={lightgbm.__version__}" in lightgbm_requirements
    assert f"mlflow=={mlflow.__version__}" in lightgbm_requirements
    # The network is served from its weights with numpy, the baseline from its coefficients: no
    # torch, scikit-learn or Refit (not on PyPI) in what a serving environment installs.
    for family in ("torch_mlp", "logistic_regression", "prior", "lightgbm"):
        requirements = model_requirements(family)
        assert all("==" in r for r in requirements), requirements
        assert not any(r.split("==")[0] in ("torch", "scikit-learn", "refit-ml-tasks") for r in requirements)


def test_time_budget_stops_tuning_before_the_trials_run_out():
    searched = CandidateSpec(name="gbm", family="lightgbm", search={"num_leaves": [7, 15]})

    def slow(params, number, report):
        time.sleep(0.05)
        return params, 0.5

    result = tune(searched, slow, trials=50, time_budget_seconds=0.12, higher_is_better=True, seed=0)
    assert 2 <= len(result.trials) < 50 and result.stopped_by == "time"


def test_lightgbm_warm_start_keeps_boosting_the_champions_trees(demo_run, demo_spec):
    _, _, split = demo_run
    parts = frames(split)
    train = parts["train"]
    older, newer = train.iloc[: len(train) // 2], train.iloc[len(train) // 2:]
    (Xv, yv, wv) = xyw(demo_spec, parts["validation"])
    spec = CandidateSpec(name="gbm", family="lightgbm", params=FAMILY_PARAMS["lightgbm"])
    champion = build_candidate(spec, demo_spec.features, seed=1).fit(*xyw(demo_spec, older), Xv, yv, wv)
    challenger = build_candidate(spec, demo_spec.features, seed=1)
    assert challenger.can_warm_start_from(champion) is None
    challenger.warm_start_from = champion
    challenger.fit(*xyw(demo_spec, newer), Xv, yv, wv)
    assert challenger.warm_started_ and challenger.warm_start_from is None  # the champion is not pickled inside
    # The first trees are the champion's: cut there, the challenger predicts exactly what the champion does.
    cut = challenger.booster_.predict(challenger._dataset_frame(Xv), num_iteration=champion.best_iteration_)
    np.testing.assert_allclose(cut, champion.predict_proba(Xv)[:, 1], rtol=1e-9)
    assert challenger.best_iteration_ >= champion.best_iteration_
    assert "not 'lightgbm'" in build_candidate(spec, demo_spec.features).can_warm_start_from(object())


def test_train_stage_tunes_logs_a_learning_curve_and_warm_starts_from_the_registered_champion(demo_run, demo_spec):
    import lightgbm
    import mlflow
    from mlflow import MlflowClient

    settings, plan, split = demo_run
    result = pipeline.train(plan, split, "lightgbm")
    assert result["warm_start"] == "stateless" and result["trials"] == 1
    rows = [point[0] for point in result["learning_curve"]]
    assert len(rows) == 3 and rows[-1] == result["train_rows"] and rows[0] < rows[1] < rows[2]
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    curve = client.get_metric_history(result["mlflow_run_id"], "learning_curve_validation_roc_auc")
    assert sorted(m.step for m in curve) == rows

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    logged = Path(mlflow.pyfunc.get_model_dependencies(result["model_uri"])).read_text().split()
    assert f"lightgbm=={lightgbm.__version__}" in logged and not any(r.startswith("torch") for r in logged)
    version = mlflow.register_model(result["model_uri"], demo_spec.registry_name)
    client.set_registered_model_alias(demo_spec.registry_name, "champion", version.version)

    raw = demo_spec.model_dump()
    raw["training"] = {"mode": "warm_start", "trials": 2, "learning_curve": False}
    raw["candidates"][1]["search"] = {"num_leaves": [7, 31]}
    spec = ModelSpec.model_validate(raw)
    from ml_tasks.core.manifests import RunPlan, SplitManifest
    from ml_tasks.core.settings import load_settings
    from ml_tasks.io.store import store_from_settings
    from ml_tasks.training.train import train_candidate

    later = RunPlan.model_validate(plan).model_copy(update={"run_prefix": plan["run_prefix"] + "-warm"})
    warm = train_candidate(spec, later, SplitManifest.model_validate(split), "lightgbm",
                           store_from_settings(load_settings()), load_settings())
    assert warm.warm_start == f"continued from champion v{version.version}" and warm.trials == 2
    baseline = train_candidate(spec, later, SplitManifest.model_validate(split), "logistic_baseline",
                               store_from_settings(load_settings()), load_settings())
    assert baseline.warm_start == "family 'logistic_regression' always trains from scratch: trained from scratch"


def test_checkpoints_reach_the_artifact_store_so_a_retry_on_another_host_resumes(any_store):
    from ml_tasks.core.manifests import RunPlan
    from ml_tasks.training.train import checkpoint_folder

    plan = RunPlan(model="m", spec_path="s", spec_hash="h", as_of="2024-03-01", window_start="2023-03-01",
                   run_key="20240301T000000-abcdef12",
                   run_prefix=any_store.layout.run("m", "20240301T000000-abcdef12").prefix,
                   dag_run_id="manual", dry_run=False, sample_size=100, candidates=["mlp"])
    with checkpoint_folder(any_store, plan, "mlp") as first:
        saved = first.path / "trial-0" / "checkpoint.pt"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_bytes(b"epoch 3")
        if first.sync is not None:
            first.sync(saved)
    # A retried trainer gets a folder of its own (a fresh container) holding what was saved.
    with checkpoint_folder(any_store, plan, "mlp") as retry:
        assert (retry.path / "trial-0" / "checkpoint.pt").read_bytes() == b"epoch 3"
        assert (retry.sync is None) == (not any_store.is_s3)
