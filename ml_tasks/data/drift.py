"""Feature drift between this run's snapshot and the champion's: what changed in the inputs?

The population stability index (PSI) compares two distributions of one feature over the
reference's bins: ``sum((cur - ref) * ln(cur / ref))`` over the bin shares. Numeric features are
binned at the reference's deciles (plus a bin for missing values), categoricals by value. The
usual reading: below 0.1 stable, 0.1–0.25 a moderate shift worth a look, above 0.25 a major one.

>>> reference = pd.DataFrame({"x": np.arange(1000.0)})
>>> round(population_stability(reference["x"], reference["x"] + 500), 2) > 0.25
True
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import pandas as pd

#: Share floor in empty bins, so a bin that appears or vanishes gives a large but finite PSI.
_FLOOR = 1e-4
BANDS = ((0.1, "stable"), (0.25, "moderate shift"), (float("inf"), "major shift"))


class FeatureDrift(TypedDict):
    """One feature's drift, as the report shows it."""

    feature: str
    psi: float
    band: str


def shares_of_counts(counts: np.ndarray) -> np.ndarray:
    """Bin shares of ``counts``, floored at :data:`_FLOOR` so an empty bin keeps the PSI finite."""
    counts = np.asarray(counts, dtype=float)
    return np.maximum(counts / max(counts.sum(), 1.0), _FLOOR)


def psi_of_counts(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI from two histograms over the same bins: what a streaming reader accumulates."""
    ref_shares, cur_shares = shares_of_counts(reference), shares_of_counts(current)
    return float(np.sum((cur_shares - ref_shares) * np.log(cur_shares / ref_shares)))


def decile_edges(finite: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the quantiles of ``finite`` values (duplicates dropped)."""
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])


def numeric_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: ``searchsorted`` over ``edges``; bin ``len(edges) + 1`` holds missing values,
    so a jump in nulls shows as drift too. ``len(edges) + 2`` bins in all."""
    return np.where(np.isnan(values), len(edges) + 1, np.searchsorted(edges, values, side="right"))


def population_stability(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` (numeric: reference deciles; otherwise by value)."""
    if pd.api.types.is_numeric_dtype(reference) and pd.api.types.is_numeric_dtype(current):
        ref, cur = reference.to_numpy(dtype=float), current.to_numpy(dtype=float)
        edges = decile_edges(ref[np.isfinite(ref)], bins)
        ref_codes, cur_codes = numeric_codes(ref, edges), numeric_codes(cur, edges)
        size = len(edges) + 2
    else:
        values = pd.Index(reference.astype(object).fillna("<missing>").unique())
        ref_codes = values.get_indexer(reference.astype(object).fillna("<missing>"))
        cur_codes = values.get_indexer(current.astype(object).fillna("<missing>"))
        size = len(values) + 1
        # Values the reference never saw share the last bin.
        ref_codes = np.where(ref_codes < 0, size - 1, ref_codes)
        cur_codes = np.where(cur_codes < 0, size - 1, cur_codes)
    return psi_of_counts(np.bincount(ref_codes, minlength=size), np.bincount(cur_codes, minlength=size))


def band(psi: float) -> str:
    """The usual reading of a PSI value (see :data:`BANDS`)."""
    return next(label for limit, label in BANDS if psi < limit)


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str]) -> list[FeatureDrift]:
    """PSI per feature present in both frames, largest first, with its band."""
    scores = [(name, population_stability(reference[name], current[name])) for name in features
              if name in reference and name in current]
    return sorted((FeatureDrift(feature=name, psi=psi, band=band(psi)) for name, psi in scores),
                  key=lambda row: -row["psi"])
