"""The gate end to end on stored predictions: each metric's test, the promotion family judged as an
intersection–union test, non-inferiority margins, slices (Bonferroni) and Simpson's paradox, fold
wins, guardrails, no champion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ml_tasks.core.columns import CHAMPION_COLUMN
from ml_tasks.core.manifests import (
    BacktestManifest,
    EvaluationManifest,
    ModelRef,
    ModelScores,
    RunPlan,
)
from ml_tasks.core.spec import ComparisonSpec, ModelSpec
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.gating import gate as gate_module
from ml_tasks.gating.folds import consistency_check
from ml_tasks.gating.gate import (
    accuracy_test,
    judge_promotion_family,
    paired_test,
    paired_tests,
    run_gate,
    slice_checks,
    threshold_checks,
)
from ml_tasks.io.store import ArtifactStore


def simulated(n: int = 6_000, seed: int = 0, gap: float = 0.0):
    """Labels, a champion and a challenger whose signal is ``gap`` stronger, and sampling weights."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(int)
    champion = 1 / (1 + np.exp(-(y * 1.2 + rng.normal(0, 1.0, n) - 2)))
    challenger = 1 / (1 + np.exp(-(y * (1.2 + gap) + rng.normal(0, 1.0, n) - 2)))
    weights = rng.choice([1.0, 3.0], n)
    channel = rng.choice(["web", "branch", "mobile"], n, p=[0.6, 0.35, 0.05])
    return pd.DataFrame({"label": y, "weight": weights, "p_gbm": challenger, "p_lr": champion,
                         CHAMPION_COLUMN: champion, "channel": channel})


def gate_spec(demo_spec: ModelSpec, **acceptance) -> ModelSpec:
    raw = demo_spec.model_dump(exclude_unset=True)  # what the spec file wrote, varied
    raw["acceptance"] = {**raw["acceptance"], "thresholds": {}, **acceptance}
    raw["candidates"] = [{"name": "lr", "family": "logistic_regression"}, {"name": "gbm", "family": "lightgbm"}]
    return ModelSpec.model_validate(raw)


def gate_on(spec, frame, tmp_path, champion=True, costs=None, backtest=None):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    uri = store.uri("runs", "m", "predictions.parquet")
    store.write_frame(uri, frame)
    scores = [ModelScores(name=n, metrics=compute_metrics(frame.label, frame[f"p_{n}"], frame.weight))
              for n in ("lr", "gbm")]
    evaluation = EvaluationManifest(
        challenger="gbm", candidates=scores,
        champion=ModelScores(name="champion v1", metrics=scores[0].metrics) if champion else None,
        champion_version="1" if champion else None, predictions_uri=uri, test_rows=len(frame), uri="x",
        serving_costs=costs or {},
        models={n: ModelRef(candidate=n, run_id=f"run-{n}", model_uri=f"models:/{n}-1") for n in ("lr", "gbm")},
    )
    plan = RunPlan(model="m", spec_path="s", spec_hash="h", as_of="2024-03-01", window_start="2023-03-01",
                   sample_size=1, candidates=["lr", "gbm"], dry_run=False, dag_run_id="d", run_key="k",
                   run_prefix=store.uri("runs", "m"))
    return run_gate(spec, plan, evaluation, store, backtest)


