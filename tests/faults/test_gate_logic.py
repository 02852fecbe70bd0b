"""The gate's logic on data that used to fool it (issue 15, problems 1, 2, 3, 5, 6, 7 and the gate
side of 8): each test reproduces one numbered problem and fails on the code before the fix.

Real specs (the demo spec, varied), real predictions written to a real artifact store and the real
``run_gate``; nothing is mocked.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.columns import CHAMPION, CHAMPION_COLUMN
from ml_tasks.core.manifests import BacktestManifest, EvaluationManifest, GateCheck, GateManifest
from ml_tasks.core.spec import ComparisonSpec, ModelSpec, SpecError, load_spec
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.evaluation.statistics import delong_paired
from ml_tasks.gating.folds import consistency_check
from ml_tasks.gating.gate import (
    judge_promotion_family,
    paired_test,
    replace_if_better,
)
from tests.core.test_spec import write_variant
from tests.gating.test_gate import gate_on, gate_spec, simulated


def frame_of(y, challenger, champion, channel=None) -> pd.DataFrame:
    """Test predictions as the evaluate stage writes them (the champion is also candidate ``lr``)."""
    y = np.asarray(y)
    return pd.DataFrame({"label": y, "weight": 1.0, "p_gbm": challenger, "p_lr": champion,
                         CHAMPION_COLUMN: champion, "channel": channel if channel is not None else "web"})


# --- 1. the comparisons that must all pass are an intersection–union test: no Holm across them ---

def test_1_comparisons_that_each_pass_at_alpha_promote_although_holm_would_have_failed_them():
    def check(name: str, p: float) -> GateCheck:
        return GateCheck(name=name, metric="roc_auc", challenger=0.8, reference=0.79, difference=0.01, ci_low=0.0,
                         ci_high=0.02, p_value=p, threshold=-0.01, passed=True, family="promotion", reason="r")

    judged = judge_promotion_family([check("champion:roc_auc:non_inferior", 0.03),
                                     check("champion:log_loss:non_inferior", 0.04)], alpha=0.05)
    # Holm would have needed 0.03 <= 0.025; each at alpha is already a bound on false promotion.
    assert all(c.passed for c in judged)
    assert all(c.rule == "intersection_union" and c.level == 0.05 and c.p_adjusted is None for c in judged)


def test_1_a_gate_json_of_an_earlier_release_still_loads_and_says_holm_decided_it():
    earlier = {"verdict": "PASS", "champion_version": "1", "uri": "g",
               "challenger_model": {"candidate": "gbm", "run_id": "r", "model_uri": "models:/m/2"},
               "checks": [{"name": "champion:roc_auc:non_inferior", "metric": "roc_auc", "challenger": 0.8,
                           "reference": 0.79, "difference": 0.01, "ci_low": 0.0, "ci_high": 0.02, "p_value": 0.01,
                           "p_adjusted": 0.02, "threshold": -0.01, "passed": True, "reason": "r",
                           "family": "promotion"},
                          {"name": "slice:channel=web:roc_auc", "metric": "roc_auc", "challenger": 0.8,
                           "reference": 0.8, "difference": 0.0, "ci_low": -0.01, "ci_high": 0.01, "p_value": 0.4,
                           "threshold": -0.03, "passed": True, "reason": "r", "family": "harm"}]}
    gate = GateManifest.model_validate(earlier)
    assert [c.rule for c in gate.checks] == ["holm", "bonferroni"]
    assert gate.champion_health == [] and gate.champion_degraded is False and gate.champion_note is None
    again = GateManifest.model_validate(json.loads(json.dumps(gate.to_xcom())))
    assert again == gate and gate.to_xcom()["champion_degraded"] is False


# --- 2. `superior` with a minimum improvement; the spec refuses a field of the other mode ---------

def correlated(n: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two highly correlated models, the challenger better by about +0.002 AUC (interval +-0.0005)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    base = 1.0 * y + rng.normal(size=n)
    champion = 1 / (1 + np.exp(-(base - 1.5)))
    challenger = 1 / (1 + np.exp(-(base + 0.012 * y + 0.05 * rng.normal(size=n) - 1.5)))
    return y, challenger, champion


def test_2_a_negligible_but_significant_gain_passes_superior_at_0_and_fails_at_a_minimum_improvement(demo_spec):
    y, challenger, champion = correlated()
    spec = gate_spec(demo_spec)
    w = np.ones(len(y))
    at_zero = paired_test(ComparisonSpec(mode="superior"), spec.acceptance, y, challenger, champion, w, "champion v1",
                          "champion:roc_auc:superior")
    worth_it = paired_test(ComparisonSpec(mode="superior", min_improvement=0.01), spec.acceptance, y, challenger,
                           champion, w, "champion v1", "champion:roc_auc:superior")
    assert 0.001 < at_zero.difference < 0.003 and at_zero.p_value < 1e-6 and at_zero.passed
    assert worth_it.difference == at_zero.difference and worth_it.p_value > 0.99 and not worth_it.passed
    assert worth_it.threshold == 0.01 and "not better than champion v1 by more than 0.01" in worth_it.reason


@pytest.mark.parametrize("metric", ["log_loss", "accuracy"])
def test_2_the_bootstrap_and_the_accuracy_test_take_the_minimum_improvement_as_their_null(demo_spec, metric):
    frame = simulated(n=6_000, gap=0.6)
    spec = gate_spec(demo_spec, bootstrap_replicates=200, decision_threshold=0.3)
    args = (spec.acceptance, frame.label.to_numpy(), frame.p_gbm.to_numpy(), frame.p_lr.to_numpy(),
            frame.weight.to_numpy(), "champion v1", f"champion:{metric}:superior")
    plain = paired_test(ComparisonSpec(metric=metric, mode="superior"), *args)
    gain = plain.difference
    assert plain.passed and gain > 0
    beyond = paired_test(ComparisonSpec(metric=metric, mode="superior", min_improvement=2 * gain), *args)
    assert not beyond.passed and beyond.p_value > 0.9 and beyond.difference == pytest.approx(gain)


@pytest.mark.parametrize(("comparison", "field", "instead"), [
    ({"metric": "roc_auc", "mode": "superior", "margin": 0.01}, "margin: 0.01", "min_improvement: 0.01"),
    ({"metric": "roc_auc", "mode": "non_inferior", "min_improvement": 0.01}, "min_improvement: 0.01",
     "mode: superior"),
])
def test_2_the_spec_refuses_a_margin_on_a_superior_check_and_a_minimum_improvement_on_a_non_inferior_one(
        tmp_path, comparison, field, instead):
    with pytest.raises(SpecError) as error:
        load_spec(write_variant(tmp_path, lambda raw: raw["acceptance"].update(champion=[comparison])))
    message = str(error.value)
    assert "field 'acceptance.champion.0'" in message and field in message and instead in message


def test_2_a_dumped_spec_with_superior_checks_still_loads_back_as_the_same_spec(demo_spec):
    raw = demo_spec.model_dump(exclude_unset=True)
    raw["backtest"] = {**raw.get("backtest", {}), "folds": 6}
    raw["acceptance"]["champion"] = [{"metric": "roc_auc", "mode": "superior", "min_improvement": 0.01}]
    varied = ModelSpec.model_validate(raw)
    dumped = varied.model_dump()                 # every field spelled out: margin 0.01 on superior checks
    assert dumped["acceptance"]["baseline"]["mode"] == "superior" and dumped["acceptance"]["champion"][0]["margin"]
    assert ModelSpec.model_validate(dumped) == varied


# --- 3. a collapsed champion: its health on every run, and the degraded_champion policy -----------

def collapsed(n: int = 6_000, seed: int = 5) -> pd.DataFrame:
    """After a drift: the champion ranks barely better than chance (AUC ~0.56), the challenger ~0.68."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    champion = 1 / (1 + np.exp(-(0.2 * y + rng.normal(size=n) - 1.0)))
    challenger = 1 / (1 + np.exp(-(0.7 * y + rng.normal(size=n) - 1.2)))
    return frame_of(y, challenger, champion, rng.choice(["web", "branch"], n))


