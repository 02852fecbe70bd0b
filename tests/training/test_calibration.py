"""Choosing a calibration: it helps on held-out rows, and the choice uses only the select part."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import log_loss

from ml_tasks.core.spec import CalibrationSpec
from ml_tasks.evaluation.metrics import EPS, expected_calibration_error
from ml_tasks.training.calibration import fit_calibrator, split_calibration_window
from tests.overconfident import positive


def test_calibration_lowers_ece_on_held_out_rows(windows, overconfident):
    X, y, w = windows["calibration"]
    fit_idx, select_idx = split_calibration_window(np.arange(len(y)), 0.5)
    p = positive(overconfident, X)
    result = fit_calibrator(p[fit_idx], y[fit_idx], w[fit_idx], p[select_idx], y[select_idx], w[select_idx],
                            CalibrationSpec(min_isotonic_rows=500))

    X_test, y_test, w_test = windows["test"]
    p_test = positive(overconfident, X_test)
    before = expected_calibration_error(y_test, p_test, w_test)
    after = expected_calibration_error(y_test, result.calibrator.transform(p_test), w_test)
    assert result.method != "none"
    assert set(result.select_metrics) == {"none", "temperature", "sigmoid", "isotonic"}
    assert after < before / 2
    lowest = min(m["log_loss"] for m in result.select_metrics.values())
    assert result.select_metrics[result.method]["log_loss"] == lowest


# --- choosing a method -----------------------------------------------------------------------------

def test_isotonic_skipped_below_min_rows_with_reason(windows, overconfident):
    X, y, w = windows["calibration"]
    p = positive(overconfident, X)
    result = fit_calibrator(p[:200], y[:200], w[:200], p[200:400], y[200:400], w[200:400],
                            CalibrationSpec(min_isotonic_rows=1000))
    assert "isotonic" not in result.select_metrics and "isotonic" not in result.fitted
    assert "200 rows" in result.skipped["isotonic"] and "min_isotonic_rows = 1000" in result.skipped["isotonic"]
    assert result.to_dict()["skipped"] == result.skipped


def test_selection_uses_only_the_select_part():
    """Over-confident on the fit part, calibrated on the select part: temperature wins the first,
    loses the second, and is not chosen."""
    rng = np.random.default_rng(3)
    z_fit, z_select = rng.normal(0, 2, 4000), rng.normal(0, 2, 4000)
    p_fit, p_select = expit(z_fit), expit(z_select)
    y_fit = (rng.random(4000) < expit(z_fit / 3)).astype(int)  # the truth is 3x softer here ...
    y_select = (rng.random(4000) < p_select).astype(int)        # ... and exactly p here
    ones = np.ones(4000)

    result = fit_calibrator(p_fit, y_fit, ones, p_select, y_select, ones, CalibrationSpec(min_isotonic_rows=100))

    fit_loss = {m: log_loss(y_fit, np.clip(c.transform(p_fit), EPS, 1 - EPS)) for m, c in result.fitted.items()}
    assert min(fit_loss, key=fit_loss.get) != "none" and fit_loss["temperature"] < fit_loss["none"] - 0.05
    assert result.method == "none"
    assert result.select_metrics["none"]["log_loss"] < result.select_metrics["temperature"]["log_loss"]


def test_ties_go_to_the_simpler_method():
    # Every method maps a constant 0.5 on balanced labels to 0.5: all tie.
    p, y = np.full(400, 0.5), np.tile([0, 1], 200)
    methods = ["isotonic", "sigmoid", "temperature", "none"]
    result = fit_calibrator(p, y, None, p, y, None, CalibrationSpec(methods=methods, min_isotonic_rows=10))
    assert len({m["log_loss"] for m in result.select_metrics.values()}) == 1
    assert result.method == "none"
    result = fit_calibrator(p, y, None, p, y, None, CalibrationSpec(methods=methods[:3], min_isotonic_rows=10))
    assert result.method == "temperature"


def test_a_fit_part_of_one_label_leaves_only_none():
    p, y, y_select = np.linspace(0.05, 0.3, 400), np.zeros(400, dtype=int), np.tile([0, 1], 200)
    result = fit_calibrator(p, y, None, p, y_select, None, CalibrationSpec(min_isotonic_rows=10))
    assert result.method == "none" and list(result.select_metrics) == ["none"]
    assert set(result.skipped) == {"temperature", "sigmoid", "isotonic"}
    assert all("only label 0" in reason for reason in result.skipped.values())


def test_every_method_skipped_is_an_error():
    p, y = np.full(50, 0.3), np.tile([0, 1], 25)
    with pytest.raises(ValueError, match="calibration.methods: every method was skipped"):
        fit_calibrator(p, y, None, p, y, None, CalibrationSpec(methods=["isotonic"], min_isotonic_rows=100))


@pytest.mark.parametrize("arguments, message", [
    ({"p_fit": np.array([0.2, 1.5])}, "p_fit: expected probabilities within"),
    ({"y_select": np.array([0, 2])}, "y_select: expected labels 0 and 1"),
    ({"w_fit": np.array([1.0, -1.0])}, "w_fit: expected finite non-negative"),
    ({"y_fit": np.array([0])}, "y_fit: 1 labels for 2 probabilities"),
])
def test_bad_inputs_name_the_argument(arguments, message):
    good = {"p_fit": np.array([0.2, 0.7]), "y_fit": np.array([0, 1]), "w_fit": None,
            "p_select": np.array([0.3, 0.6]), "y_select": np.array([0, 1]), "w_select": None}
    with pytest.raises(ValueError, match=message):
        fit_calibrator(**{**good, **arguments}, spec=CalibrationSpec())


# --- splitting the calibration window by time ------------------------------------------------------

def test_split_puts_the_later_rows_in_the_select_part():
    times = pd.Series(pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")).sample(frac=1.0, random_state=1)
    fit_idx, select_idx = split_calibration_window(times, 0.3)
    assert len(select_idx) == 30 and len(fit_idx) == 70
    assert times.iloc[fit_idx].max() < times.iloc[select_idx].min()
    assert sorted([*fit_idx, *select_idx]) == list(range(100))


def test_split_keeps_ties_at_the_cutoff_together():
    times = np.array([1, 2, 3, 3, 3, 4])
    fit_idx, select_idx = split_calibration_window(times, 0.5)  # the cutoff falls inside the 3s
    assert fit_idx.tolist() == [0, 1] and select_idx.tolist() == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="no earlier rows are left"):
        split_calibration_window(np.full(10, 5), 0.5)
