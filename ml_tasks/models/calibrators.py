"""Calibrators: fitted monotone maps from a model's P(label = 1) to a calibrated one, and the
wrapper that serves a candidate's probabilities through one.

Four methods, from the simplest to the most flexible:

``none``
    the identity: the model's own probabilities.
``temperature``
    one parameter, ``p' = sigmoid(logit(p) / T)`` (Guo et al. 2017). ``T > 1`` softens an
    over-confident model, ``T < 1`` sharpens an under-confident one. Strictly monotone, so the
    ranking (ROC AUC) is unchanged.
``sigmoid``
    Platt scaling, two parameters, ``p' = sigmoid(a * logit(p) + b)``: a temperature plus a shift
    of the base rate (Platt's smoothed targets, fitted on the logits).
``isotonic``
    a non-decreasing step function (pool-adjacent-violators): fixes any monotone distortion, but
    needs many rows or it learns the noise (``CalibrationSpec.min_isotonic_rows``).

Which method a run uses is chosen on held-out rows by :mod:`ml_tasks.training.calibration`.
Every logged model carries its calibrator's parameters (:meth:`Calibrator.served_params`), which
the served form applies (:func:`ml_tasks.models.served.calibrate`), which is why they sit with
the models and not with the training code that chooses among them. ``transform`` applies the
same function, so what the gate measures is what a consumer is served.

Temperature, Platt and isotonic calibration are fitted by scikit-learn's
``CalibratedClassifierCV(FrozenEstimator(model), method=...)``
(:mod:`ml_tasks.models.sklearn_calibration`); Refit keeps the fitted parameters as plain numbers
(``beta_``, ``a_``/``b_``, ``X_thresholds_``/``y_thresholds_``), so neither a served model nor a
pickled one holds a scikit-learn object. ``tests/models/test_calibrators.py`` compares each method
with ``CalibratedClassifierCV`` on the model itself.

>>> served = CalibratedCandidate(candidate, make_calibrator("sigmoid").fit(p, y, w))   # doctest: +SKIP
>>> served.predict_proba(X_test)[:, 1]                                                  # doctest: +SKIP
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np
import pandas as pd

from ml_tasks.evaluation.metrics import EPS
from ml_tasks.models.base import Candidate

# The served arithmetic: served.logit clips probabilities LOGIT_CLIP from 0 and 1 first, so an
# exact 0 or 1 from a model maps to a finite logit (about +-27.6) instead of an infinity that would
# poison a fit; the calibrators are fitted on (sklearn_calibration.LogitScores), and applied to,
# the same logits.
from ml_tasks.models.served import calibrate

#: Methods from the simplest to the most flexible: a tie in log loss goes to the earlier one.
METHOD_ORDER = ("none", "temperature", "sigmoid", "isotonic")


class Calibrator(ABC):
    """A fitted monotone map from a model's P(label = 1) to a calibrated one.

    Subclasses are plain module-level classes holding floats, so a calibrator pickles (and
    cloudpickles, for MLflow) with the model it serves and loads without scikit-learn.
    """

    method: str = ""

    @abstractmethod
    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        """Learn the map from probabilities ``p``, 0/1 labels ``y`` and weights ``w`` (checked)."""

    def transform(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the positive class, same shape as ``p`` (the served map)."""
        return calibrate(p, self.served_params())

    def params(self) -> dict[str, float]:
        """The fitted parameters, small and JSON-able, for the run's manifest and report."""
        return {}

    def served_params(self) -> dict[str, Any]:
        """Everything :func:`ml_tasks.models.served.calibrate` needs to apply this map, JSON-able."""
        return {"method": self.method, **self.params()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.4g}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"


class IdentityCalibrator(Calibrator):
    """``none``: the model's probabilities as they are (the baseline every method must beat)."""

    method = "none"

    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        return self


class TemperatureCalibrator(Calibrator):
    """``p' = sigmoid(logit(p) / T)`` with one ``T > 0`` minimising weighted log loss.

    scikit-learn's ``method="temperature"`` on the logits: it reads a binary decision value ``z``
    as the two-class logits ``(-z, z)``, so its inverse temperature ``beta_`` gives
    ``sigmoid(2 beta z)``, and ``T = 1 / (2 beta)``. It searches ``log beta`` in [-10, 10] (bounded
    Brent), symmetric between softening and sharpening.
    """

    method = "temperature"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        from ml_tasks.models.sklearn_calibration import fit_scikit_learn

        fitted = fit_scikit_learn(self.method, p, y, w, on_logits=True)
        self.temperature = 1.0 / (2.0 * float(fitted.beta_))
        return self

    def params(self) -> dict[str, float]:
        return {"temperature": self.temperature}


