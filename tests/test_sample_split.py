"""Stratified sampling keeps rare strata and reweights to the population; splits follow time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.sample import WEIGHT, allocate, stratified_sample
from ml_tasks.split import time_split


def population(rows: int = 20_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["web", "branch", "mobile"], rows, p=[0.7, 0.28, 0.02])
    rate = np.where(channel == "mobile", 0.2, 0.05)
    return pd.DataFrame({
        "t": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 300, rows)), unit="D"),
        "channel": channel, "y": (rng.random(rows) < rate).astype(int),
    })


def test_allocation_keeps_a_floor_and_the_total():
    sizes = pd.Series({"a": 10_000, "b": 50, "c": 900})
    quota = allocate(sizes, total=1_000, floor=100)
    assert quota["b"] == 50  # all it has
    assert quota["c"] >= 100 and quota.sum() <= 1_000
    assert allocate(sizes, total=20_000, floor=100).equals(sizes)


def test_reweighted_label_rate_estimates_the_population_over_many_seeds():
    frame = population()
    truth = frame.y.mean()
    estimates = []
    for seed in range(30):
        sample = stratified_sample(frame, ["y", "channel"], size=2_000, floor=150, seed=seed)
        # Rare strata are over-represented in the sample but weighted back down.
        assert (sample.channel == "mobile").mean() > (frame.channel == "mobile").mean()
        assert np.isclose(sample[WEIGHT].sum(), len(frame))
        estimates.append(np.average(sample.y, weights=sample[WEIGHT]))
    # Stratifying on the label makes the reweighted rate exact up to rounding of the quotas.
    assert abs(np.mean(estimates) - truth) < 1e-3


def test_same_seed_same_sample_and_time_order_kept():
    frame = population()
    first = stratified_sample(frame, ["y"], size=1_000, floor=100, seed=3)
    again = stratified_sample(frame, ["y"], size=1_000, floor=100, seed=3)
    other = stratified_sample(frame, ["y"], size=1_000, floor=100, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not first.index.equals(other.index)
    assert first.t.is_monotonic_increasing


def test_time_split_is_chronological_disjoint_and_complete():
    frame = population()
    parts = time_split(frame, "t", validation_fraction=0.15, test_fraction=0.25)
    assert sum(len(p) for p in parts.values()) == len(frame)
    assert parts["train"].t.max() < parts["validation"].t.min()
    assert parts["validation"].t.max() < parts["test"].t.min()
    assert abs(len(parts["test"]) / len(frame) - 0.25) < 0.02


def leaky_parts():
    train = pd.DataFrame({"customer_id": [1, 2, 3], "x": [0.1, 0.2, 0.3], "c": ["a", "b", "a"], "y": [0, 1, 0]})
    validation = pd.DataFrame({"customer_id": [3, 4], "x": [0.3, 0.9], "c": ["a", "b"], "y": [0, 1]})
    test = pd.DataFrame({"customer_id": [5, 6], "x": [0.5, 0.6], "c": ["b", "b"], "y": [0, 0]})
    return {"train": train, "validation": validation, "test": test}


def leak_spec(demo_spec, **policy):
    return demo_spec.model_copy(update={
        "features": demo_spec.features.model_copy(update={"numeric": ["x"], "categorical": ["c"]}),
        "columns": demo_spec.columns.model_copy(update={"label": "y"}),
        "leakage": demo_spec.leakage.model_copy(update=policy),
    })


def test_entity_overlap_and_duplicate_rows_are_counted_with_the_spec_policy(demo_spec):
    from ml_tasks.split import leakage_findings

    findings = leakage_findings(leak_spec(demo_spec, entity_overlap="warn", duplicate_rows="fail"), leaky_parts())
    assert ("warn", "column 'customer_id': 1 entities (1 of 2 rows) of the validation split also appear in train") in findings
    assert any(policy == "fail" and "1 of 2 rows of the validation split repeat a train row" in message
               for policy, message in findings)
    assert not any("test split" in message for _, message in findings)
    assert leakage_findings(leak_spec(demo_spec, entity_overlap="ignore", duplicate_rows="ignore"), leaky_parts()) == []


def test_fitted_transforms_see_only_the_training_split(demo_spec):
    """Scale leakage: scaler statistics and category vocabularies come from train alone."""
    from ml_tasks.models import build_candidate, feature_frame

    rng = np.random.default_rng(0)
    train = pd.DataFrame({name: rng.normal(10, 2, 500) for name in demo_spec.features.numeric})
    for name in demo_spec.features.categorical:
        train[name] = rng.choice(["a", "b"], 500)
    y = rng.integers(0, 2, 500)
    test = train.assign(income=train.income + 1_000, channel="only_in_test")
    logistic = build_candidate(demo_spec.candidate("logistic_baseline"), demo_spec.features)
    logistic.fit(feature_frame(train, demo_spec.features), y)
    scaler = logistic.pipeline_.named_steps["columns"].named_transformers_["numeric"][-1]
    assert scaler.mean_[demo_spec.features.numeric.index("income")] == pytest.approx(train.income.mean())
    lgbm = build_candidate(demo_spec.candidate("lightgbm"), demo_spec.features)
    lgbm.fit(feature_frame(train, demo_spec.features), y)
    assert lgbm.categories_["channel"] == ["a", "b"]
    # Unseen test values do not change the fitted state; they are scored, not learned.
    before = scaler.mean_.copy()
    logistic.predict_proba(feature_frame(test, demo_spec.features))
    lgbm.predict_proba(feature_frame(test, demo_spec.features))
    assert np.array_equal(scaler.mean_, before) and lgbm.categories_["channel"] == ["a", "b"]
