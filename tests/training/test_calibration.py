"""Calibration: methods agree with scikit-learn, selection uses held-out rows, metrics are exact."""

from __future__ import annotations

import pickle

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from ml_tasks.core.spec import CalibrationSpec
from ml_tasks.evaluation.charts import reliability_diagram_png
from ml_tasks.evaluation.metrics import (
    EPS,
    calibration_metrics,
    equal_mass_bins,
    expected_calibration_error,
    max_calibration_error,
)
from ml_tasks.models.calibrators import (
    CalibratedCandidate,
    IsotonicCalibrator,
    TemperatureCalibrator,
    make_calibrator,
)
from ml_tasks.training.calibration import fit_calibrator, split_calibration_window

COEFFICIENTS = np.array([1.0, -0.5, 0.3, 0.0])
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class OverconfidentModel(ClassifierMixin, BaseEstimator):
    """A logistic regression whose logit is multiplied by ``power``: right ranking, too sure.

    Offers ``predict_proba`` only, so scikit-learn calibrates its probabilities (as Refit does).
    """

    family = "overconfident"

    def __init__(self, power: float = 3.0) -> None:
        self.power = power

    def fit(self, X, y):
        self.base_ = LogisticRegression().fit(X, y)
        self.classes_ = self.base_.classes_
        return self

    def _logit(self, X) -> np.ndarray:
        return self.power * self.base_.decision_function(X)

    def predict(self, X) -> np.ndarray:  # scikit-learn's cross_val_predict insists on it
        return (self._logit(X) > 0).astype(int)

    def predict_proba(self, X) -> np.ndarray:
        p = expit(self._logit(X))
        return np.column_stack([1.0 - p, p])


class OverconfidentLogitModel(OverconfidentModel):
    """The same model with ``decision_function`` = the logit of its probability.

    scikit-learn fits Platt scaling on decision values when a model has them; Refit fits it on
    the logit of the probability, so this is the model on which both see the same inputs.
    """

    def decision_function(self, X) -> np.ndarray:
        return self._logit(X)


def _rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, len(COEFFICIENTS)))
    return X, (rng.random(n) < expit(X @ COEFFICIENTS - 1.0)).astype(int)


