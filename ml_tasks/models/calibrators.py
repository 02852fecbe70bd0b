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
    of the base rate. Fitted exactly as scikit-learn's ``CalibratedClassifierCV(method="sigmoid")``
    fits on decision values (Platt's smoothed targets, same optimiser and start), so the two agree.
``isotonic``
    a non-decreasing step function (pool-adjacent-violators): fixes any monotone distortion, but
    needs many rows or it learns the noise (``CalibrationSpec.min_isotonic_rows``).

Which method a run uses is chosen on held-out rows by :mod:`ml_tasks.training.calibration`.
Every logged model carries its calibrator's parameters (:meth:`Calibrator.served_params`), which
the served form applies (:func:`ml_tasks.models.served.calibrate`), which is why they sit with
the models and not with the training code that chooses among them. Temperature and Platt
scaling are written here rather than taken from scikit-learn: scikit-learn offers no
temperature scaling, and its Platt fit is private (``_SigmoidCalibration``) and unweighted by
design of its prior; isotonic regression is scikit-learn's own.

>>> served = CalibratedCandidate(candidate, make_calibrator("sigmoid").fit(p, y, w))   # doctest: +SKIP
>>> served.predict_proba(X_test)[:, 1]                                                  # doctest: +SKIP
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from ml_tasks.evaluation.metrics import EPS
from ml_tasks.models.base import Candidate

# served.logit clips probabilities LOGIT_CLIP from 0 and 1 first, so an exact 0 or 1 from a model
# maps to a finite logit (about +-27.6) instead of an infinity that would poison a fit; the served
# form applies the calibrators with the same function.
from ml_tasks.models.served import logit

#: Methods from the simplest to the most flexible: a tie in log loss goes to the earlier one.
METHOD_ORDER = ("none", "temperature", "sigmoid", "isotonic")
#: Bounds of log T in the temperature search (T in [4.5e-5, 2.2e4]), as scikit-learn uses for
#: its inverse temperature.
_LOG_T_BOUNDS = (-10.0, 10.0)


class Calibrator(ABC):
    """A fitted monotone map from a model's P(label = 1) to a calibrated one.

    Subclasses are plain module-level classes holding floats or a scikit-learn estimator, so a
    calibrator pickles (and cloudpickles, for MLflow) with the model it serves.
    """

    method: str = ""

    @abstractmethod
    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        """Learn the map from probabilities ``p``, 0/1 labels ``y`` and weights ``w`` (checked)."""

    @abstractmethod
    def transform(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the positive class, same shape as ``p``."""

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

    def transform(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p, dtype=float)


class TemperatureCalibrator(Calibrator):
    """``p' = sigmoid(logit(p) / T)`` with one ``T > 0`` minimising weighted log loss.

    Searched on ``log T`` (bounded Brent), so the search is symmetric between softening and
    sharpening and ``T`` stays positive.
    """

    method = "temperature"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        z = logit(p)
        search = minimize_scalar(lambda log_t: _log_loss_of_logits(z / np.exp(log_t), y, w),
                                 bounds=_LOG_T_BOUNDS, method="bounded",
                                 options={"xatol": 64 * np.finfo(float).eps})
        if not search.success:  # pragma: no cover - the bounded search of a convex function converges
            raise RuntimeError(f"temperature scaling did not converge: {search.message}")
        self.temperature = float(np.exp(search.x))
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        return expit(logit(p) / self.temperature)

    def params(self) -> dict[str, float]:
        return {"temperature": self.temperature}


class SigmoidCalibrator(Calibrator):
    """Platt scaling: ``p' = sigmoid(slope * logit(p) + intercept)``.

    Matches scikit-learn's ``_SigmoidCalibration`` fitted on decision values:

    * targets are Platt's smoothed labels, ``(N+ + 1) / (N+ + 2)`` for positives and
      ``1 / (N- + 2)`` for negatives, a Bayesian prior that keeps a perfectly separated
      calibration set from driving the slope to infinity;
    * the weighted cross-entropy against those targets is minimised by L-BFGS-B from slope 0 and
      the smoothed log prior odds, with scikit-learn's tolerances and sign convention
      (``p' = sigmoid(-(A z + B))``), so both follow the same path.

    One deliberate difference: weights are rescaled to sum to the number of rows first. ``N+`` and
    ``N-`` count pseudo-observations against real ones; the sampler's weights sum to the
    *population* size, which would shrink Platt's prior by the sampling ratio (100-fold for a 1%
    sample). Without weights, or with weights of mean 1, the fit is scikit-learn's.
    """

    method = "sigmoid"

    def __init__(self, slope: float = 1.0, intercept: float = 0.0) -> None:
        self.slope = float(slope)
        self.intercept = float(intercept)

    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        z = logit(p)
        w = w * (len(w) / w.sum())
        positive = y > 0
        n_pos, n_neg = float(w[positive].sum()), float(w[~positive].sum())
        targets = np.where(positive, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

        def loss_and_gradient(ab: np.ndarray) -> tuple[float, np.ndarray]:
            raw = -(ab[0] * z + ab[1])
            # Binomial deviance against soft targets: log(1 + e^raw) - t * raw, weighted, summed.
            loss = float(np.sum(w * (np.logaddexp(0.0, raw) - targets * raw)))
            g = w * (expit(raw) - targets)
            return loss, np.array([-g @ z, -g.sum()])

        start = np.array([0.0, np.log((n_neg + 1.0) / (n_pos + 1.0))])
        fit = minimize(loss_and_gradient, start, method="L-BFGS-B", jac=True,
                       options={"gtol": 1e-6, "ftol": 64 * np.finfo(float).eps})
        self.slope, self.intercept = -float(fit.x[0]), -float(fit.x[1])
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        return expit(self.slope * logit(p) + self.intercept)

    def params(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept}


class IsotonicCalibrator(Calibrator):
    """A non-decreasing step function of ``p`` (scikit-learn ``IsotonicRegression``).

    Fitted on the probabilities themselves, as ``CalibratedClassifierCV(method="isotonic")`` does
    for a model without ``decision_function``; between fitted points it interpolates linearly,
    outside them it clips. Outputs are kept within ``[EPS, 1 - EPS]``: a block of fitting rows
    without a single positive would otherwise say "never", one row away from infinite log loss.
    """

    method = "isotonic"

    def __init__(self) -> None:
        self.regression: IsotonicRegression | None = None

    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Self:
        self.regression = IsotonicRegression(out_of_bounds="clip", increasing=True)
        self.regression.fit(np.asarray(p, dtype=float), y.astype(float), sample_weight=w)
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        if self.regression is None:
            raise RuntimeError("IsotonicCalibrator.transform called before fit")
        flat = np.asarray(p, dtype=float).reshape(-1)
        return np.clip(self.regression.predict(flat), EPS, 1.0 - EPS).reshape(np.shape(p))

    def params(self) -> dict[str, float]:
        return {"steps": float(len(self.regression.X_thresholds_)) if self.regression is not None else 0.0}

    def served_params(self) -> dict[str, Any]:
        if self.regression is None:
            raise RuntimeError("IsotonicCalibrator.served_params called before fit")
        return {"method": self.method, "x": self.regression.X_thresholds_.tolist(),
                "y": self.regression.y_thresholds_.tolist(), "clip": EPS}


_CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.method: cls for cls in (IdentityCalibrator, TemperatureCalibrator, SigmoidCalibrator, IsotonicCalibrator)
}


def make_calibrator(method: str) -> Calibrator:
    """An unfitted calibrator of one method (a name from :data:`METHOD_ORDER`)."""
    if method not in _CALIBRATORS:
        raise ValueError(f"calibration.methods: unknown method {method!r}, expected one of {list(METHOD_ORDER)}")
    return _CALIBRATORS[method]()


def _log_loss_of_logits(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean log loss of probabilities ``sigmoid(z)``, computed from ``z`` without overflow."""
    per_row = np.where(y > 0, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))
    return float(np.dot(w, per_row) / w.sum())


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