def collapse_spec(demo_spec, **acceptance) -> ModelSpec:
    return gate_spec(demo_spec, thresholds={"roc_auc": {"min": 0.7}}, bootstrap_replicates=200,
                     champion=[{"metric": "roc_auc", "mode": "non_inferior", "margin": 0.01},
                               {"metric": "log_loss", "mode": "non_inferior", "margin": 0.005}], **acceptance)


def test_3_the_champion_failing_its_own_bars_is_recorded_and_by_default_nothing_else_changes(demo_spec, tmp_path):
    frame = collapsed()
    gate = gate_on(collapse_spec(demo_spec), frame, tmp_path)
    [health] = gate.champion_health
    champion_auc = compute_metrics(frame.label, frame[CHAMPION_COLUMN], frame.weight)["roc_auc"]
    assert health.name == "champion_health:roc_auc:min" and not health.passed
    assert health.challenger == pytest.approx(champion_auc) and champion_auc < 0.6
    assert gate.champion_degraded and gate.degraded_champion_policy == "alert"
    assert gate.verdict == "FAIL" and not gate.waived
    missed = next(c for c in gate.checks if c.name == "threshold:roc_auc:min")
    assert not missed.passed and missed.status is None
    assert "champion v1 fails its own bars" in gate.champion_note and "alert" in gate.champion_note
    assert gate.champion_note.endswith("the challenger must clear every check to replace it, and it did not.")
    assert gate.to_xcom()["champion_degraded"] is True