def test_each_metric_gets_its_test_and_each_promotion_test_is_judged_alone_at_alpha(demo_spec, tmp_path):
    spec = gate_spec(demo_spec, champion=[{"metric": m, "mode": "non_inferior", "margin": 0.02}
                                          for m in ("roc_auc", "log_loss", "brier", "pr_auc", "accuracy")],
                     decision_threshold=0.3, bootstrap_replicates=300)
    gate = gate_on(spec, simulated(gap=0.4), tmp_path)
    tests = {c.metric: c for c in gate.checks if c.name.startswith("champion:")}
    assert tests["roc_auc"].test.startswith("DeLong")
    assert tests["log_loss"].test.startswith("paired Poisson bootstrap") and tests["pr_auc"].test.startswith("paired")
    assert "discordant" in tests["accuracy"].test
    tested = [c for c in gate.checks if c.family == "promotion"]
    assert {c.name for c in tested} >= {c.name for c in tests.values()}
    # Intersection–union: no adjustment, each raw p at alpha, and the rule on every record.
    assert all(c.rule == "intersection_union" and c.level == 0.05 and c.p_adjusted is None for c in tested)
    assert all(c.passed == (c.p_value <= 0.05) for c in tested)
    assert all("all must pass" in c.reason for c in tested)
    harms = [c for c in gate.checks if c.family == "harm"]
    assert all(c.rule == "bonferroni" for c in harms)  # slices: any one decides
    assert all(c.rule is None for c in gate.checks if c.family is None)
    assert gate.verdict == "PASS", [c.reason for c in gate.checks if not c.passed]
    assert all(c.ci_low <= c.difference <= c.ci_high for c in tests.values())


def test_bootstrap_metrics_share_one_bootstrap_with_the_results_of_separate_ones(demo_spec, monkeypatch):
    spec = gate_spec(demo_spec, bootstrap_replicates=200)
    frame = simulated(gap=0.2)
    comparisons = [ComparisonSpec(metric="log_loss", margin=0.01), ComparisonSpec(metric="brier", mode="superior"),
                   ComparisonSpec(metric="log_loss", mode="superior"), ComparisonSpec(metric="pr_auc", margin=0.02),
                   ComparisonSpec(metric="roc_auc", margin=0.01)]
    names = [f"c{i}:{c.metric}" for i, c in enumerate(comparisons)]
    args = (frame.label.to_numpy(), frame.p_gbm.to_numpy(), frame.p_lr.to_numpy(), frame.weight.to_numpy(), "champion")
    calls = []
    shared = gate_module.paired_bootstrap_many
    monkeypatch.setattr(gate_module, "paired_bootstrap_many",
                        lambda metrics, *a, **k: calls.append(metrics) or shared(metrics, *a, **k))
    together = paired_tests(comparisons, names, spec.acceptance, *args)
    assert calls == [["log_loss", "brier", "pr_auc"]]                    # one call, each metric once
    assert [c.name for c in together] == names and all(c.family == "promotion" for c in together)
    for comparison, name, check in zip(comparisons, names, together, strict=True):
        alone = paired_test(comparison, spec.acceptance, *args, name)
        assert check.p_value == alone.p_value, name                        # seeded: the same replicates
        assert (check.difference, check.ci_low, check.ci_high) == pytest.approx(
            (alone.difference, alone.ci_low, alone.ci_high), abs=1e-12)


def test_non_inferiority_passes_within_the_margin_and_fails_beyond_it(demo_spec):
    frame = simulated(n=40_000, gap=-0.08)  # the challenger is a little worse
    y, w = frame.label.to_numpy(), frame.weight.to_numpy()
    spec = gate_spec(demo_spec)
    worse_by = roc_auc_score(y, frame.p_lr, sample_weight=w) - roc_auc_score(y, frame.p_gbm, sample_weight=w)
    assert 0.005 < worse_by < 0.02
    within = paired_test(ComparisonSpec(margin=0.04), spec.acceptance, y, frame.p_gbm.to_numpy(), frame.p_lr.to_numpy(),
                         w, "champion v1", "champion:roc_auc:non_inferior")
    beyond = paired_test(ComparisonSpec(margin=0.001), spec.acceptance, y, frame.p_gbm.to_numpy(),
                         frame.p_lr.to_numpy(), w, "champion v1", "champion:roc_auc:non_inferior")
    assert within.passed and within.p_value < 0.01
    assert not beyond.passed and beyond.p_value > 0.5


def test_superiority_needs_a_real_improvement(demo_spec):
    spec = gate_spec(demo_spec)
    frame = simulated(gap=0.0)
    same = paired_test(ComparisonSpec(mode="superior"), spec.acceptance, frame.label.to_numpy(), frame.p_gbm.to_numpy(),
                       frame.p_lr.to_numpy(), frame.weight.to_numpy(), "champion", "c")
    assert not same.passed and "H0 'not better than champion'" in same.reason


