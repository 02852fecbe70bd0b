"""Feature drift: PSI is zero for the same distribution and flags shifts, nulls and new categories."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_tasks.data.drift import band, feature_drift, population_stability


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    reference = pd.Series(rng.normal(0, 1, 20_000))
    assert population_stability(reference, pd.Series(rng.normal(0, 1, 20_000))) < 0.01
    assert band(population_stability(reference, pd.Series(rng.normal(1.0, 1, 20_000)))) == "major shift"
    # A jump in missing values is drift, even when the present values look alike.
    with_nulls = pd.Series(np.where(rng.random(20_000) < 0.3, np.nan, rng.normal(0, 1, 20_000)))
    assert population_stability(reference, with_nulls) > 0.25


def test_categorical_drift_counts_new_and_vanished_values_and_sorts_features():
    reference = pd.DataFrame({"channel": ["web"] * 700 + ["branch"] * 300, "x": np.arange(1000.0)})
    current = pd.DataFrame({"channel": ["web"] * 500 + ["mobile"] * 500, "x": np.arange(1000.0)})
    rows = feature_drift(reference, current, ["x", "channel", "missing_feature"])
    assert [r["feature"] for r in rows] == ["channel", "x"]
    assert rows[0]["band"] == "major shift" and rows[1]["psi"] == 0.0