def test_3_replace_if_better_promotes_a_significantly_better_challenger_that_misses_the_bar_too(demo_spec, tmp_path):
    gate = gate_on(collapse_spec(demo_spec, degraded_champion="replace_if_better"), collapsed(), tmp_path)
    assert gate.verdict == "PASS", gate.failing_reasons
    [waived] = gate.waived
    assert waived.name == "threshold:roc_auc:min" and waived.passed and waived.status == "waived"
    assert "misses the spec's min >= 0.7" in waived.reason and "waived (degraded_champion: replace_if_better)" in \
        waived.reason
    better = {c.name: c for c in gate.checks if c.name.startswith("degraded_champion:")}
    assert set(better) == {"degraded_champion:roc_auc:superior", "degraded_champion:log_loss:superior"}
    assert all(c.passed and c.rule == "intersection_union" and c.p_value < 0.05 for c in better.values())
    assert gate.degraded_champion_policy == "replace_if_better" and "applied" in gate.champion_note


def test_3_replace_if_better_keeps_a_champion_the_challenger_is_not_significantly_better_than(demo_spec, tmp_path):
    frame = collapsed()
    noise = np.random.default_rng(2).normal(0, 0.01, len(frame))
    frame["p_gbm"] = np.clip(frame[CHAMPION_COLUMN] + noise, 0.01, 0.99)   # as bad as the champion
    gate = gate_on(collapse_spec(demo_spec, degraded_champion="replace_if_better"), frame, tmp_path)
    assert gate.verdict == "FAIL" and not gate.waived
    assert "not applied" in gate.champion_note and "not significantly better" in gate.champion_note


def test_3_replace_if_better_never_waives_a_bar_the_champion_meets(demo_spec):
    spec = gate_spec(demo_spec, degraded_champion="replace_if_better",
                     thresholds={"roc_auc": {"min": 0.7}, "brier": {"max": 0.2}},
                     champion=[{"metric": "roc_auc", "mode": "superior"}])

    def bar(name: str, value: float, passed: bool) -> GateCheck:
        return GateCheck(name=name, metric=name.split(":")[1], challenger=value, reference=None, difference=None,
                         ci_low=None, ci_high=None, p_value=None, threshold=0.2, passed=passed, reason=name)

    compared = GateCheck(name="champion:roc_auc:superior", metric="roc_auc", challenger=0.68, reference=0.56,
                         difference=0.12, ci_low=0.1, ci_high=0.14, p_value=1e-9, threshold=0.0, passed=True,
                         family="promotion", rule="intersection_union", level=0.05, reason="better")
    checks = [bar("threshold:roc_auc:min", 0.68, False), bar("threshold:brier:max", 0.25, False), compared]
    health = [bar("champion_health:roc_auc:min", 0.56, False), bar("champion_health:brier:max", 0.18, True)]
    evaluation = EvaluationManifest(
        challenger="gbm", candidates=[], champion={"name": "champion v1", "metrics": {}}, champion_version="1",
        predictions_uri="unused", test_rows=1, uri="e", models={})
    kept, note = replace_if_better(spec, evaluation, store=None, checks=checks, health=health)
    assert kept == checks and note.startswith("not applied: the challenger misses a bar champion v1 meets")


