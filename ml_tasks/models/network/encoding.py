"""The network's inputs: a feature frame turned into arrays, with every transform fitted on the
training rows only (the validation rows only steer early stopping), and the labels and weights
checked before anything is trained.

Numerics are float64 and may hold NaN (or inf, treated as missing): each column is imputed with
its training median, then standardised with the training mean and standard deviation.
Categoricals are text or None: each column's vocabulary is frozen from the training rows and a
value maps to its 1-based position; a missing or unseen value maps to index 0 (the codes of
:func:`ml_tasks.models.frozen_categorical` over :func:`~ml_tasks.models.category_vocabulary`,
which the LightGBM candidate uses too, plus one). The network starts row 0 of every embedding
at zero (:mod:`.net`), so what training never saw contributes nothing rather than noise.

Labels must be 0 or 1 with both classes among the training rows; sample weights finite,
non-negative, with a positive sum (None: all 1).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ml_tasks.models.base import category_vocabulary
from ml_tasks.models.served import network_inputs, numeric_matrix


@dataclass
class FeatureEncoder:
    """Median imputation and standardisation of numerics; frozen vocabularies for categoricals.

    Plain lists only, so it round-trips through a ``weights_only`` checkpoint and JSON.
    """

    numeric: list[str]
    categorical: list[str]
    medians: list[float]
    means: list[float]
    stds: list[float]
    vocab: dict[str, list[str]]

    @classmethod
    def fit(cls, X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> FeatureEncoder:
        raw = _numeric_matrix(X, numeric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: its median becomes 0
            medians = np.nan_to_num(np.nanmedian(raw, axis=0), nan=0.0) if len(numeric) else np.zeros(0)
        imputed = np.where(np.isnan(raw), medians, raw)
        stds = imputed.std(axis=0)
        stds[~(stds > 0)] = 1.0  # a constant column is centred, not blown up
        vocab = {name: category_vocabulary(X[name]) for name in categorical}
        return cls(list(numeric), list(categorical), medians.tolist(), imputed.mean(axis=0).tolist(),
                   stds.tolist(), vocab)

    def extended(self, X: pd.DataFrame) -> FeatureEncoder:
        """The same encoder with categories first seen in ``X`` appended (for warm starts)."""
        vocab = {}
        for name, known in self.vocab.items():
            seen = set(known)
            vocab[name] = known + [v for v in category_vocabulary(X[name]) if v not in seen]
        return FeatureEncoder(self.numeric, self.categorical, self.medians, self.means, self.stds, vocab)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows per categorical: the vocabulary plus index 0 for missing/unseen."""
        return [len(self.vocab[name]) + 1 for name in self.categorical]

    def transform(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(numeric float32 (n, p), categorical int64 (n, c))``, vectorised per column: the
        served form's own :func:`~ml_tasks.models.served.network_inputs`, so training and
        serving encode alike."""
        return network_inputs(X, asdict(self))


def _numeric_matrix(X: pd.DataFrame, columns: list[str]) -> np.ndarray:
    raw = numeric_matrix(X, columns)
    return np.where(np.isfinite(raw), raw, np.nan)  # inf is as unusable to a network as a gap


@dataclass(frozen=True)
class LabelledRows:
    """Feature rows with their labels (float64, 0 or 1) and sample weights (float64), checked."""

    X: pd.DataFrame
    y: np.ndarray
    w: np.ndarray

    @classmethod
    def checked(cls, X: pd.DataFrame, y: np.ndarray | None, w: np.ndarray | None,
                names: tuple[str, str]) -> LabelledRows:
        """``X`` with ``y`` and ``w`` checked (``names``: what the error calls them); ``w`` None is all 1."""
        return cls(X, _labels(y, names[0]), _weights(w, len(X), names[1]))


def _labels(y: np.ndarray | None, name: str) -> np.ndarray:
    """``y`` as float64 0/1 labels; the training labels (``name`` "y") must hold both classes."""
    values = np.asarray(y, dtype=np.float64)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"torch_mlp: {name} must hold only 0 and 1, got {np.unique(values)[:5].tolist()}...")
    if name == "y" and values.min() == values.max():
        raise ValueError(f"torch_mlp: every training label is {int(values[0])}; there is nothing to learn")
    return values


def _weights(w: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if w is None:
        return np.ones(n)
    values = np.asarray(w, dtype=np.float64)
    if values.shape != (n,) or not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"torch_mlp: {name} must be {n} finite non-negative numbers with a positive sum")
    return values
