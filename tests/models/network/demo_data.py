"""Small demo-warehouse frames and a quick network fit, shared by the network's tests.

Every fit is small (a few thousand rows, a narrow network, a handful of epochs) so the tests
run in well under a minute on two CPU cores.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.core.spec import FeaturesSpec
from ml_tasks.data.demo_warehouse import DemoWarehouseSettings, generate_tables
from ml_tasks.models import feature_frame
from ml_tasks.models.network import TorchMLPCandidate

FEATURES = FeaturesSpec(
    numeric=["age", "income", "employment_years", "amount", "term_months", "credit_score", "existing_debt",
             "prior_applications"],
    categorical=["region", "purpose", "channel"],
)
#: Small and quick; every test overrides what it is about.
FAST = {"hidden": "64,32", "batch_size": 256, "max_epochs": 6, "patience": 3, "lr": 3e-3, "embedding_dim": 4}

Rows = tuple[pd.DataFrame, np.ndarray]


@cache
def demo_rows(rows: int, seed: int = 5) -> Rows:
    """Applications joined with their customer and outcome, oldest first, as model inputs."""
    tables = generate_tables(DemoWarehouseSettings(rows=rows, seed=seed))
    joined = (tables["applications"].merge(tables["customers"], on="customer_id")
              .merge(tables["outcomes"], on="application_id").sort_values("applied_at", kind="stable"))
    joined["prior_applications"] = joined.groupby("customer_id").cumcount().astype("float64")
    return feature_frame(joined, FEATURES).reset_index(drop=True), joined["defaulted"].to_numpy()


def time_split(rows: int, seed: int = 5) -> tuple[Rows, Rows, Rows]:
    """(X, y) for train (oldest 60 %), validation (next 20 %) and test (newest 20 %)."""
    X, y = demo_rows(rows, seed)
    a, b = int(0.6 * rows), int(0.8 * rows)
    return (X.iloc[:a], y[:a]), (X.iloc[a:b].reset_index(drop=True), y[a:b]), (X.iloc[b:].reset_index(drop=True), y[b:])


def fit(params: dict[str, Any] | None = None, rows: int = 12_000, seed: int = 0, **kwargs: Any) -> TorchMLPCandidate:
    """A network fitted on the training rows of ``time_split(rows)``, early-stopping on its validation rows."""
    (X, y), (Xv, yv), _ = time_split(rows)
    model = TorchMLPCandidate(FEATURES, {**FAST, **(params or {})}, seed=seed, **kwargs)
    return model.fit(X, y, None, Xv, yv, None)
