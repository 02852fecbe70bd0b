"""Candidate model families behind one scikit-learn-style interface.

Every candidate is built from a spec entry (``family`` and ``params``) and offers
``fit(X, y, sample_weight=None, X_valid=None, y_valid=None, w_valid=None)`` and
``predict_proba(X)`` returning an ``(n, 2)`` array, as scikit-learn classifiers do. ``X`` is a
data frame with the spec's feature columns; each family turns it into what it needs, and fits
every transform (scaling, encoding) on the training rows only.

>>> model = build_candidate(spec.candidate("lightgbm"), spec.features)   # doctest: +SKIP
>>> model.fit(X_train, y_train, w_train, X_valid, y_valid).predict_proba(X_test)[:, 1]  # doctest: +SKIP
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd

from ml_tasks.resources import trainer_threads
from ml_tasks.spec import CandidateSpec, FeaturesSpec

MISSING = "<missing>"


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

    def __init__(self, features: FeaturesSpec, params: dict | None = None, seed: int = 0) -> None:
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

    def _take_warm_start(self) -> Candidate | None:
        """The fitted model ``fit`` continues from (unwrapped from its calibrator), cleared from
        ``self`` so the champion is never pickled inside the challenger."""
        champion, self.warm_start_from = self.warm_start_from, None
        return getattr(champion, "candidate", champion)

    @abstractmethod
    def fit(self, X, y, sample_weight=None, X_valid=None, y_valid=None, w_valid=None) -> Candidate: ...

    @abstractmethod
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray: ...

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


class PriorCandidate(Candidate):
    """Predicts the (weighted) training positive rate for every row: the floor any model must beat."""

    family = "prior"

    def fit(self, X, y, sample_weight=None, X_valid=None, y_valid=None, w_valid=None) -> PriorCandidate:
        self.rate_ = float(np.average(np.asarray(y), weights=sample_weight))
        return self

    def predict_proba(self, X):
        return self._two_columns(np.full(len(X), self.rate_))


class LogisticRegressionCandidate(Candidate):
    """Logistic regression on scaled numerics and one-hot categoricals (the baseline)."""

    family = "logistic_regression"

    def fit(self, X, y, sample_weight=None, X_valid=None, y_valid=None, w_valid=None):
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline, make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        columns = ColumnTransformer([
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), self.numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), self.categorical),
        ])
        classifier = LogisticRegression(C=float(self.params.get("C", 1.0)), max_iter=int(self.params.get("max_iter", 2000)))
        self.pipeline_ = Pipeline([("columns", columns), ("classifier", classifier)])
        self.pipeline_.fit(self._categoricals_as_text(X), np.asarray(y), classifier__sample_weight=sample_weight)
        return self

    def predict_proba(self, X):
        return self.pipeline_.predict_proba(self._categoricals_as_text(X))


class LightGBMCandidate(Candidate):
    """Gradient-boosted trees with native categoricals and early stopping on the validation split."""

    family = "lightgbm"
    supports_warm_start = True
    _RENAMED = {"n_estimators": "num_boost_round", "min_child_samples": "min_data_in_leaf"}

    def _dataset_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        # Built column by column without copying the numerics: conversion is the only overhead
        # over a bare lightgbm.train (bench/bench_lightgbm.py keeps it under 10 %).
        columns = {name: X[name].astype("float64") for name in self.numeric}
        for name in self.categorical:
            columns[name] = frozen_categorical(X[name], self.categories_[name])
        return pd.DataFrame(columns, index=X.index)

    def fit(self, X, y, sample_weight=None, X_valid=None, y_valid=None, w_valid=None):
        import lightgbm as lgb

        champion = self._take_warm_start()
        # Warm start keeps the champion's category codes, or its trees would split on other values.
        self.categories_ = (dict(champion.categories_) if champion is not None else
                            {n: category_vocabulary(X[n]) for n in self.categorical})
        params = {self._RENAMED.get(k, k): v for k, v in self.params.items()}
        rounds = int(params.pop("num_boost_round", 500))
        stopping = int(params.pop("early_stopping_rounds", 50))
        params.update(objective="binary", seed=self.seed, deterministic=True, verbosity=-1,
                      num_threads=int(params.get("num_threads") or trainer_threads()))
        train = lgb.Dataset(self._dataset_frame(X), label=np.asarray(y), weight=sample_weight,
                            categorical_feature=self.categorical, free_raw_data=False)
        valid_sets, callbacks = [], []
        if X_valid is not None:
            valid_sets = [lgb.Dataset(self._dataset_frame(X_valid), label=np.asarray(y_valid), weight=w_valid,
                                      reference=train, categorical_feature=self.categorical)]
            callbacks = [lgb.early_stopping(stopping, verbose=False)]
        init_model = None
        if champion is not None:
            # Continue from the champion's chosen trees; ``rounds`` more at most, early stopping still applies.
            init_model = lgb.Booster(model_str=champion.booster_.model_to_string(num_iteration=champion.best_iteration_))
        self.booster_ = lgb.train(params, train, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks,
                                  init_model=init_model)
        # best_iteration counts the champion's trees too, so it is the right cut for predict.
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        self.warm_started_ = champion is not None
        return self

    def predict_proba(self, X):
        return self._two_columns(self.booster_.predict(self._dataset_frame(X), num_iteration=self.best_iteration_))


def category_vocabulary(values: pd.Series) -> list[str]:
    """The distinct non-missing values of a column as sorted text: the categories to freeze at fit
    time, compared as :func:`frozen_categorical` compares them (``str`` of each distinct value,
    found by factorising, so each distinct value is converted once, not each row)."""
    return sorted(set(pd.Index(pd.factorize(values)[1]).astype(str)))


def frozen_categorical(values: pd.Series, categories: list[str]) -> pd.Categorical:
    """``values`` coded against categories frozen at fit time: an unseen value becomes missing,
    not a new code. Factorising first maps each distinct value once, not each row.

    Values are compared as text (``str``); ``.codes`` is the position in ``categories``, -1 for a
    missing or unseen value. Shared by the LightGBM and PyTorch candidates.
    """
    codes, uniques = pd.factorize(values)
    positions = pd.Index(categories).get_indexer(pd.Index(uniques).astype(str))
    mapped = np.where(codes >= 0, positions[np.maximum(codes, 0)] if len(positions) else -1, -1)
    return pd.Categorical.from_codes(mapped, categories=categories)


_FAMILIES: dict[str, type[Candidate]] = {
    cls.family: cls for cls in (PriorCandidate, LogisticRegressionCandidate, LightGBMCandidate)
}


def _torch_mlp() -> type[Candidate]:
    from ml_tasks.torch_mlp import TorchMLPCandidate  # imports torch: only when a spec asks for it

    return TorchMLPCandidate


#: Families whose module is imported on first use, so importing this module stays light.
_LAZY_FAMILIES = {"torch_mlp": _torch_mlp}


def build_candidate(spec: CandidateSpec, features: FeaturesSpec, seed: int = 0) -> Candidate:
    """The untrained candidate a spec entry describes."""
    family = _FAMILIES.get(spec.family) or _LAZY_FAMILIES[spec.family]()
    return family(features, spec.params, seed=seed)


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
