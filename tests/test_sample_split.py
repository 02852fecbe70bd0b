"""Stratified sampling keeps rare strata and reweights to the population; splits follow time."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
