"""The gate's statistics: weighted AUC, the paired bootstrap, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml_tasks.gate import paired_comparison, threshold_checks
from ml_tasks.metrics import compute_metrics, weighted_roc_auc
from ml_tasks.spec import ChampionComparisonSpec


def simulated(n: int = 4_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    signal = y + rng.normal(0, 1.0, n)
    weights = rng.choice([1.0, 5.0], n)
    return rng, y, signal, weights


def test_weighted_auc_matches_sklearn_with_ties_and_many_replicates():
    rng, y, signal, weights = simulated()
    scores = np.round(signal, 1)  # plenty of ties
    assert weighted_roc_auc(scores, y, weights) == pytest.approx(roc_auc_score(y, scores, sample_weight=weights), abs=1e-12)
    replicate_weights = weights * rng.poisson(1.0, size=(5, len(y)))
    batch = weighted_roc_auc(scores, y, replicate_weights)
    for row, value in zip(replicate_weights, batch):
        assert value == pytest.approx(roc_auc_score(y, scores, sample_weight=row), abs=1e-12)


def test_identical_models_are_non_inferior():
    _, y, signal, weights = simulated()
    p = 1 / (1 + np.exp(-signal))
    check = paired_comparison(ChampionComparisonSpec(margin=0.01), y, p, p, weights, "champion v1")
    assert check.passed and check.difference == 0.0


def test_a_clearly_worse_challenger_fails_with_interval_and_reason():
    rng, y, signal, weights = simulated()
    champion = 1 / (1 + np.exp(-signal))
    challenger = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.5, len(y)))))
    check = paired_comparison(ChampionComparisonSpec(margin=0.01), y, challenger, champion, weights, "champion v1")
    assert not check.passed
    assert check.difference < -0.01 and check.ci_low < check.difference < check.ci_high
    assert check.p_value > 0.05
    assert "does not show" in check.reason and "champion v1" in check.reason


def test_superior_mode_needs_a_real_improvement_and_lower_is_better_metrics_flip():
    rng, y, signal, weights = simulated(n=8_000)
    # Calibrated posteriors: the signal is y + N(0, 1); the weak model sees it through extra N(0, 1) noise.
    prior = np.log(0.1 / 0.9)
    strong = 1 / (1 + np.exp(-(prior + signal - 0.5)))
    weak = 1 / (1 + np.exp(-(prior + (signal + rng.normal(0, 1.0, len(y)) - 0.5) / 2)))
    superior = ChampionComparisonSpec(mode="superior", metric="roc_auc")
    assert paired_comparison(superior, y, strong, weak, weights, "champion").passed
    assert not paired_comparison(superior, y, weak, strong, weights, "champion").passed
    by_loss = ChampionComparisonSpec(mode="superior", metric="log_loss")
    check = paired_comparison(by_loss, y, strong, weak, weights, "champion")
    assert check.passed and check.difference > 0  # improvement = champion loss - challenger loss


def test_thresholds_check_min_and_max(demo_spec):
    _, y, signal, weights = simulated()
    metrics = compute_metrics(y, 1 / (1 + np.exp(-signal)), weights)
    checks = {c.name: c for c in threshold_checks(demo_spec, metrics)}
    assert checks["threshold:roc_auc:min"].passed
    failing = threshold_checks(demo_spec, {**metrics, "brier": 0.5})
    brier = next(c for c in failing if c.metric == "brier")
    assert not brier.passed and "misses the spec's max <= 0.08" in brier.reason