@pytest.fixture(scope="module")
def windows() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Train, calibration and test rows (X, y, integer weights) from one seeded generator."""
    rng = np.random.default_rng(7)
    out = {}
    for name, n in (("train", 2000), ("calibration", 3000), ("test", 4000)):
        X, y = _rows(rng, n)
        out[name] = (X, y, rng.integers(1, 5, size=n).astype(float))
    return out


@pytest.fixture(scope="module")
def overconfident(windows) -> OverconfidentModel:
    X, y, _ = windows["train"]
    return OverconfidentModel().fit(X, y)


def _positive(model, X) -> np.ndarray:
    return model.predict_proba(X)[:, 1]


# --- calibration helps, and each method is scikit-learn's ------------------------------------------

def test_calibration_lowers_ece_on_held_out_rows(windows, overconfident):
    X, y, w = windows["calibration"]
    fit_idx, select_idx = split_calibration_window(np.arange(len(y)), 0.5)
    p = _positive(overconfident, X)
    result = fit_calibrator(p[fit_idx], y[fit_idx], w[fit_idx], p[select_idx], y[select_idx], w[select_idx],
                            CalibrationSpec(min_isotonic_rows=500))

    X_test, y_test, w_test = windows["test"]
    p_test = _positive(overconfident, X_test)
    before = expected_calibration_error(y_test, p_test, w_test)
    after = expected_calibration_error(y_test, result.calibrator.transform(p_test), w_test)
    assert result.method != "none"
    assert set(result.select_metrics) == {"none", "temperature", "sigmoid", "isotonic"}
    assert after < before / 2
    assert result.select_metrics[result.method]["log_loss"] == min(m["log_loss"] for m in result.select_metrics.values())


@pytest.mark.filterwarnings("ignore:Since FrozenEstimator does not appear to accept sample_weight")
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("method, model_class, tolerance", [
    # Same objective, optimiser and start; rounding (e.g. of rescaled weights) can move where
    # L-BFGS-B stops within its tolerance: observed 2e-14 unweighted, 4e-9 weighted.
    ("sigmoid", OverconfidentLogitModel, 1e-7),
    # The same IsotonicRegression on the same inputs; Refit also clips to [EPS, 1 - EPS] (below).
    ("isotonic", OverconfidentModel, 1e-12),
    # scikit-learn takes log(p + 1e-12) and searches 1/T to its own xatol: agreement to ~1e-7.
    ("temperature", OverconfidentModel, 1e-6),
])
def test_methods_agree_with_scikit_learn(windows, method, model_class, tolerance, weighted):
    from sklearn.frozen import (
        FrozenEstimator,  # scikit-learn >= 1.6 (replaces cv="prefit")
    )

    X_train, y_train, _ = windows["train"]
    X, y, w = windows["calibration"]
    X_test = windows["test"][0]
    model = model_class().fit(X_train, y_train)
    # Refit's Platt fit rescales weights to mean 1 (see SigmoidCalibrator): hand scikit-learn the same.
    sklearn_weights = w / w.mean() if weighted else None
    reference = CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(X, y, sample_weight=sklearn_weights)

    ours = make_calibrator(method).fit(_positive(model, X), y, w if weighted else np.ones(len(y)))
    expected = np.clip(reference.predict_proba(X_test)[:, 1], EPS, 1 - EPS)
    got = np.clip(ours.transform(_positive(model, X_test)), EPS, 1 - EPS)
    assert np.abs(got - expected).max() < tolerance


def test_isotonic_clips_to_eps_so_log_loss_stays_finite():
    p = np.array([0.1, 0.2, 0.8, 0.9])
    calibrator = IsotonicCalibrator().fit(p, np.array([0, 0, 1, 1]), np.ones(4))
    assert calibrator.transform(p).tolist() == [EPS, EPS, 1 - EPS, 1 - EPS]


def test_temperature_keeps_ranking_and_lowers_log_loss(windows, overconfident):
    X, y, w = windows["calibration"]
    calibrator = TemperatureCalibrator().fit(_positive(overconfident, X), y, w)
    X_test, y_test, w_test = windows["test"]
    p = _positive(overconfident, X_test)
    calibrated = calibrator.transform(p)

    assert calibrator.temperature > 2.0  # the model's logit was tripled
    assert roc_auc_score(y_test, calibrated, sample_weight=w_test) == roc_auc_score(y_test, p, sample_weight=w_test)
    assert (np.argsort(calibrated, kind="stable") == np.argsort(p, kind="stable")).all()
    assert log_loss(y_test, calibrated, sample_weight=w_test) < log_loss(y_test, p, sample_weight=w_test) - 0.05


# --- choosing a method -----------------------------------------------------------------------------

def test_isotonic_skipped_below_min_rows_with_reason(windows, overconfident):
    X, y, w = windows["calibration"]
    p = _positive(overconfident, X)
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


# --- metrics ---------------------------------------------------------------------------------------

def test_ece_and_mce_with_equal_mass_bins_match_a_hand_computation():
    # Two bins of two rows: |0.5 - 0.15| = 0.35 and |0.5 - 0.35| = 0.15, each half the mass.
    y, p = [0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.25, abs=1e-15)
    assert max_calibration_error(y, p, bins=2) == pytest.approx(0.35, abs=1e-15)
    # Three tied rows (3/4 of the mass) share a bin: |2/3 - 0.2| x 3/4 + |1 - 0.8| x 1/4 = 0.4.
    y, p = [0, 1, 1, 1], [0.2, 0.2, 0.2, 0.8]
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.4, abs=1e-15)
    assert max_calibration_error(y, p, bins=2) == pytest.approx(2 / 3 - 0.2, abs=1e-15)


def test_ties_share_a_bin_whatever_the_row_order():
    rng = np.random.default_rng(0)
    p = rng.choice([0.1, 0.3, 0.5, 0.7], size=200)
    y = (rng.random(200) < p).astype(int)
    order = rng.permutation(200)
    bins = equal_mass_bins(p, bins=10)
    assert all(len(set(bins[p == value])) == 1 for value in np.unique(p))
    assert expected_calibration_error(y[order], p[order], bins=10) == pytest.approx(expected_calibration_error(y, p, bins=10))


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(1)
    p = rng.random(300)
    y = (rng.random(300) < p**2).astype(int)
    w = rng.integers(0, 4, size=300)
    repeated = np.repeat(np.arange(300), w)
    weighted = calibration_metrics(y, p, w.astype(float), bins=7)
    expanded = calibration_metrics(y[repeated], p[repeated], None, bins=7)
    assert weighted == pytest.approx(expanded, rel=1e-12, abs=1e-15)
    assert set(weighted) == {"ece", "mce", "brier", "log_loss"}


def test_reliability_diagram_is_a_small_png_and_leaves_matplotlib_alone(windows, overconfident):
    import matplotlib

    backend = matplotlib.get_backend()
    X, y, w = windows["test"]
    p = _positive(overconfident, X)
    png = reliability_diagram_png({"before": (y, p, w), "after (temperature)": (y, expit(np.log(p / (1 - p)) / 3), w)},
                                  bins=15, title="Calibration")
    assert png.startswith(PNG_MAGIC)
    assert len(png) < 150_000
    assert matplotlib.get_backend() == backend


# --- serving ---------------------------------------------------------------------------------------

def test_calibrated_candidate_pickles_and_serves_calibrated_probabilities(windows, overconfident):
    X, y, w = windows["calibration"]
    calibrator = make_calibrator("sigmoid").fit(_positive(overconfident, X), y, w)
    model = CalibratedCandidate(overconfident, calibrator)
    X_test = windows["test"][0]
    proba = model.predict_proba(X_test)

    assert model.family == "overconfident" and model.calibration_method == "sigmoid"
    assert proba.shape == (len(X_test), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(proba[:, 1], calibrator.transform(_positive(overconfident, X_test)))
    for dumps, loads in ((cloudpickle.dumps, cloudpickle.loads), (pickle.dumps, pickle.loads)):
        restored = loads(dumps(model))
        assert np.array_equal(restored.predict_proba(X_test), proba)


@pytest.mark.filterwarnings("ignore:.*Any type hint is inferred")  # mlflow on pyfunc.py's untyped predict
def test_pyfunc_candidate_model_serves_the_calibrated_probabilities(windows, overconfident):
    pytest.importorskip("mlflow")
    from ml_tasks.registry.pyfunc import CandidateModel

    X, y, w = windows["calibration"]
    model = CalibratedCandidate(overconfident, make_calibrator("isotonic").fit(_positive(overconfident, X), y, w))
    frame = pd.DataFrame(windows["test"][0][:50])
    served = CandidateModel(model).predict(None, frame)["probability"].to_numpy()
    assert np.array_equal(served, model.predict_proba(frame)[:, 1])