def test_accuracy_uses_mcnemar_for_superiority_and_a_paired_z_with_a_margin():
    frame = simulated(n=20_000, gap=1.0)
    y = frame.label.to_numpy()
    *_, p_superior, test = accuracy_test(y, frame.p_gbm.to_numpy(), frame.p_lr.to_numpy(), 0.3, 0.0, 0.05)
    assert test.startswith("McNemar") and p_superior < 0.01
    *_, p_flipped, _ = accuracy_test(y, frame.p_lr.to_numpy(), frame.p_gbm.to_numpy(), 0.3, 0.0, 0.05)
    assert p_flipped > 0.99
    *_, p_margin, test = accuracy_test(y, frame.p_lr.to_numpy(), frame.p_lr.to_numpy(), 0.3, 0.01, 0.05)
    assert test.startswith("paired z") and p_margin < 0.05  # identical models are within any margin


def test_accuracy_is_weighted_like_every_other_metric_but_mcnemar_counts_rows():
    frame = simulated(n=4_000, gap=0.5)
    y, a, b, w = (frame[c].to_numpy() for c in ("label", "p_gbm", "p_lr", "weight"))
    weighted = accuracy_test(y, a, b, 0.3, 0.01, 0.05, w)
    rep = np.repeat(np.arange(len(y)), w.astype(int))        # weight 3 = the row three times
    repeated = accuracy_test(y[rep], a[rep], b[rep], 0.3, 0.01, 0.05)
    assert weighted[:3] == pytest.approx(repeated[:3], abs=1e-12)         # accuracies and their difference
    plain = accuracy_test(y, a, b, 0.3, 0.01, 0.05)
    assert weighted[0] != pytest.approx(plain[0], abs=1e-6)                 # the weights matter
    assert weighted[0] == pytest.approx(np.average((a >= 0.3) == y, weights=w))
    # The interval is that of a weighted sample, wider than repeated rows would pretend.
    assert weighted[4] - weighted[3] > repeated[4] - repeated[3]
    doubled = accuracy_test(y, a, b, 0.3, 0.01, 0.05, 2.0 * w)
    assert doubled == pytest.approx(weighted)                               # only relative weights count
    # Equal weights, whatever their scale, keep McNemar's count test for superiority.
    equal = accuracy_test(y, a, b, 0.3, 0.0, 0.05, np.full(len(y), 3.0))
    assert equal[5:] == accuracy_test(y, a, b, 0.3, 0.0, 0.05)[5:]


def test_accuracy_superiority_under_unequal_weights_tests_the_weighted_difference():
    y = np.r_[np.ones(1000), np.zeros(1000)]
    a = np.r_[np.ones(1000), np.ones(300), np.zeros(700)]   # right on every positive, wrong on 300 negatives
    b = np.r_[np.ones(400), np.zeros(600), np.zeros(1000)]  # right on 400 positives and on every negative
    w = np.where(y == 1, 1.0, 4.0)                            # negatives were sampled at a quarter of their rate
    _, _, difference, _, high, p_value, test = accuracy_test(y, a, b, 0.5, 0.0, 0.05, w)
    assert difference < 0 and high < 0 and p_value > 0.5 and test.startswith("weighted z")
    # Row by row the challenger is ahead (600 against 300 discordant rows): McNemar would pass it.
    assert accuracy_test(y, a, b, 0.5, 0.0, 0.05)[5] < 1e-6


def test_a_handful_of_discordant_rows_never_passes_accuracy_superiority_under_weights():
    y = np.r_[np.ones(500), np.zeros(500)]
    b = np.r_[np.full(497, 0.9), np.full(3, 0.1), np.full(500, 0.1)]  # wrong on 3 positives
    a = np.r_[np.full(500, 0.9), np.full(500, 0.1)]                  # right everywhere
    w = np.where(y == 1, 1.0, 4.0)
    *_, p_value, test = accuracy_test(y, a, b, 0.5, 0.0, 0.05, w)
    assert test.startswith("weighted z") and p_value == pytest.approx(0.125)  # exact McNemar: 3 of 3 at 1/2


