"""Probability calibration on data the model never saw, and the metrics that judge it.

A model that ranks well can still be wrong about *how likely* an outcome is: boosted trees and
networks are often over-confident, a model trained on a re-weighted sample may be shifted. A
calibrator is a monotone map ``p -> p'`` learnt on held-out rows. Four are offered, from the
simplest to the most flexible:

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

The calibration window (later than training, earlier than test: under time shift the most recent
held-out data is the best guide) is cut in two by time: the earlier part *fits* each method, the
later part *selects* the one with the lowest weighted log loss. Choosing on the fitting rows would
always favour the most flexible method, since it fits those rows best by construction.

>>> fit_idx, select_idx = split_calibration_window(valid["event_time"], spec.calibration.selection_fraction)  # doctest: +SKIP
>>> result = fit_calibrator(p[fit_idx], y[fit_idx], w[fit_idx],
...                         p[select_idx], y[select_idx], w[select_idx], spec.calibration)                 # doctest: +SKIP
>>> result.method, result.select_metrics[result.method]["ece"]                                              # doctest: +SKIP
('isotonic', 0.011)
>>> served = CalibratedCandidate(candidate, result.calibrator)   # what ml_tasks.pyfunc.CandidateModel wraps  # doctest: +SKIP

Every function takes sample weights: the sampler's inverse inclusion probabilities, so fits and
metrics estimate population values rather than the stratified sample's.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss, log_loss

from ml_tasks.metrics import EPS
from ml_tasks.spec import CalibrationSpec

#: Methods from the simplest to the most flexible: a tie in log loss goes to the earlier one.
METHOD_ORDER = ("none", "temperature", "sigmoid", "isotonic")
#: Probabilities are clipped this far from 0 and 1 before taking logits, so an exact 0 or 1 from
#: a model maps to a finite logit (about +-27.6) instead of an infinity that would poison a fit.
LOGIT_CLIP = 1e-12
#: Two select-set log losses closer than this (relative) are a tie: float noise must not pick a
#: more flexible method over a simpler one that is as good.
TIE_TOLERANCE = 1e-12
#: Bounds of log T in the temperature search (T in [4.5e-5, 2.2e4]), as scikit-learn uses for
#: its inverse temperature.
_LOG_T_BOUNDS = (-10.0, 10.0)


# ---------------------------------------------------------------------------------------------
# Calibrators
# ---------------------------------------------------------------------------------------------

def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with p clipped to ``[LOGIT_CLIP, 1 - LOGIT_CLIP]``.

    Written as ``log(p) - log1p(-p)`` so that probabilities near 1 keep their resolution.
    """
    p = np.clip(np.asarray(p, dtype=float), LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


class Calibrator(ABC):
    """A fitted monotone map from a model's P(label = 1) to a calibrated one.

    Subclasses are plain module-level classes holding floats or a scikit-learn estimator, so a
    calibrator pickles (and cloudpickles, for MLflow) with the model it serves.
    """

    method: str = ""

    @abstractmethod
    def fit(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> Calibrator:
        """Learn the map from probabilities ``p``, 0/1 labels ``y`` and weights ``w`` (checked)."""

    @abstractmethod
    def transform(self, p) -> np.ndarray:
        """Calibrated probabilities of the positive class, same shape as ``p``."""

    def params(self) -> dict[str, float]:
        """The fitted parameters, small and JSON-able, for the run's manifest and report."""
        return {}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.4g}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"


class IdentityCalibrator(Calibrator):
    """``none``: the model's probabilities as they are (the baseline every method must beat)."""

    method = "none"

    def fit(self, p, y, w) -> IdentityCalibrator:
        return self

    def transform(self, p) -> np.ndarray:
        return np.asarray(p, dtype=float)


class TemperatureCalibrator(Calibrator):
    """``p' = sigmoid(logit(p) / T)`` with one ``T > 0`` minimising weighted log loss.

    Searched on ``log T`` (bounded Brent), so the search is symmetric between softening and
    sharpening and ``T`` stays positive.
    """

    method = "temperature"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def fit(self, p, y, w) -> TemperatureCalibrator:
        z = logit(p)
        search = minimize_scalar(lambda log_t: _log_loss_of_logits(z / np.exp(log_t), y, w),
                                 bounds=_LOG_T_BOUNDS, method="bounded",
                                 options={"xatol": 64 * np.finfo(float).eps})
        if not search.success:  # pragma: no cover - the bounded search of a convex function converges
            raise RuntimeError(f"temperature scaling did not converge: {search.message}")
        self.temperature = float(np.exp(search.x))
        return self

    def transform(self, p) -> np.ndarray:
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

    def fit(self, p, y, w) -> SigmoidCalibrator:
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

    def transform(self, p) -> np.ndarray:
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

    def fit(self, p, y, w) -> IsotonicCalibrator:
        self.regression = IsotonicRegression(out_of_bounds="clip", increasing=True)
        self.regression.fit(np.asarray(p, dtype=float), y.astype(float), sample_weight=w)
        return self

    def transform(self, p) -> np.ndarray:
        if self.regression is None:
            raise RuntimeError("IsotonicCalibrator.transform called before fit")
        flat = np.asarray(p, dtype=float).reshape(-1)
        return np.clip(self.regression.predict(flat), EPS, 1.0 - EPS).reshape(np.shape(p))

    def params(self) -> dict[str, float]:
        return {"steps": float(len(self.regression.X_thresholds_)) if self.regression is not None else 0.0}


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
# Fitting and choosing
# ---------------------------------------------------------------------------------------------

@dataclass
class CalibrationResult:
    """What :func:`fit_calibrator` chose and why.

    Attributes
    ----------
    method : the chosen method's name.
    calibrator : the chosen method's fitted calibrator (what serving applies).
    select_metrics : per tried method, its ``calibration_metrics`` on the select part (rows it was
        not fitted on), in :data:`METHOD_ORDER`.
    skipped : per method not tried, the reason (e.g. too few rows for isotonic regression).
    fitted : every tried method's fitted calibrator, for reports that compare them.
    fit_rows, select_rows : the sizes of the two parts.
    """

    method: str
    calibrator: Calibrator
    select_metrics: dict[str, dict[str, float]]
    skipped: dict[str, str] = field(default_factory=dict)
    fitted: dict[str, Calibrator] = field(default_factory=dict)
    fit_rows: int = 0
    select_rows: int = 0

    def to_dict(self) -> dict:
        """JSON-able summary for the run manifest and the gating report (no fitted objects)."""
        return {
            "method": self.method,
            "params": self.calibrator.params(),
            "select_metrics": self.select_metrics,
            "skipped": dict(self.skipped),
            "method_params": {name: c.params() for name, c in self.fitted.items()},
            "fit_rows": self.fit_rows,
            "select_rows": self.select_rows,
        }


def fit_calibrator(p_fit, y_fit, w_fit, p_select, y_select, w_select, spec: CalibrationSpec) -> CalibrationResult:
    """Fit every method of ``spec.methods`` on the fit part; keep the best on the select part.

    The score is weighted log loss on the select part, a proper scoring rule that rewards both
    calibration and sharpness (ECE alone is minimised by predicting the base rate for everyone).
    Ties go to the simpler method (:data:`METHOD_ORDER`). Isotonic regression is skipped when the
    fit part has fewer than ``spec.min_isotonic_rows`` rows; the reason is kept in ``skipped``.

    Raises ``ValueError`` naming the argument when an input is malformed, and when every method
    of ``spec.methods`` was skipped.
    """
    p_fit, y_fit, w_fit = _checked("p_fit", p_fit, y_fit, w_fit)
    p_select, y_select, w_select = _checked("p_select", p_select, y_select, w_select)
    tried, skipped = _methods_to_try(spec, n_fit=len(p_fit))
    if not tried:
        raise ValueError(f"calibration.methods: every method was skipped ({skipped}); "
                         "add 'none' or 'temperature' to the spec's methods")
    fitted = {method: make_calibrator(method).fit(p_fit, y_fit, w_fit) for method in tried}
    select_metrics = {
        method: calibration_metrics(y_select, calibrator.transform(p_select), w_select, spec.ece_bins)
        for method, calibrator in fitted.items()
    }
    chosen = _lowest_log_loss(select_metrics)
    return CalibrationResult(method=chosen, calibrator=fitted[chosen], select_metrics=select_metrics,
                             skipped=skipped, fitted=fitted, fit_rows=len(p_fit), select_rows=len(p_select))


def _methods_to_try(spec: CalibrationSpec, n_fit: int) -> tuple[list[str], dict[str, str]]:
    """The spec's methods in :data:`METHOD_ORDER` (duplicates dropped), and those skipped with why."""
    tried, skipped = [], {}
    for method in (m for m in METHOD_ORDER if m in spec.methods):
        if method == "isotonic" and n_fit < spec.min_isotonic_rows:
            skipped[method] = (f"the fit part has {n_fit} rows, fewer than calibration.min_isotonic_rows "
                               f"= {spec.min_isotonic_rows}: a step function would fit the noise")
        else:
            tried.append(method)
    return tried, skipped


def _lowest_log_loss(select_metrics: dict[str, dict[str, float]]) -> str:
    """The simplest method whose select-part log loss is within :data:`TIE_TOLERANCE` of the best."""
    best = min(m["log_loss"] for m in select_metrics.values())
    tolerance = TIE_TOLERANCE * max(1.0, abs(best))
    return next(method for method in METHOD_ORDER
                if method in select_metrics and select_metrics[method]["log_loss"] <= best + tolerance)


def split_calibration_window(timestamps, selection_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the fit part (earlier) and the select part (later) of the calibration window.

    The select part holds the latest ``selection_fraction`` of the rows. Rows sharing the cutoff
    timestamp all go to the select part, so every fitting row is strictly earlier than every
    selecting row (the select part may come out slightly larger than asked). Both arrays are
    sorted positions into ``timestamps`` (numbers, ``datetime64`` or a pandas series, time zone
    aware or not).

    Raises ``ValueError`` on missing timestamps or when either part would be empty.
    """
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"calibration.selection_fraction: expected a value in (0, 1), got {selection_fraction}")
    times = pd.Series(timestamps).reset_index(drop=True)
    if times.isna().any():
        raise ValueError(f"timestamps: {int(times.isna().sum())} missing values in the calibration window")
    n_select = int(np.ceil(len(times) * selection_fraction))
    if len(times) < 2 or n_select >= len(times):
        raise ValueError(f"timestamps: {len(times)} rows cannot be split into a fit and a select part "
                         f"with selection_fraction {selection_fraction}")
    cutoff = times.sort_values(kind="stable").iloc[len(times) - n_select]
    later = (times >= cutoff).to_numpy()
    if later.all():
        raise ValueError(f"timestamps: every row of the calibration window is at or after the cutoff {cutoff}; "
                         "no earlier rows are left to fit on")
    return np.flatnonzero(~later), np.flatnonzero(later)


def _checked(name: str, p, y, w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``p``, ``y``, ``w`` as float, int and float arrays, or a ``ValueError`` naming what is wrong.

    ``name`` is the probability argument's name; the others are named after it (p_fit -> y_fit).
    """
    suffix = name.removeprefix("p")
    p = np.asarray(p, dtype=float).reshape(-1)
    y_array = np.asarray(y).reshape(-1)
    if len(p) == 0:
        raise ValueError(f"{name}: no rows")
    if len(y_array) != len(p):
        raise ValueError(f"y{suffix}: {len(y_array)} labels for {len(p)} probabilities")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        bad = int(np.sum(~np.isfinite(p) | (p < 0.0) | (p > 1.0)))
        raise ValueError(f"{name}: expected probabilities within [0, 1], got {bad} values outside (or not finite)")
    if not np.isin(y_array, (0, 1)).all():
        raise ValueError(f"y{suffix}: expected labels 0 and 1, got values {np.unique(y_array)[:5].tolist()}")
    weights = _checked_weights(f"w{suffix}", w, len(p))
    return p, y_array.astype(int), weights


def _checked_weights(name: str, w, n: int) -> np.ndarray:
    """Weights as a float array (ones when None): finite, non-negative, with a positive total."""
    if w is None:
        return np.ones(n)
    w = np.asarray(w, dtype=float).reshape(-1)
    if len(w) != n:
        raise ValueError(f"{name}: {len(w)} weights for {n} rows")
    if not np.all(np.isfinite(w)) or w.min() < 0.0 or w.sum() <= 0.0:
        raise ValueError(f"{name}: expected finite non-negative weights with a positive sum")
    return w


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

class ReliabilityTable(NamedTuple):
    """Per non-empty equal-mass bin: weighted mean probability, observed rate, and share of mass."""

    mean_p: np.ndarray
    mean_y: np.ndarray
    mass: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        return np.abs(self.mean_y - self.mean_p)


def equal_mass_bins(p, w=None, bins: int = 15) -> np.ndarray:
    """The bin (``0 .. bins - 1``) of each row, bins holding about equal weighted mass.

    Rows with equal probability always share a bin, so the bins depend on the values and weights
    only, not on row order. Each group of equal values goes to the bin holding the middle of its
    mass: with ``n`` distinct equally weighted values and ``n`` bins every value gets its own bin;
    a tie heavier than one bin's share fills one bin and may leave a neighbour empty. Integer
    weights therefore give the same bins as repeating rows.
    """
    if bins < 1:
        raise ValueError(f"bins: expected at least 1, got {bins}")
    p = np.asarray(p, dtype=float).reshape(-1)
    w = _checked_weights("w", w, len(p))
    values, group = np.unique(p, return_inverse=True)
    group_mass = np.bincount(group, weights=w, minlength=len(values))
    middle = (np.cumsum(group_mass) - group_mass / 2.0) / group_mass.sum()
    group_bin = np.minimum(np.floor(middle * bins).astype(int), bins - 1)
    return group_bin[group]


def reliability_table(y, p, w=None, bins: int = 15) -> ReliabilityTable:
    """Observed positive rate against mean predicted probability in equal-mass bins."""
    y = np.asarray(y, dtype=float).reshape(-1)
    p = np.asarray(p, dtype=float).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"y: {len(y)} labels for {len(p)} probabilities")
    w = _checked_weights("w", w, len(p))
    bin_of = equal_mass_bins(p, w, bins)
    mass = np.bincount(bin_of, weights=w, minlength=bins)
    occupied = mass > 0
    mean_p = np.bincount(bin_of, weights=w * p, minlength=bins)[occupied] / mass[occupied]
    mean_y = np.bincount(bin_of, weights=w * y, minlength=bins)[occupied] / mass[occupied]
    return ReliabilityTable(mean_p=mean_p, mean_y=mean_y, mass=mass[occupied] / mass.sum())


def expected_calibration_error(y, p, w=None, bins: int = 15) -> float:
    """Weighted ECE: sum over equal-mass bins of (bin mass share) x |observed rate - mean p|.

    Equal-mass bins keep every bin populated however skewed the probabilities are; equal-width
    bins (Guo et al.'s tables) put almost all rows of a rare-event model in the first bin. The
    two kinds give different numbers: compare ECEs only under the same binning.
    """
    table = reliability_table(y, p, w, bins)
    return float(np.dot(table.mass, table.gaps))


def max_calibration_error(y, p, w=None, bins: int = 15) -> float:
    """Largest |observed rate - mean p| over the same equal-mass bins as the ECE."""
    return float(reliability_table(y, p, w, bins).gaps.max())


def calibration_metrics(y, p, w=None, bins: int = 15) -> dict[str, float]:
    """ECE, MCE, Brier score and log loss (weighted); log loss clips p to ``[EPS, 1 - EPS]``."""
    y = np.asarray(y, dtype=int).reshape(-1)
    p = np.asarray(p, dtype=float).reshape(-1)
    w = _checked_weights("w", w, len(p))
    table = reliability_table(y, p, w, bins)
    return {
        "ece": float(np.dot(table.mass, table.gaps)),
        "mce": float(table.gaps.max()),
        "brier": float(brier_score_loss(y, p, sample_weight=w)),
        "log_loss": float(log_loss(y, np.clip(p, EPS, 1.0 - EPS), sample_weight=w, labels=[0, 1])),
    }


# ---------------------------------------------------------------------------------------------
# Reliability diagram
# ---------------------------------------------------------------------------------------------

def reliability_diagram_png(curves: dict[str, tuple], bins: int = 15, title: str = "Reliability diagram") -> bytes:
    """A reliability diagram as PNG bytes: one line per curve, the diagonal, and a histogram of p.

    ``curves`` maps a legend label (e.g. ``"before"``, ``"after (isotonic)"``) to ``(y, p, w)``,
    ``w`` possibly None. Points are equal-mass bins, so each carries the same share of rows and
    the points crowd where the probabilities do. Drawn on a bare :class:`matplotlib.figure.Figure`
    with the Agg canvas: no pyplot, no global backend switch, safe in Airflow workers.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4))
    FigureCanvasAgg(figure)
    curve_axes, histogram_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curve_axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, (y, p, w) in curves.items():
        table = reliability_table(y, p, w, bins)
        ece = float(np.dot(table.mass, table.gaps))
        line, = curve_axes.plot(table.mean_p, table.mean_y, marker="o", markersize=3, label=f"{label}: ECE {ece:.3f}")
        histogram_axes.hist(np.asarray(p, dtype=float).reshape(-1), bins=20, range=(0, 1), weights=w,
                            histtype="step", color=line.get_color())
    curve_axes.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed positive rate", title=title)
    curve_axes.grid(alpha=0.3)
    curve_axes.legend(fontsize=7, loc="upper left")
    histogram_axes.set(xlabel="predicted probability", ylabel="rows (weighted)")
    histogram_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------

class CalibratedCandidate:
    """A fitted candidate whose probabilities pass through a calibrator.

    Offers ``predict_proba(X) -> (n, 2)`` like the candidate it wraps, so
    ``ml_tasks.pyfunc.CandidateModel(CalibratedCandidate(candidate, calibrator))`` serves
    calibrated probabilities from one MLflow URI. The uncalibrated model stays reachable as
    ``candidate`` (warm starts and feature importances need the model itself, not this wrapper).
    """

    def __init__(self, candidate, calibrator: Calibrator) -> None:
        if not callable(getattr(candidate, "predict_proba", None)):
            raise TypeError(f"candidate: expected a fitted model with predict_proba, got {type(candidate).__name__}")
        self.candidate = candidate
        self.calibrator = calibrator
        self.family: str = getattr(candidate, "family", type(candidate).__name__)

    @property
    def calibration_method(self) -> str:
        return self.calibrator.method

    def predict_proba(self, X) -> np.ndarray:
        calibrated = self.calibrator.transform(np.asarray(self.candidate.predict_proba(X))[:, 1])
        return np.column_stack([1.0 - calibrated, calibrated])

    def __repr__(self) -> str:
        return f"CalibratedCandidate({self.family}, {self.calibrator!r})"
