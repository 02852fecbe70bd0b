"""The candidate interface every model family implements, and the feature helpers they share.

Every candidate is built from a spec entry (``family`` and ``params``, see
:func:`ml_tasks.models.build_candidate`) and offers
``fit(X, y, sample_weight=None, X_valid=None, y_valid=None, w_valid=None)`` and
``predict_proba(X)`` returning an ``(n, 2)`` array, as scikit-learn classifiers do. ``X`` is a
data frame with the spec's feature columns; each family turns it into what it needs, and fits
every transform (scaling, encoding) on the training rows only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from ml_tasks.core.spec import FeaturesSpec
from ml_tasks.models.served import MISSING, frozen_codes


class Candidate(ABC):
    """A trainable model of one family.

    Parameters
    ----------
    features : the spec's numeric and categorical feature lists.
    params : family-specific hyper-parameters from the spec.
    seed : random seed, so the same inputs give the same model.
    """

    family: str = ""
    #: Whether ``fit`` can continue from a fitted model of the same family (stateful retraining).
    supports_warm_start: bool = False
    #: Whether ``fit`` reports its validation loss step by step to :attr:`on_step` (LightGBM after
    #: each boosting round, the network after each epoch); only such a family can be pruned.
    reports_steps: bool = False
    #: Called by ``fit`` of a family that :attr:`reports_steps` with ``(step, validation log loss)``
    #: after each step when validation rows are given; it may raise to stop the fit (the tuner
    #: prunes an unpromising trial so). Set before ``fit``, which takes and clears it
    #: (:meth:`_take_on_step`), so it is never pickled with the model.
    on_step: Callable[[int, float], None] | None = None

    def __init__(self, features: FeaturesSpec, params: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.numeric = list(features.numeric)
        self.categorical = list(features.categorical)
        self.params = dict(params or {})
        self.seed = seed
        #: A fitted model of the same family to continue from (set before ``fit``); None: from scratch.
        self.warm_start_from: Candidate | None = None

    def can_warm_start_from(self, other: object) -> str | None:
        """None when ``fit`` can continue from ``other``, else why not (logged, then trained from scratch)."""
        if not self.supports_warm_start:
            return f"family {self.family!r} always trains from scratch"
        other = getattr(other, "candidate", other)  # a calibrated champion wraps the model it continues
        if not isinstance(other, type(self)):
            return f"the champion is a {getattr(other, 'family', type(other).__name__)!r} model, not {self.family!r}"
        if (other.numeric, other.categorical) != (self.numeric, self.categorical):
            return "the champion was trained on other features"
        return None

    def _take_warm_start(self) -> Self | None:
        """The fitted model ``fit`` continues from (unwrapped from its calibrator), cleared from
        ``self`` so the champion is never pickled inside the challenger. Callers set
        ``warm_start_from`` only where :meth:`can_warm_start_from` allows it, so it is of this family."""
        champion: Any = self.warm_start_from
        self.warm_start_from = None
        return getattr(champion, "candidate", champion)

    def _take_on_step(self) -> Callable[[int, float], None] | None:
        """The :attr:`on_step` listener of this fit, cleared from ``self``."""
        return self.__dict__.pop("on_step", None)

    @abstractmethod
    def fit(self, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None,
            X_valid: pd.DataFrame | None = None, y_valid: np.ndarray | None = None,
            w_valid: np.ndarray | None = None) -> Self:
        """Train on ``(X, y)`` with optional sample weights; the validation rows, when given, may
        steer early stopping (never any fitted transform)."""

    @abstractmethod
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray: ...

    def served_state(self, folder: Path) -> dict[str, Any]:
        """The fitted state as plain JSON-able values for ``model.json``, writing any file it names
        into ``folder`` (:mod:`ml_tasks.models.served`, which predicts from it)."""
        raise NotImplementedError(f"family {self.family!r} has no served form")

    def restore_served(self, state: dict[str, Any], folder: Path) -> Self:
        """The fitted model back from :meth:`served_state` (what a warm start continues)."""
        raise NotImplementedError(f"family {self.family!r} cannot be restored from its served form")

    def _categoricals_as_text(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X[self.numeric + self.categorical].copy()
        for name in self.categorical:
            out[name] = out[name].astype(object).where(out[name].notna(), MISSING).astype(str)
        for name in self.numeric:
            out[name] = out[name].astype("float64")
        return out

    @staticmethod
    def _two_columns(p: np.ndarray) -> np.ndarray:
        return np.column_stack([1.0 - p, p])


def category_vocabulary(values: pd.Series) -> list[str]:
    """The distinct non-missing values of a column as sorted text: the categories to freeze at fit
    time, compared as :func:`frozen_categorical` compares them (``str`` of each distinct value,
    found by factorising, so each distinct value is converted once, not each row)."""
    return sorted(set(pd.Index(pd.factorize(values)[1]).astype(str)))


def frozen_categorical(values: pd.Series, categories: list[str]) -> pd.Categorical:
    """``values`` coded against categories frozen at fit time: an unseen value becomes missing,
    not a new code (:func:`ml_tasks.models.served.frozen_codes`, which the served form uses too).

    Values are compared as text (``str``); ``.codes`` is the position in ``categories``, -1 for a
    missing or unseen value. Shared by the LightGBM and PyTorch candidates.
    """
    return pd.Categorical.from_codes(frozen_codes(values, categories), categories=categories)


def feature_frame(frame: pd.DataFrame, features: FeaturesSpec) -> pd.DataFrame:
    """The model's input: feature columns only, numerics as float64, categoricals as text or None.

    Plain dtypes keep MLflow's signature check and JSON serving payloads unambiguous.
    """
    out = pd.DataFrame(index=frame.index)
    for name in features.numeric:
        out[name] = frame[name].astype("float64")
    for name in features.categorical:
        out[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return out