# --- 3 (degenerate data), 5 and 6: too few rows of a class ----------------------------------------

def test_3_too_few_positives_is_insufficient_data_that_fails_closed_and_names_the_counts(demo_spec, tmp_path):
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(6), np.zeros(994)].astype(int)
    champion = rng.random(1000) * 0.5
    challenger = np.where(y == 1, 0.9, champion)                  # perfect on 6 positives
    gate = gate_on(gate_spec(demo_spec, slices={"columns": []}), frame_of(y, challenger, champion), tmp_path)
    comparisons = [c for c in gate.checks if c.name.startswith("champion:")]
    assert comparisons and all(c.status == "insufficient_data" and not c.passed for c in comparisons)
    assert all(c.p_value is None and c.family == "promotion" for c in comparisons)
    assert all("insufficient data, 6 positive and 994 negative rows" in c.reason and "min_class_rows" in c.reason
               for c in comparisons)
    assert gate.verdict == "FAIL" and any("insufficient data" in r for r in gate.failing_reasons)


def test_5_a_slice_with_one_positive_is_listed_with_a_note_not_a_crash(demo_spec, tmp_path):
    frame = simulated(n=6_000, gap=0.4)
    rare = frame.index[(frame.label == 0)][:300]
    frame.loc[rare, "channel"] = "kiosk"
    frame.loc[frame.index[frame.label == 1][:1], "channel"] = "kiosk"   # 301 rows, one positive
    spec = gate_spec(demo_spec, slices={"columns": ["channel"], "min_size": 200, "margin": 0.03})
    gate = gate_on(spec, frame, tmp_path)
    kiosk = next(r for r in gate.slices if r["value"] == "kiosk")
    assert kiosk["tested"] is False and kiosk["rows"] == 301
    assert kiosk["note"] == "not tested: 1 positive and 300 negative rows, fewer than 10 of each " \
                            "(acceptance.min_class_rows)"
    assert not any(c.name == "slice:channel=kiosk:roc_auc" for c in gate.checks)


def test_6_zero_variance_delong_does_not_claim_certainty():
    four = delong_paired([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], [0.5] * 4)
    assert four.difference == 0.5 and four.se_bounded and four.se == pytest.approx(1 / np.sqrt(2))
    assert four.p_value > 0.4 and not four.superiority(0.05).passed
    # More rows: a perfect challenger against a constant champion still has no p = 0 from se = 0.
    y = np.r_[np.ones(30), np.zeros(30)]
    perfect = delong_paired(y, np.r_[np.linspace(0.6, 0.9, 30), np.linspace(0.1, 0.4, 30)], np.full(60, 0.5),
                            weights=np.random.default_rng(0).choice([1.0, 3.0], 60))
    assert perfect.se_bounded and 0.0 < perfect.superiority(0.05).p_value < 0.05 and perfect.variance < 1e-30


def test_6_a_superior_check_on_four_rows_does_not_pass(demo_spec):
    spec = gate_spec(demo_spec)
    check = paired_test(ComparisonSpec(mode="superior"), spec.acceptance, np.array([1, 1, 0, 0]),
                        np.array([0.9, 0.8, 0.2, 0.1]), np.full(4, 0.5), np.ones(4), "champion v1", "c")
    assert not check.passed and check.status == "insufficient_data"


# --- 7. one clipping rule: the AUC the gate tests is the AUC in the metrics table -----------------

def test_7_saturated_scores_give_the_gate_the_metrics_tables_auc(demo_spec):
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(20), np.zeros(20)].astype(int)
    # Half the negatives outscore every positive only beyond 1e-7 of 1: after the clip they tie.
    saturated = np.r_[np.full(20, 1.0 - 1e-9), np.full(10, 1.0 - 1e-10), np.full(10, 1e-9)]
    champion = np.r_[rng.uniform(0.3, 0.9, 20), rng.uniform(0.1, 0.7, 20)]
    table = compute_metrics(y, saturated, np.ones(40))["roc_auc"]
    raw = delong_paired(y, saturated, champion).auc_a
    assert (table, raw) == (0.75, 0.5)                                # the trap: two AUCs for one model
    check = paired_test(ComparisonSpec(), gate_spec(demo_spec).acceptance, y, saturated, champion, np.ones(40),
                        "champion v1", "champion:roc_auc:non_inferior")
    assert check.challenger == pytest.approx(table, abs=1e-12)


