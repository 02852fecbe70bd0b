"""The simple families: the prior (the floor any model must beat) and the logistic-regression baseline."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd

from ml_tasks.core.spec import FeaturesSpec, LogisticRegressionParamsSpec, PriorParamsSpec
from ml_tasks.models.base import Candidate


class PriorCandidate(Candidate):
    """Predicts the (weighted) training positive rate for every row: the floor any model must beat."""

    family = PriorParamsSpec.family

    def __init__(self, features: FeaturesSpec, params: dict[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(features, params, seed)
        PriorParamsSpec.of(self.params)  # it takes none: a stray name fails here, before any data is read

    def fit(self, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None,
            X_valid: pd.DataFrame | None = None, y_valid: np.ndarray | None = None,
            w_valid: np.ndarray | None = None) -> Self:
        self.rate_ = float(np.average(np.asarray(y), weights=sample_weight))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self._two_columns(np.full(len(X), self.rate_))


class LogisticRegressionCandidate(Candidate):
    """Logistic regression on scaled numerics and one-hot categoricals (the baseline)."""

    family = LogisticRegressionParamsSpec.family

    def __init__(self, features: FeaturesSpec, params: dict[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(features, params, seed)
        LogisticRegressionParamsSpec.of(self.params)  # fail on a bad param before any data is read

    def fit(self, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None,
            X_valid: pd.DataFrame | None = None, y_valid: np.ndarray | None = None,
            w_valid: np.ndarray | None = None) -> Self:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline, make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        columns = ColumnTransformer([
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), self.numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), self.categorical),
        ])
        params = LogisticRegressionParamsSpec.of(self.params)
        classifier = LogisticRegression(C=params.C, max_iter=params.max_iter)
        self.pipeline_ = Pipeline([("columns", columns), ("classifier", classifier)])
        self.pipeline_.fit(self._categoricals_as_text(X), np.asarray(y), classifier__sample_weight=sample_weight)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline_.predict_proba(self._categoricals_as_text(X))
