"""Tests of the seeded demo credit-default warehouse (``ml_tasks.data.demo_warehouse``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ml_tasks.data import demo_warehouse
from ml_tasks.data.demo_warehouse import (
    APPLICATIONS,
    CUSTOMERS,
    DEFAULT_SETTINGS_PATH,
    MOBILE_LAUNCH_MONTH,
    OUTCOMES,
    DemoWarehouseSettings,
    WarehouseSummary,
    build_demo_warehouse,
    generate_tables,
    write_warehouse,
)

TABLES = (CUSTOMERS, APPLICATIONS, OUTCOMES)
NUMERIC = ["age", "income", "employment_years", "amount", "term_months", "credit_score", "existing_debt"]
CATEGORICAL = ["region", "purpose", "channel"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def sqlite_url(tmp_path: Path, name: str = "w.db") -> str:
    return f"sqlite:///{tmp_path}/{name}"


def read_tables(url: str) -> dict[str, pd.DataFrame]:
    """All three tables through SQLAlchemy, in primary-key order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: pd.read_sql(sa.select(t).order_by(*t.primary_key.columns), conn) for t in TABLES
            }
    finally:
        engine.dispose()


def month_number(stamps: pd.Series, start: date) -> pd.Series:
    """1-based calendar month of each timestamp within the span that begins at ``start``."""
    return (stamps.dt.year - start.year) * 12 + (stamps.dt.month - start.month) + 1


def joined(tables: dict[str, pd.DataFrame], start: date) -> pd.DataFrame:
    """One row per application with its customer and outcome, as a model would see it."""
    frame = (
        tables["applications"]
        .merge(tables["customers"], on="customer_id", validate="many_to_one")
        .merge(tables["outcomes"], on="application_id", validate="one_to_one")
    )
    frame["month"] = month_number(frame["applied_at"], start)
    return frame


def logistic_regression():
    return make_pipeline(
        ColumnTransformer(
            [
                ("numeric", StandardScaler(), NUMERIC),
                ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ]
        ),
        LogisticRegression(max_iter=1_000),
    )


@pytest.fixture(scope="module")
def default_size() -> tuple[DemoWarehouseSettings, pd.DataFrame]:
    """The default 60k-application warehouse, generated once in memory."""
    settings = DemoWarehouseSettings()
    return settings, joined(generate_tables(settings), settings.start)


# ---------------------------------------------------------------------------------------------
# determinism and storage
# ---------------------------------------------------------------------------------------------


def test_same_seed_writes_identical_tables(tmp_path: Path) -> None:
    settings = DemoWarehouseSettings(rows=3_000, seed=11, chunk_rows=1_000)
    write_warehouse(sqlite_url(tmp_path, "a.db"), settings)
    write_warehouse(sqlite_url(tmp_path, "b.db"), settings)

    first, second = read_tables(sqlite_url(tmp_path, "a.db")), read_tables(sqlite_url(tmp_path, "b.db"))

    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], check_exact=True)


def test_different_seed_writes_different_tables(tmp_path: Path) -> None:
    write_warehouse(sqlite_url(tmp_path, "a.db"), DemoWarehouseSettings(rows=3_000, seed=11))
    write_warehouse(sqlite_url(tmp_path, "b.db"), DemoWarehouseSettings(rows=3_000, seed=12))

    first, second = read_tables(sqlite_url(tmp_path, "a.db")), read_tables(sqlite_url(tmp_path, "b.db"))

    for name in ("applications", "outcomes"):
        assert not first[name].equals(second[name]), name


def test_written_tables_equal_generated_frames_across_chunks(tmp_path: Path) -> None:
    # 2_345 rows in chunks of 500 leaves a partial last chunk in every table.
    settings = DemoWarehouseSettings(rows=2_345, seed=5, chunk_rows=500)
    write_warehouse(sqlite_url(tmp_path), settings)

    stored, generated = read_tables(sqlite_url(tmp_path)), generate_tables(settings)

    for name, frame in generated.items():
        pd.testing.assert_frame_equal(stored[name], frame, check_exact=True)


def test_sqlite_rows_equal_plain_core_inserts(tmp_path: Path) -> None:
    """The fast positional writer stores exactly the text and numbers Core inserts would."""
    settings = DemoWarehouseSettings(rows=800, seed=9)
    write_warehouse(sqlite_url(tmp_path, "fast.db"), settings)
    frames = generate_tables(settings)
    core = sa.create_engine(sqlite_url(tmp_path, "core.db"))
    with core.begin() as conn:
        CUSTOMERS.metadata.create_all(conn)
        for table in TABLES:
            records = frames[table.name].to_dict("records")
            conn.execute(table.insert(), [{k: _plain(v) for k, v in r.items()} for r in records])

    fast = sa.create_engine(sqlite_url(tmp_path, "fast.db"))
    with fast.connect() as written, core.connect() as expected:
        for table in TABLES:
            sql = f"SELECT * FROM {table.name} ORDER BY 1"
            assert written.exec_driver_sql(sql).fetchall() == expected.exec_driver_sql(sql).fetchall()
    fast.dispose()
    core.dispose()


