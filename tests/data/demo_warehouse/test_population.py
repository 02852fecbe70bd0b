"""Customers and applications (``ml_tasks.data.demo_warehouse.population``): repeat customers who
apply after signing up, values in their domains, and the drifting channel mix and incomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.data.demo_warehouse import MOBILE_LAUNCH_MONTH, DemoWarehouseSettings

DefaultSize = tuple[DemoWarehouseSettings, pd.DataFrame]


def test_applications_come_after_signup(default_size: DefaultSize) -> None:
    _, frame = default_size
    assert (frame["applied_at"] >= frame["signup_date"]).all()


def test_customers_apply_repeatedly_around_the_configured_mean(default_size: DefaultSize) -> None:
    settings, frame = default_size
    per_customer = frame.groupby("customer_id").size()

    assert (per_customer > 1).sum() > 0.4 * len(per_customer)
    assert per_customer.mean() == pytest.approx(settings.applications_per_customer, rel=0.05)


def test_values_stay_in_their_documented_domains(default_size: DefaultSize) -> None:
    _, frame = default_size
    assert frame["age"].between(18, 80).all()
    assert frame["credit_score"].between(300, 850).all()
    assert set(frame["term_months"]) == {12, 24, 36, 60}
    assert set(frame["region"]) == {"north", "south", "east", "west", "central"}
    assert set(frame["purpose"]) == {"car", "home", "education", "debt_consolidation", "other"}
    assert set(frame["channel"]) == {"branch", "web", "partner", "mobile"}
    assert (frame["income"] > 0).all() and (frame["amount"] > 0).all() and (frame["existing_debt"] >= 0).all()
    assert set(frame["defaulted"]) == {0, 1}


def test_mobile_channel_appears_only_from_month_12(default_size: DefaultSize) -> None:
    _, frame = default_size
    mobile_months = frame.loc[frame["channel"] == "mobile", "month"]

    assert MOBILE_LAUNCH_MONTH == 12
    assert mobile_months.min() == 12
    assert set(mobile_months) == set(range(12, 25))


def test_income_grows_about_eight_percent_a_year(default_size: DefaultSize) -> None:
    _, frame = default_size
    log_income = np.log(frame["income"])
    # Months 1-6 and 19-24 are 18 months apart: 1.08 ** 1.5 - 1 = 12 %.
    growth = np.exp(log_income[frame["month"] >= 19].mean() - log_income[frame["month"] <= 6].mean()) - 1

    assert 0.07 < growth < 0.17
