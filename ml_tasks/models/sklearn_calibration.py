"""scikit-learn's calibrators, fitted on a model's probabilities of the calibration rows.

Refit's calibrators (:mod:`ml_tasks.models.calibrators`) are fitted by scikit-learn's
``CalibratedClassifierCV(FrozenEstimator(model), method=...)`` and keep only the fitted
parameters, which the served form applies with numpy (:func:`ml_tasks.models.served.calibrate`).

The frozen model is :class:`Scores`, a classifier whose one input column *is* its probability:
the trainer predicts the calibration window once and every method is fitted on those
probabilities, which is what ``FrozenEstimator(candidate)`` would hand each calibrator, without
predicting the window again per method and without making every candidate family a
scikit-learn estimator. :class:`LogitScores` also offers ``decision_function`` = Refit's
clipped logit (:func:`ml_tasks.models.served.logit`), so Platt and temperature scaling are fitted on
exactly the logits that serving applies them to.

Imported only by a calibrator's ``fit`` (scikit-learn costs a trainer ~0.6 s to import).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from ml_tasks.models.served import logit


class Scores(ClassifierMixin, BaseEstimator):
    """A fitted binary classifier whose input ``X`` is one column: its own P(label = 1)."""

    def fit(self, X: Any = None, y: Any = None) -> Scores:
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        p = np.asarray(X, dtype=float)[:, 0]
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (np.asarray(X, dtype=float)[:, 0] > 0.5).astype(int)


class LogitScores(Scores):
    """:class:`Scores` with ``decision_function`` = the clipped logit of the probability, which
    scikit-learn prefers to ``predict_proba`` when a model has both."""

    def decision_function(self, X: Any) -> np.ndarray:
        return logit(np.asarray(X, dtype=float)[:, 0])


def fit_scikit_learn(method: str, p: np.ndarray, y: np.ndarray, w: np.ndarray, *, on_logits: bool) -> Any:
    """scikit-learn's fitted calibrator of ``method`` for probabilities ``p``, 0/1 labels ``y`` and
    weights ``w`` (checked by the caller): ``_SigmoidCalibration`` (``a_``, ``b_``),
    ``_TemperatureScaling`` (``beta_``) or ``IsotonicRegression`` (``X_thresholds_``,
    ``y_thresholds_``). ``on_logits``: fit on the logits (:class:`LogitScores`), else on ``p``.

    One "fold" whose test part is every row: the frozen model predicts each row once (the
    default 5-fold split would give the same predictions, but refuses a class with fewer than
    5 rows). scikit-learn warns that a ``FrozenEstimator`` does not take weights; they are meant
    for the calibration alone, so that warning is silenced.

    Raises ``ValueError`` when ``y`` holds one class only (nothing to calibrate against).
    """
    labels = np.unique(y)
    if len(labels) < 2:
        raise ValueError(f"y: the calibration rows hold only label {labels.tolist()}; calibrating needs both")
    model = (LogitScores() if on_logits else Scores()).fit()
    rows = np.arange(len(p))
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method, cv=[(rows, rows)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Since FrozenEstimator does not appear to accept sample_weight")
        calibrated.fit(np.asarray(p, dtype=float).reshape(-1, 1), y, sample_weight=w)
    (fitted,) = calibrated.calibrated_classifiers_[0].calibrators
    return fitted
