"""An over-confident classifier and seeded calibration windows: what the calibration tests share.

The model ranks rows right but multiplies its logit by ``power``, so every calibrator has a
known distortion to undo. ``tests/conftest.py`` turns :func:`make_windows` and
:class:`OverconfidentModel` into the ``windows`` and ``overconfident`` fixtures.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

COEFFICIENTS = np.array([1.0, -0.5, 0.3, 0.0])


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


def rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, len(COEFFICIENTS)))
    return X, (rng.random(n) < expit(X @ COEFFICIENTS - 1.0)).astype(int)


def make_windows() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Train, calibration and test rows (X, y, integer weights) from one seeded generator."""
    rng = np.random.default_rng(7)
    out = {}
    for name, n in (("train", 2000), ("calibration", 3000), ("test", 4000)):
        X, y = rows(rng, n)
        out[name] = (X, y, rng.integers(1, 5, size=n).astype(float))
    return out


def positive(model, X) -> np.ndarray:
    """P(label = 1) of a fitted model."""
    return model.predict_proba(X)[:, 1]
