"""Choosing a calibration on data the model never saw.

A model that ranks well can still be wrong about *how likely* an outcome is: boosted trees and
networks are often over-confident, a model trained on a re-weighted sample may be shifted. The
calibrators themselves (identity, and scikit-learn's temperature, Platt and isotonic) are in
:mod:`ml_tasks.models.calibrators`; this module decides which one a run serves: the window
split by time, the choice on held-out rows and the weighted metrics (ECE included) are Refit's,
since ``CalibratedClassifierCV`` fits one given method on the rows it is handed.

The calibration window (later than training, earlier than test: under time shift the most recent
held-out data is the best guide) is cut in two by time: the earlier part *fits* each method, the
later part *selects* the one with the lowest weighted log loss. Choosing on the fitting rows would
always favour the most flexible method, since it fits those rows best by construction.

>>> fit_idx, select_idx = split_calibration_window(valid["t"], spec.calibration.selection_fraction)  # doctest: +SKIP
>>> result = fit_calibrator(p[fit_idx], y[fit_idx], w[fit_idx],
...                         p[select_idx], y[select_idx], w[select_idx], spec.calibration)       # doctest: +SKIP
>>> result.method, result.select_metrics[result.method]["ece"]                                    # doctest: +SKIP
('isotonic', 0.011)
>>> served = CalibratedCandidate(candidate, result.calibrator)  # what the pyfunc wraps            # doctest: +SKIP

Every function takes sample weights: the sampler's inverse inclusion probabilities, so fits and
metrics estimate population values rather than the stratified sample's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml_tasks.core.spec import CalibrationSpec
from ml_tasks.evaluation.metrics import calibration_metrics, checked_weights
from ml_tasks.models.calibrators import METHOD_ORDER, Calibrator, make_calibrator

#: Two select-set log losses closer than this (relative) are a tie: float noise must not pick a
#: more flexible method over a simpler one that is as good.
TIE_TOLERANCE = 1e-12

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
    fit part has fewer than ``spec.min_isotonic_rows`` rows, and every method but ``none`` when
    the fit part holds one label only; the reason is kept in ``skipped``.

    Raises ``ValueError`` naming the argument when an input is malformed, and when every method
    of ``spec.methods`` was skipped.
    """
    p_fit, y_fit, w_fit = _checked("p_fit", p_fit, y_fit, w_fit)
    p_select, y_select, w_select = _checked("p_select", p_select, y_select, w_select)
    tried, skipped = _methods_to_try(spec, n_fit=len(p_fit), fit_labels=np.unique(y_fit).tolist())
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


def _methods_to_try(spec: CalibrationSpec, n_fit: int, fit_labels: list[int]) -> tuple[list[str], dict[str, str]]:
    """The spec's methods in :data:`METHOD_ORDER` (duplicates dropped), and those skipped with why."""
    tried: list[str] = []
    skipped: dict[str, str] = {}
    for method in (m for m in METHOD_ORDER if m in spec.methods):
        if method != "none" and len(fit_labels) < 2:
            skipped[method] = f"the fit part holds only label {fit_labels[0]}: nothing to calibrate against"
        elif method == "isotonic" and n_fit < spec.min_isotonic_rows:
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
    weights = checked_weights(f"w{suffix}", w, len(p))
    return p, y_array.astype(int), weights
