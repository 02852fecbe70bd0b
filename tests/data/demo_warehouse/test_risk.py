"""Who defaults (``ml_tasks.data.demo_warehouse.risk``): the set default rate, a shared latent
risk, and drift a retrained model recovers from."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ml_tasks.data.demo_warehouse import DemoWarehouseSettings, generate_tables
from tests.data.demo_warehouse.frames import joined

NUMERIC = ["age", "income", "employment_years", "amount", "term_months", "credit_score", "existing_debt"]
CATEGORICAL = ["region", "purpose", "channel"]

DefaultSize = tuple[DemoWarehouseSettings, pd.DataFrame]


def logistic_regression() -> Pipeline:
    return make_pipeline(
        ColumnTransformer(
            [
                ("numeric", StandardScaler(), NUMERIC),
                ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ]
        ),
        LogisticRegression(max_iter=1_000),
    )


def test_positive_rate_matches_setting(default_size: DefaultSize) -> None:
    settings, frame = default_size
    assert frame["defaulted"].mean() == pytest.approx(settings.positive_rate, abs=0.005)


def test_positive_rate_follows_a_non_default_setting() -> None:
    outcomes = generate_tables(DemoWarehouseSettings(rows=20_000, seed=3, positive_rate=0.15))["outcomes"]
    assert outcomes["defaulted"].mean() == pytest.approx(0.15, abs=0.01)


def test_earlier_defaults_predict_later_ones(default_size: DefaultSize) -> None:
    _, frame = default_size
    history = frame.sort_values(["customer_id", "applied_at"])
    previous = history.groupby("customer_id")["defaulted"].shift(1)
    defaulted_before = previous.groupby(history["customer_id"]).cummax()  # NaN on first loans
    rates = history["defaulted"].groupby(defaulted_before).mean()

    # The shared latent risk: a past default makes the next one far more likely.
    assert rates[1.0] > 2 * rates[0.0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_model_trained_on_recent_months_beats_stale_model(seed: int) -> None:
    settings = DemoWarehouseSettings(rows=50_000, seed=seed)
    frame = joined(generate_tables(settings), settings.start)
    test = frame[frame["month"].between(21, 24)]

    def auc_on_test(first: int, last: int) -> float:
        train = frame[frame["month"].between(first, last)]
        model = logistic_regression().fit(train[NUMERIC + CATEGORICAL], train["defaulted"])
        return roc_auc_score(test["defaulted"], model.predict_proba(test[NUMERIC + CATEGORICAL])[:, 1])

    stale, fresh = auc_on_test(1, 10), auc_on_test(11, 20)

    # Learnable but far from trivial, and the stale model clearly lost ground.
    assert 0.70 <= stale <= 0.87 and 0.70 <= fresh <= 0.87, (stale, fresh)
    assert fresh - stale >= 0.015, (stale, fresh)
