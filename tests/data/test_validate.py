"""Validation: each bad snapshot fails with a message naming the column and what was expected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.data.validate import check_profile, check_snapshot, profile_snapshot

AS_OF = pd.Timestamp("2024-03-01")


def good_frame(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    applied = pd.Timestamp("2023-06-01") + pd.to_timedelta(rng.integers(0, 150, rows), unit="D")
    return pd.DataFrame({
        "application_id": np.arange(rows), "customer_id": rng.integers(0, 100, rows),
        "applied_at": applied, "observed_at": applied + pd.Timedelta(days=70),
        "defaulted": (rng.random(rows) < 0.1).astype(int),
        "age": rng.integers(18, 80, rows).astype(float), "income": rng.normal(5e4, 1e4, rows),
        "employment_years": rng.random(rows) * 10, "amount": rng.random(rows) * 1e4,
        "term_months": rng.choice([12, 24], rows).astype(float), "credit_score": rng.normal(650, 50, rows),
        "existing_debt": rng.random(rows) * 1e3, "prior_applications": rng.integers(0, 3, rows).astype(float),
        "prior_defaults_observed": np.zeros(rows), "region": "north", "purpose": "car", "channel": "web",
    })


def failures(spec, frame):
    at_least_100 = spec.model_copy(update={"validation": spec.validation.model_copy(update={"min_rows": 100})})
    checks, _ = check_snapshot(at_least_100, frame, AS_OF, "query sql/credit_default.sql")
    return [c.detail for c in checks if not c.passed]


def test_good_frame_passes(demo_spec):
    assert failures(demo_spec, good_frame()) == []


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: f.drop(columns=["income"]), "missing columns ['income']"),
        (lambda f: f.assign(defaulted=0), "column 'defaulted': 1 distinct value(s) [0]; expected both classes"),
        (lambda f: f.assign(defaulted=f.defaulted * 2), "column 'defaulted': values [2] outside the spec's [0, 1]"),
        (lambda f: f.assign(income=f.income.where(f.index % 5 != 0)), "column 'income': null rate 0.200 above"),
        (lambda f: f.assign(amount=f.amount.where(f.index != 3, np.inf)),
         "inf values (expected finite): {'amount': 1}"),
        (lambda f: f.assign(applied_at=f.applied_at.where(f.index != 0, AS_OF)),
         "column 'applied_at': 1 rows at or after"),
        (lambda f: f.assign(observed_at=f.observed_at.where(f.index != 0, AS_OF + pd.Timedelta(days=1))),
         "labels observed after the as-of date"),
        (lambda f: f.assign(observed_at=f.applied_at - pd.Timedelta(days=1)),
         "labels observed before their 'applied_at'"),
        (lambda f: f.head(50), "50 rows in the window; expected at least 100"),
        (lambda f: f.assign(application_id=0), "column 'application_id': 399 duplicated ids"),
        (lambda f: f.assign(income=f.income.astype(str)), "column 'income' holds text"),
        (lambda f: f.assign(applied_at=f.applied_at.astype(str)), "column 'applied_at' holds text"),
        (lambda f: f.assign(defaulted=f.defaulted.astype(float)), "column 'defaulted' holds a number"),
        (lambda f: f.rename(columns={"income": "income_usd"}), "'income' (renamed to 'income_usd'?)"),
    ],
)
def test_bad_snapshot_fails_naming_the_column(demo_spec, damage, expected):
    found = failures(demo_spec, damage(good_frame()))
    assert any(expected in detail for detail in found), found


def test_rare_class_and_constant_column_become_warnings(demo_spec):
    frame = good_frame(2000).assign(defaulted=0, age=30.0)
    frame.loc[:4, "defaulted"] = 1
    checks, warnings = check_snapshot(demo_spec, frame, AS_OF, "query")
    assert all(c.passed for c in checks)
    assert any("minority class share" in w for w in warnings)
    assert any("column 'age': constant" in w for w in warnings)


def with_validation(spec, **changes):
    return spec.model_copy(update={"validation": spec.validation.model_copy(update={"min_rows": 100, **changes})})


def test_per_column_null_limit_and_allowed_inf_override_the_defaults(demo_spec):
    frame = good_frame().assign(income=lambda f: f.income.where(f.index % 5 != 0),
                                amount=lambda f: f.amount.where(f.index != 3, np.inf))
    lenient = with_validation(demo_spec, null_rate={"income": 0.25}, allow_nonfinite=["amount"])
    checks, _ = check_snapshot(lenient, frame, AS_OF, "query")
    assert all(c.passed for c in checks), [c.detail for c in checks if not c.passed]


@pytest.mark.parametrize(("previous", "passes"), [(400, True), (600, True), (2_000, False), (100, False), (None, True)])
def test_row_count_far_from_previous_snapshot_fails(demo_spec, previous, passes):
    checks, _ = check_snapshot(with_validation(demo_spec), good_frame(400), AS_OF, "query sql/x.sql",
                               previous_rows=previous)
    by_name = {c.name: c for c in checks}
    if previous is None:
        assert "row_count_vs_previous" not in by_name
        return
    check = by_name["row_count_vs_previous"]
    assert check.passed is passes
    if not passes:
        assert f"400 rows is {400 / previous:.2f}x the previous snapshot's {previous}" in check.detail
        assert "validation.row_count_ratio" in check.detail


def test_importance_weights_must_be_positive_and_finite(demo_spec):
    sampling = demo_spec.sampling.model_copy(update={"importance_weight": "amount"})
    spec = demo_spec.model_copy(update={"sampling": sampling})
    frame = good_frame()
    assert failures(spec, frame) == []
    found = failures(spec, frame.assign(amount=frame.amount.where(frame.index % 10 != 0, 0.0)))
    assert found == ["column 'amount' (sampling.importance_weight): 40 values not positive and finite; "
                     "expected every importance weight > 0"]


@pytest.mark.parametrize("batch_rows", [1, 7, 64, 399])
def test_checks_do_not_depend_on_how_the_snapshot_is_batched(demo_spec, batch_rows):
    """The stored snapshot is validated batch by batch; the verdict must be the whole frame's."""
    frame = good_frame().assign(
        application_id=lambda f: f.application_id.where(f.index % 50 != 0, 1),  # 9 rows with id 1, across batches
        income=lambda f: f.income.where(f.index % 9 != 0),
        amount=lambda f: f.amount.where(f.index != 123, np.inf),
        prior_defaults_observed=lambda f: f.prior_defaults_observed.where(f.index != 333, np.nan),  # constant + null
    )
    spec = demo_spec.model_copy(update={"validation": demo_spec.validation.model_copy(
        update={"min_rows": 100, "max_null_rate": 0.5})})
    whole = check_profile(spec, profile_snapshot(spec, [frame], AS_OF), AS_OF, "q")
    parts = [frame.iloc[i:i + batch_rows] for i in range(0, len(frame), batch_rows)]
    batched = check_profile(spec, profile_snapshot(spec, parts, AS_OF), AS_OF, "q")
    assert batched == whole
    failed = {c.name: c.detail for c in whole[0] if not c.passed}
    assert failed["unique_ids"] == "column 'application_id': 8 duplicated ids"
    assert "{'amount': 1}" in failed["finite_numerics"]
    assert "column 'prior_defaults_observed': constant in this window" in whole[1]


def test_a_staged_snapshot_cut_short_is_named_as_corrupt_not_a_bare_parquet_error(
        demo_spec, refit_home, tiny_warehouse_url):
    from ml_tasks.core.plan import make_plan
    from ml_tasks.data.extract import extract_snapshot
    from ml_tasks.data.validate import run_validation
    from ml_tasks.io.store import CorruptArtifactError, store_from_settings
    from tests.conftest import DEMO_SPEC

    store = store_from_settings(refit_home)
    plan = make_plan(demo_spec, DEMO_SPEC, refit_home.include_dir, store.layout, "2024-03-01")
    snapshot = extract_snapshot(demo_spec, plan, store, tiny_warehouse_url, refit_home.include_dir)
    data = store.read_bytes(snapshot.staging_uri)
    store.write_bytes(snapshot.staging_uri, data[: len(data) // 3])
    with pytest.raises(CorruptArtifactError, match=rf"artifact {snapshot.staging_uri} is corrupt: expected a Parquet"):
        run_validation(demo_spec, plan, snapshot, store)
    assert store.list(store.uri("snapshots")) == []