def test_small_slices_are_listed_not_tested_and_simpson_is_flagged(demo_spec, tmp_path):
    frame = simulated(n=20_000, gap=0.3)
    spec = gate_spec(demo_spec, slices={"columns": ["channel"], "min_size": 2_000, "margin": 0.03})
    gate = gate_on(spec, frame, tmp_path)
    rows = {r["value"]: r for r in gate.slices}
    assert rows["mobile"]["tested"] is False and "min_size 2000" in rows["mobile"]["note"]
    assert rows["web"]["tested"] and rows["web"]["difference"] > 0
    assert gate.simpson_warning is None

    # Better in every slice, worse overall: the challenger's scores are shifted per slice.
    rng = np.random.default_rng(3)
    n = 20_000
    channel = np.where(rng.random(n) < 0.5, "web", "branch")
    y = (rng.random(n) < np.where(channel == "web", 0.3, 0.05)).astype(int)
    champion = 1 / (1 + np.exp(-(y * 1.0 + rng.normal(0, 1, n) + np.where(channel == "web", 1.0, -1.0))))
    challenger = 1 / (1 + np.exp(-(y * 1.3 + rng.normal(0, 1, n) + np.where(channel == "web", -1.0, 1.0))))
    paradox = pd.DataFrame({"label": y, "weight": 1.0, "p_gbm": challenger, "p_lr": champion,
                            CHAMPION_COLUMN: champion, "channel": channel})
    gate = gate_on(spec, paradox, tmp_path / "paradox")
    assert all(r["difference"] > 0 for r in gate.slices if r["tested"])
    assert gate.simpson_warning is not None and "every slice" in gate.simpson_warning
    harms = [c for c in gate.checks if c.family == "harm"]
    assert {c.name for c in harms} == {"slice:channel=web:roc_auc", "slice:channel=branch:roc_auc"}
    assert all("in channel=" in c.reason for c in harms)
    # The overall difference comes from the caller's own comparison when it has one.
    computed = slice_checks(spec, paradox, "p_gbm", "p_lr", "champion")
    assert computed[2] == gate.simpson_warning
    assert slice_checks(spec, paradox, "p_gbm", "p_lr", "champion", overall=+0.01)[2] is None


def test_fold_wins_and_guardrails_and_no_champion_means_beating_the_baseline(demo_spec, tmp_path):
    spec = gate_spec(demo_spec, guardrails={"max_latency_ms_per_1k": 50, "max_latency_ratio": 2.0,
                                            "max_size_mb": None, "max_size_ratio": None})
    backtest = BacktestManifest(folds=4, metric="roc_auc", staleness={}, uri="b", per_fold={
        "gbm": {str(f): {"roc_auc": 0.70 + 0.01 * f} for f in range(4)},
        "champion": {str(f): {"roc_auc": 0.72} for f in range(4)}})
    costs = {"gbm": {"latency_ms_per_1k": 80.0, "size_mb": 1.0},
             CHAMPION_COLUMN: {"latency_ms_per_1k": 10.0, "size_mb": 1.0}}
    gate = gate_on(spec, simulated(gap=0.4), tmp_path, costs=costs, backtest=backtest)
    checks = {c.name: c for c in gate.checks}
    wins = checks["backtest:roc_auc:wins"]
    assert wins.challenger == 0.375 and not wins.passed and "wins 1 and ties 1 of 4 backtest folds" in wins.reason
    assert wins.family is None and wins.condition_met is False and wins.p_adjusted is None
    assert not checks["guardrail:latency_ms_per_1k"].passed and not checks["guardrail:latency_ms_per_1k:ratio"].passed
    assert gate.verdict == "FAIL"

    first = gate_on(gate_spec(demo_spec), simulated(gap=0.4), tmp_path / "first", champion=False)
    baseline = next(c for c in first.checks if c.name.startswith("baseline:"))
    assert baseline.name == "baseline:roc_auc:superior" and baseline.passed and "baseline lr" in baseline.reason