def _plain(value):
    """Python scalars for a DBAPI: Timestamps become datetimes, numpy numbers Python numbers."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if isinstance(value, np.generic) else value


def test_rewriting_replaces_previous_tables(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    write_warehouse(url, DemoWarehouseSettings(rows=1_500, seed=1))
    write_warehouse(url, DemoWarehouseSettings(rows=400, seed=2))

    tables = read_tables(url)

    assert len(tables["applications"]) == len(tables["outcomes"]) == 400
    assert set(tables["applications"]["customer_id"]) == set(tables["customers"]["customer_id"])


def test_failed_rewrite_leaves_previous_tables_untouched(tmp_path: Path, monkeypatch) -> None:
    url = sqlite_url(tmp_path)
    write_warehouse(url, DemoWarehouseSettings(rows=700, seed=1))
    before = read_tables(url)
    load_table = demo_warehouse._load_table

    def fail_on_outcomes(conn, table, frame, chunk_rows):
        if table.name == "outcomes":
            raise RuntimeError("disk full")
        load_table(conn, table, frame, chunk_rows)

    monkeypatch.setattr(demo_warehouse, "_load_table", fail_on_outcomes)
    with pytest.raises(RuntimeError, match="disk full"):
        write_warehouse(url, DemoWarehouseSettings(rows=300, seed=2))

    after = read_tables(url)
    for name in before:
        pd.testing.assert_frame_equal(after[name], before[name])


def test_tables_have_typed_columns_primary_keys_and_indexes(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    write_warehouse(url, DemoWarehouseSettings(rows=500))
    inspector = sa.inspect(sa.create_engine(url))

    expected_types = {
        "customers": {"customer_id": sa.Integer, "signup_date": sa.DateTime, "region": sa.String,
                      "age": sa.Integer, "income": sa.Float, "employment_years": sa.Float},
        "applications": {"application_id": sa.Integer, "customer_id": sa.Integer,
                         "applied_at": sa.DateTime, "amount": sa.Float, "term_months": sa.Integer,
                         "purpose": sa.String, "channel": sa.String, "credit_score": sa.Integer,
                         "existing_debt": sa.Float},
        "outcomes": {"application_id": sa.Integer, "defaulted": sa.Integer, "observed_at": sa.DateTime},
    }
    for table, columns in expected_types.items():
        found = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        assert list(found) == list(columns), table
        for column, kind in columns.items():
            assert isinstance(found[column], kind), f"{table}.{column} is {found[column]!r}"
    assert inspector.get_pk_constraint("customers")["constrained_columns"] == ["customer_id"]
    assert inspector.get_pk_constraint("applications")["constrained_columns"] == ["application_id"]
    assert inspector.get_pk_constraint("outcomes")["constrained_columns"] == ["application_id"]
    indexed = {(t, tuple(i["column_names"])) for t in ("applications", "outcomes") for i in inspector.get_indexes(t)}
    assert indexed >= {
        ("applications", ("customer_id", "applied_at")),
        ("applications", ("applied_at",)),
        ("outcomes", ("application_id",)),
        ("outcomes", ("observed_at",)),
    }


# ---------------------------------------------------------------------------------------------
# realism
# ---------------------------------------------------------------------------------------------


def test_positive_rate_matches_setting(default_size) -> None:
    settings, frame = default_size
    assert frame["defaulted"].mean() == pytest.approx(settings.positive_rate, abs=0.005)


def test_positive_rate_follows_a_non_default_setting() -> None:
    outcomes = generate_tables(DemoWarehouseSettings(rows=20_000, seed=3, positive_rate=0.15))["outcomes"]
    assert outcomes["defaulted"].mean() == pytest.approx(0.15, abs=0.01)


def test_every_application_has_one_outcome_observed_60_to_90_days_later(default_size) -> None:
    _, frame = default_size
    delay = frame["observed_at"] - frame["applied_at"]

    assert frame["application_id"].is_unique
    assert delay.min() >= timedelta(days=60)
    assert delay.max() <= timedelta(days=90)
    # Uniform, not a constant: the delays fill the whole window.
    assert delay.quantile(0.05) < timedelta(days=63) and delay.quantile(0.95) > timedelta(days=87)


def test_datetimes_are_whole_seconds_within_the_span(default_size) -> None:
    settings, frame = default_size
    for column in ("applied_at", "observed_at", "signup_date"):
        assert (frame[column].dt.microsecond == 0).all(), column
    assert frame["applied_at"].min() >= pd.Timestamp(settings.start)
    assert frame["applied_at"].max() < pd.Timestamp(settings.start) + pd.DateOffset(months=settings.months)
    assert set(frame["month"]) == set(range(1, settings.months + 1))


def test_applications_come_after_signup(default_size) -> None:
    _, frame = default_size
    assert (frame["applied_at"] >= frame["signup_date"]).all()


def test_customers_apply_repeatedly_around_the_configured_mean(default_size) -> None:
    settings, frame = default_size
    per_customer = frame.groupby("customer_id").size()

    assert (per_customer > 1).sum() > 0.4 * len(per_customer)
    assert per_customer.mean() == pytest.approx(settings.applications_per_customer, rel=0.05)


def test_values_stay_in_their_documented_domains(default_size) -> None:
    _, frame = default_size
    assert frame["age"].between(18, 80).all()
    assert frame["credit_score"].between(300, 850).all()
    assert set(frame["term_months"]) == {12, 24, 36, 60}
    assert set(frame["region"]) == {"north", "south", "east", "west", "central"}
    assert set(frame["purpose"]) == {"car", "home", "education", "debt_consolidation", "other"}
    assert set(frame["channel"]) == {"branch", "web", "partner", "mobile"}
    assert (frame["income"] > 0).all() and (frame["amount"] > 0).all() and (frame["existing_debt"] >= 0).all()
    assert set(frame["defaulted"]) == {0, 1}


def test_mobile_channel_appears_only_from_month_12(default_size) -> None:
    _, frame = default_size
    mobile_months = frame.loc[frame["channel"] == "mobile", "month"]

    assert MOBILE_LAUNCH_MONTH == 12
    assert mobile_months.min() == 12
    assert set(mobile_months) == set(range(12, 25))


def test_earlier_defaults_predict_later_ones(default_size) -> None:
    _, frame = default_size
    history = frame.sort_values(["customer_id", "applied_at"])
    previous = history.groupby("customer_id")["defaulted"].shift(1)
    defaulted_before = previous.groupby(history["customer_id"]).cummax()  # NaN on first loans
    rates = history["defaulted"].groupby(defaulted_before).mean()

    # The shared latent risk: a past default makes the next one far more likely.
    assert rates[1.0] > 2 * rates[0.0]


def test_income_grows_about_eight_percent_a_year(default_size) -> None:
    _, frame = default_size
    log_income = np.log(frame["income"])
    # Months 1-6 and 19-24 are 18 months apart: 1.08 ** 1.5 - 1 = 12 %.
    growth = np.exp(log_income[frame["month"] >= 19].mean() - log_income[frame["month"] <= 6].mean()) - 1

    assert 0.07 < growth < 0.17


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


# ---------------------------------------------------------------------------------------------
# settings and entry point
# ---------------------------------------------------------------------------------------------


def test_default_yaml_holds_the_documented_defaults() -> None:
    assert DemoWarehouseSettings.from_yaml(DEFAULT_SETTINGS_PATH) == DemoWarehouseSettings()


def test_from_yaml_rejects_an_unknown_key_by_name(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("rows: 1000\nrow_count: 5\n")

    with pytest.raises(ValueError, match="row_count"):
        DemoWarehouseSettings.from_yaml(path)


def test_from_yaml_reads_values_and_keeps_defaults_for_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("rows: 1234\nstart: 2022-07-01\nlabel_delay_days: [30, 45]\n")

    settings = DemoWarehouseSettings.from_yaml(path)

    assert settings == replace(
        DemoWarehouseSettings(), rows=1_234, start=date(2022, 7, 1), label_delay_days=(30, 45)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("rows", 0), ("positive_rate", 1.5), ("label_delay_days", (90, 60)), ("applications_per_customer", 0.5)],
)
def test_out_of_range_setting_is_rejected_by_name(field: str, value) -> None:
    with pytest.raises(ValueError, match=field):
        DemoWarehouseSettings(**{field: value})


def test_build_demo_warehouse_returns_a_correct_summary(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)

    summary = build_demo_warehouse(url, rows=2_000, seed=7)

    tables = read_tables(url)
    applied = tables["applications"]["applied_at"]
    assert summary == WarehouseSummary(
        url=url,
        customers=len(tables["customers"]),
        applications=2_000,
        outcomes=2_000,
        positive_rate=float(tables["outcomes"]["defaulted"].mean()),
        first_applied_at=applied.min().to_pydatetime(),
        last_applied_at=applied.max().to_pydatetime(),
    )
    assert isinstance(summary.first_applied_at, datetime)
    assert datetime(2023, 1, 1) <= summary.first_applied_at < summary.last_applied_at < datetime(2025, 1, 1)
    assert summary == build_demo_warehouse(url, settings_path=DEFAULT_SETTINGS_PATH, rows=2_000, seed=7)


def test_postgres_copy_stores_the_same_tables_as_sqlite(tmp_path: Path, postgres_url: str) -> None:
    settings = DemoWarehouseSettings(rows=3_000, seed=4, chunk_rows=1_000)

    summary = write_warehouse(postgres_url, settings)
    write_warehouse(sqlite_url(tmp_path), settings)

    assert "***" in summary.url or sa.make_url(postgres_url).password is None
    on_postgres, on_sqlite = read_tables(postgres_url), read_tables(sqlite_url(tmp_path))
    for name in on_sqlite:
        pd.testing.assert_frame_equal(on_postgres[name], on_sqlite[name], check_exact=True)
