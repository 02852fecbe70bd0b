"""Calibrators: each method is scikit-learn's, and a calibrated candidate pickles and serves."""

from __future__ import annotations

import pickle
import warnings

import cloudpickle
import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import log_loss, roc_auc_score

from ml_tasks.evaluation.metrics import EPS
from ml_tasks.models.calibrators import (
    METHOD_ORDER,
    CalibratedCandidate,
    IsotonicCalibrator,
    TemperatureCalibrator,
    make_calibrator,
)
from tests.overconfident import OverconfidentLogitModel, OverconfidentModel, positive


@pytest.mark.filterwarnings("ignore:Since FrozenEstimator does not appear to accept sample_weight")
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("method, model_class, tolerance", [
    # Both are scikit-learn's fit; Refit's is on logit(p) rather than the model's own decision
    # values, with weights rescaled as w * n / sum(w): rounding moves where L-BFGS-B stops within
    # its tolerance. Observed 7e-15 unweighted, 4e-9 weighted.
    ("sigmoid", OverconfidentLogitModel, 1e-7),
    # The same IsotonicRegression on the same inputs; Refit also clips to [EPS, 1 - EPS] (below).
    # Observed 0 and 2e-16.
    ("isotonic", OverconfidentModel, 1e-12),
    # On a model without decision_function scikit-learn takes log(p + 1e-12); Refit hands it the
    # clipped logit, so the bounded search of 1/T takes another path to the same optimum.
    # Observed 5e-9 and 3e-9.
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

    ours = make_calibrator(method).fit(positive(model, X), y, w if weighted else np.ones(len(y)))
    expected = np.clip(reference.predict_proba(X_test)[:, 1], EPS, 1 - EPS)
    got = np.clip(ours.transform(positive(model, X_test)), EPS, 1 - EPS)
    assert np.abs(got - expected).max() < tolerance


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_the_served_parameters_are_scikit_learns_fitted_ones(windows, weighted):
    """What a model serves is read off scikit-learn's fitted calibrators: isotonic's points to the
    last digit, Platt's ``-a_``/``-b_`` and temperature's ``1 / (2 beta_)`` on the same logits."""
    from sklearn.frozen import FrozenEstimator

    from ml_tasks.models.served import logit
    from ml_tasks.models.sklearn_calibration import LogitScores

    X_train, y_train, _ = windows["train"]
    X, y, w = windows["calibration"]
    w = w if weighted else np.ones(len(y))
    model = OverconfidentModel().fit(X_train, y_train)
    p = positive(model, X)

    def sklearn_fit(estimator, method, inputs, weights):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # FrozenEstimator takes no sample_weight
            fitted = CalibratedClassifierCV(FrozenEstimator(estimator), method=method).fit(inputs, y, weights)
        return fitted.calibrated_classifiers_[0].calibrators[0]

    isotonic = sklearn_fit(model, "isotonic", X, w)
    served = make_calibrator("isotonic").fit(p, y, w).served_params()
    assert served["x"] == isotonic.X_thresholds_.tolist() and served["y"] == isotonic.y_thresholds_.tolist()

    scores = LogitScores().fit()
    platt = sklearn_fit(scores, "sigmoid", p.reshape(-1, 1), w / w.mean())
    assert make_calibrator("sigmoid").fit(p, y, w).params() == {"slope": -platt.a_, "intercept": -platt.b_}
    temperature = sklearn_fit(scores, "temperature", p.reshape(-1, 1), w)
    assert make_calibrator("temperature").fit(p, y, w).params() == {"temperature": 1 / (2 * temperature.beta_)}
    assert np.array_equal(scores.decision_function(p.reshape(-1, 1)), logit(p))


def test_a_fitted_calibrator_pickles_without_scikit_learn(windows, overconfident):
    X, y, w = windows["calibration"]
    for method in METHOD_ORDER:
        calibrator = make_calibrator(method).fit(positive(overconfident, X), y, w)
        assert b"sklearn" not in pickle.dumps(calibrator), method


def test_an_isotonic_calibrator_pickled_with_its_regression_still_loads(windows, overconfident):
    """Releases before the switch to ``CalibratedClassifierCV`` pickled the ``IsotonicRegression``."""
    from sklearn.isotonic import IsotonicRegression

    X, y, w = windows["calibration"]
    p = positive(overconfident, X)
    current = IsotonicCalibrator().fit(p, y, w)
    earlier = IsotonicCalibrator.__new__(IsotonicCalibrator)
    earlier.__dict__["regression"] = IsotonicRegression(out_of_bounds="clip").fit(p, y, sample_weight=w)
    restored = pickle.loads(pickle.dumps(earlier))
    assert restored.served_params() == current.served_params()
    assert np.array_equal(restored.transform(p), current.transform(p))


def test_isotonic_clips_to_eps_so_log_loss_stays_finite():
    p = np.array([0.1, 0.2, 0.8, 0.9])
    calibrator = IsotonicCalibrator().fit(p, np.array([0, 0, 1, 1]), np.ones(4))
    assert calibrator.transform(p).tolist() == [EPS, EPS, 1 - EPS, 1 - EPS]


def test_temperature_keeps_ranking_and_lowers_log_loss(windows, overconfident):
    X, y, w = windows["calibration"]
    calibrator = TemperatureCalibrator().fit(positive(overconfident, X), y, w)
    X_test, y_test, w_test = windows["test"]
    p = positive(overconfident, X_test)
    calibrated = calibrator.transform(p)

    assert calibrator.temperature > 2.0  # the model's logit was tripled
    assert roc_auc_score(y_test, calibrated, sample_weight=w_test) == roc_auc_score(y_test, p, sample_weight=w_test)
    assert (np.argsort(calibrated, kind="stable") == np.argsort(p, kind="stable")).all()
    assert log_loss(y_test, calibrated, sample_weight=w_test) < log_loss(y_test, p, sample_weight=w_test) - 0.05


def test_calibrated_candidate_pickles_and_serves_calibrated_probabilities(windows, overconfident):
    X, y, w = windows["calibration"]
    calibrator = make_calibrator("sigmoid").fit(positive(overconfident, X), y, w)
    model = CalibratedCandidate(overconfident, calibrator)
    X_test = windows["test"][0]
    proba = model.predict_proba(X_test)

    assert model.family == "overconfident" and model.calibration_method == "sigmoid"
    assert proba.shape == (len(X_test), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(proba[:, 1], calibrator.transform(positive(overconfident, X_test)))
    for dumps, loads in ((cloudpickle.dumps, cloudpickle.loads), (pickle.dumps, pickle.loads)):
        restored = loads(dumps(model))
        assert np.array_equal(restored.predict_proba(X_test), proba)