class SigmoidCalibrator(Calibrator):
    """Platt scaling: ``p' = sigmoid(slope * logit(p) + intercept)``.

    scikit-learn's ``method="sigmoid"`` on the logits (``_SigmoidCalibration``, whose
    ``p' = sigmoid(-(a z + b))`` gives ``slope = -a``, ``intercept = -b``): Platt's smoothed
    targets, ``(N+ + 1) / (N+ + 2)`` for positives and ``1 / (N- + 2)`` for negatives, a Bayesian
    prior that keeps a perfectly separated calibration set from driving the slope to infinity.

    One deliberate difference in what it is handed: weights rescaled to sum to the number of
    rows. scikit-learn counts ``N+`` and ``N-`` with the weights as given, and the sampler's
    weights sum to the *population* size, which would shrink Platt's prior by the sampling ratio
    (100-fold for a 1% sample). Without weights, or with weights of mean 1, the fit is exactly
    scikit-learn's.
    """

    method = "sigmoid"

    def __init__(self, slope: float = 1.0, intercept: float = 0.0) -> None:
        self.slope = float(slope)
        self.intercept = float(intercept)

    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        from ml_tasks.models.sklearn_calibration import fit_scikit_learn

        fitted = fit_scikit_learn(self.method, p, y, w * (len(w) / w.sum()), on_logits=True)
        self.slope, self.intercept = -float(fitted.a_), -float(fitted.b_)
        return self

    def params(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept}


class IsotonicCalibrator(Calibrator):
    """A non-decreasing step function of ``p`` (scikit-learn ``IsotonicRegression``).

    scikit-learn's ``method="isotonic"`` on the probabilities themselves, as it fits a model
    without ``decision_function``; kept as its fitted points (``X_thresholds_``,
    ``y_thresholds_``), linear between them and clipped outside them (its ``out_of_bounds="clip"``).
    Outputs are kept within ``[EPS, 1 - EPS]``: a block of fitting rows without a single positive
    would otherwise say "never", one row away from infinite log loss.
    """

    method = "isotonic"

    def __init__(self) -> None:
        self.x: list[float] | None = None
        self.y: list[float] | None = None

    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        from ml_tasks.models.sklearn_calibration import fit_scikit_learn

        fitted = fit_scikit_learn(self.method, p, y, w, on_logits=False)
        self.x, self.y = fitted.X_thresholds_.tolist(), fitted.y_thresholds_.tolist()
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickles of earlier releases held the fitted ``IsotonicRegression`` itself."""
        regression = state.pop("regression", None)
        if regression is not None:
            state.update(x=regression.X_thresholds_.tolist(), y=regression.y_thresholds_.tolist())
        self.__dict__.update({"x": None, "y": None, **state})

    def params(self) -> dict[str, float]:
        return {"steps": float(len(self.x)) if self.x is not None else 0.0}

    def served_params(self) -> dict[str, Any]:
        if self.x is None:
            raise RuntimeError("IsotonicCalibrator used before fit")
        return {"method": self.method, "x": self.x, "y": self.y, "clip": EPS}


_CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.method: cls for cls in (IdentityCalibrator, TemperatureCalibrator, SigmoidCalibrator, IsotonicCalibrator)
}


def make_calibrator(method: str) -> Calibrator:
    """An unfitted calibrator of one method (a name from :data:`METHOD_ORDER`)."""
    if method not in _CALIBRATORS:
        raise ValueError(f"calibration.methods: unknown method {method!r}, expected one of {list(METHOD_ORDER)}")
    return _CALIBRATORS[method]()


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------

class CalibratedCandidate:
    """A fitted candidate whose probabilities pass through a calibrator.

    Offers ``predict_proba(X) -> (n, 2)`` like the candidate it wraps, and is what
    :func:`ml_tasks.registry.pyfunc.log_served_model` logs, so one MLflow URI serves calibrated
    probabilities. The uncalibrated model stays reachable as ``candidate`` (warm starts and
    feature importances need the model itself, not this wrapper).
    """

    def __init__(self, candidate: Candidate, calibrator: Calibrator) -> None:
        if not callable(getattr(candidate, "predict_proba", None)):
            raise TypeError(f"candidate: expected a fitted model with predict_proba, got {type(candidate).__name__}")
        self.candidate = candidate
        self.calibrator = calibrator
        self.family: str = getattr(candidate, "family", type(candidate).__name__)

    @property
    def calibration_method(self) -> str:
        return self.calibrator.method

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        calibrated = self.calibrator.transform(np.asarray(self.candidate.predict_proba(X))[:, 1])
        return np.column_stack([1.0 - calibrated, calibrated])

    def __repr__(self) -> str:
        return f"CalibratedCandidate({self.family}, {self.calibrator!r})"