# --- 6 (report side of the slices) and 8 (gate side) ----------------------------------------------

def test_slice_rows_carry_the_same_p_values_as_their_checks(demo_spec, tmp_path):
    spec = gate_spec(demo_spec, slices={"columns": ["channel"], "min_size": 200, "margin": 0.03})
    gate = gate_on(spec, simulated(n=20_000, gap=0.3), tmp_path)
    checks = {c.name: c for c in gate.checks if c.family == "harm"}
    tested = [r for r in gate.slices if r["tested"]]
    assert len(tested) == len(checks) == 3
    for row in tested:
        check = checks[f"slice:channel={row['value']}:roc_auc"]
        assert (row["p_value"], row["p_adjusted"], row["level"], row["passed"]) == (
            check.p_value, check.p_adjusted, check.level, check.passed)
        assert check.p_adjusted == pytest.approx(min(1.0, 3 * check.p_value)) and check.level == pytest.approx(0.05 / 3)


def test_8_the_fold_check_of_the_champions_own_recipe_is_not_informative(demo_spec):
    spec = gate_spec(demo_spec)
    backtest = BacktestManifest(folds=4, metric="roc_auc", staleness={}, uri="b", per_fold={
        "gbm": {str(f): {"roc_auc": 0.72, "log_loss": 0.3} for f in range(4)},
        CHAMPION: {str(f): {"roc_auc": 0.72, "log_loss": 0.3} for f in range(4)}})
    recipe = {"family": "lightgbm", "params": {"num_leaves": 31}}
    for recipes in ({"gbm": recipe, CHAMPION: dict(recipe)}, None):
        check = consistency_check(spec, backtest, "gbm", CHAMPION, "champion v1", recipes)
        assert check.status == "not_informative" and check.passed
        assert check.family is None and check.p_value is None and check.test is None
        assert check.reason.startswith("not informative: ") and "wins 0 and ties 4 of 4" in check.reason
    # Another recipe on the same folds is a real comparison.
    other = consistency_check(spec, backtest.model_copy(update={"per_fold": {
        "gbm": {str(f): {"roc_auc": 0.73 + 0.001 * f} for f in range(4)},
        CHAMPION: {str(f): {"roc_auc": 0.72} for f in range(4)}}}), "gbm", CHAMPION, "champion v1",
        {"gbm": {"family": "torch_mlp", "params": {}}, CHAMPION: recipe})
    assert other.status is None and "wins 4 and ties 0" in other.reason


def test_8_the_gate_reads_the_candidates_recipes_from_their_train_results(demo_spec, tmp_path):
    from ml_tasks.core.artifacts import RunArtifacts
    from ml_tasks.core.manifests import TrainResult
    from ml_tasks.io.store import ArtifactStore

    store = ArtifactStore(str(tmp_path / "artifacts"))
    run = RunArtifacts(store.uri("runs", "m"))
    for name in ("lr", "gbm"):
        store.write_json(run.train_result(name), TrainResult(
            candidate=name, family="lightgbm", mlflow_run_id="r", model_uri="m", validation_metrics={}, train_rows=1,
            fit_seconds=0.0, reused=False, params={"num_leaves": 31}).to_xcom())
    backtest = BacktestManifest(folds=4, metric="roc_auc", staleness={}, uri="b", per_fold={
        "gbm": {str(f): {"roc_auc": 0.72 + 0.01 * (f % 2)} for f in range(4)},
        "lr": {str(f): {"roc_auc": 0.72 + 0.01 * ((f + 1) % 2)} for f in range(4)}})
    gate = gate_on(gate_spec(demo_spec), simulated(gap=0.4), tmp_path, champion=False, backtest=backtest)
    wins = next(c for c in gate.checks if c.name == "backtest:roc_auc:wins")
    assert wins.status == "not_informative" and "lightgbm, same params" in wins.reason
