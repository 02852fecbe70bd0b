"""The simple families: the prior (the floor any model must beat) and the logistic-regression baseline."""

from __future__ import annotations

from pathlib import Path
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

    def served_state(self, folder: Path) -> dict[str, Any]:
        return {"rate": self.rate_}


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

    def served_state(self, folder: Path) -> dict[str, Any]:
        """The pipeline as arrays: per numeric its median, mean, scale and coefficient; per
        categorical its categories and their coefficients; the intercept. A numeric column that
        was all missing in training (the imputer dropped it) gets coefficient 0."""
        columns, classifier = self.pipeline_.named_steps["columns"], self.pipeline_.named_steps["classifier"]
        coefficients = classifier.coef_[0]
        n = len(self.numeric)
        medians, means, scales, numeric_coefficients = np.zeros(n), np.zeros(n), np.ones(n), np.zeros(n)
        kept = np.zeros(n, dtype=bool)
        if self.numeric:
            imputer, scaler = (step for _, step in columns.named_transformers_["numeric"].steps)
            kept = ~np.isnan(imputer.statistics_)
            medians[kept], means[kept], scales[kept] = imputer.statistics_[kept], scaler.mean_, scaler.scale_
            numeric_coefficients[kept] = coefficients[:kept.sum()]
        categories, categorical_coefficients, start = {}, {}, int(kept.sum())
        encoder = columns.named_transformers_["categorical"] if self.categorical else None
        for name, known in zip(self.categorical, encoder.categories_ if encoder is not None else [], strict=True):
            categories[name] = [str(value) for value in known]
            categorical_coefficients[name] = coefficients[start:start + len(known)].tolist()
            start += len(known)
        return {"medians": medians.tolist(), "means": means.tolist(), "scales": scales.tolist(),
                "numeric_coefficients": numeric_coefficients.tolist(), "categories": categories,
                "categorical_coefficients": categorical_coefficients, "intercept": float(classifier.intercept_[0])}