def test_a_required_fold_test_joins_the_family_and_still_needs_its_win_fraction(demo_spec):
    raw = demo_spec.model_dump()
    raw["backtest"]["folds"] = 6
    spec = gate_spec(ModelSpec.model_validate(raw),
                     backtest={"metric": "roc_auc", "require_significance": True, "min_win_fraction": 1.0})
    # Five wins and a tie: the sign test (ties dropped) gives 1/32, but 5.5 of 6 is below 100%.
    backtest = BacktestManifest(folds=6, metric="roc_auc", staleness={}, uri="b", per_fold={
        "gbm": {str(f): {"roc_auc": 0.72 if f == 0 else 0.73} for f in range(6)},
        "champion": {str(f): {"roc_auc": 0.72} for f in range(6)}})
    check = consistency_check(spec, backtest, "gbm", "champion", "champion v1")
    assert check.family == "promotion" and check.p_value == pytest.approx(1 / 32)
    assert check.challenger == pytest.approx(5.5 / 6) and check.condition_met is False
    [held] = judge_promotion_family([check], alpha=0.05)
    assert held.p_adjusted is None and held.rule == "intersection_union" and "<= alpha 0.05" in held.reason
    assert not held.passed


def test_thresholds_check_min_and_max(demo_spec):
    frame = simulated()
    metrics = compute_metrics(frame.label, frame.p_gbm, frame.weight)
    failing = threshold_checks(demo_spec, {**metrics, "brier": 0.5})
    brier = next(c for c in failing if c.metric == "brier")
    assert not brier.passed and "misses the spec's max <= 0.08" in brier.reason


def test_without_a_champion_a_candidate_that_cannot_beat_the_baseline_gives_way_to_it(demo_spec, tmp_path):
    frame = simulated(gap=0.0)
    frame["p_gbm"] = frame["p_lr"] + np.random.default_rng(9).normal(0, 1e-4, len(frame))  # no better than lr
    spec = gate_spec(demo_spec)
    gate = gate_on(spec, frame, tmp_path, champion=False)
    assert gate.verdict == "PASS" and gate.challenger == "lr"
    fallback = next(c for c in gate.checks if c.name == "fallback:baseline")
    assert "gbm (best on validation) did not clear the gate against the baseline" in fallback.reason
    # The note shows the two test scores it chose between, not a placeholder.
    assert fallback.challenger == pytest.approx(compute_metrics(frame.label, frame.p_lr, frame.weight)["roc_auc"])
    assert fallback.reference == pytest.approx(compute_metrics(frame.label, frame.p_gbm, frame.weight)["roc_auc"])
    assert gate.challenger_model == ModelRef(candidate="lr", run_id="run-lr", model_uri="models:/lr-1")


def test_manifests_of_an_earlier_release_still_load_so_their_runs_can_be_promoted():
    from ml_tasks.core.manifests import GateManifest

    earlier_evaluation = {
        "challenger": "gbm", "challenger_run_id": "run-gbm", "challenger_model_uri": "models:/m-gbm",
        "candidates": [], "champion": None, "champion_version": None, "predictions_uri": "p", "test_rows": 1,
        "uri": "e", "models": {"lr": {"run_id": "run-lr", "model_uri": "models:/m-lr"},
                               "gbm": {"run_id": "run-gbm", "model_uri": "models:/m-gbm"}}}
    evaluation = EvaluationManifest.model_validate(earlier_evaluation)
    assert evaluation.models["lr"] == ModelRef(candidate="lr", run_id="run-lr", model_uri="models:/m-lr")
    assert EvaluationManifest.model_validate({**earlier_evaluation, "models": {}}).models["gbm"].run_id == "run-gbm"
    gate = GateManifest.model_validate({"verdict": "FAIL", "challenger": "lr", "champion_version": None, "checks": [],
                                        "uri": "g", "challenger_run_id": "run-lr",
                                        "challenger_model_uri": "models:/m-lr"})
    assert gate.challenger_model == evaluation.models["lr"]
