"""Extraction: the as-of window, label maturity, point-in-time features, content-addressed snapshots."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import create_engine

from ml_tasks.core.plan import make_plan
from ml_tasks.data.extract import (
    ExtractError,
    commit_snapshot,
    data_location,
    extract_snapshot,
)
from ml_tasks.io.store import store_from_settings
from tests.conftest import DEMO_SPEC

AS_OF = "2024-03-01"


def plan_for(spec, settings, as_of=AS_OF):
    return make_plan(spec, DEMO_SPEC, settings.include_dir, store_from_settings(settings).layout, as_of)


def raw_tables(url):
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = {name: pd.read_sql_table(name, conn) for name in ("customers", "applications", "outcomes")}
    engine.dispose()
    return tables


def test_window_holds_only_mature_labels_before_as_of(demo_spec, refit_home, tiny_warehouse_url):
    plan = plan_for(demo_spec, refit_home)
    store = store_from_settings(refit_home)
    snapshot = extract_snapshot(demo_spec, plan, store, tiny_warehouse_url, refit_home.include_dir)
    frame = store.read_frame(data_location(snapshot))

    tables = raw_tables(tiny_warehouse_url)
    joined = tables["applications"].merge(tables["outcomes"], on="application_id")
    expected = joined[(joined.applied_at >= plan.window_start) & (joined.applied_at < plan.as_of)
                      & (joined.observed_at <= plan.as_of)]
    assert snapshot.rows == len(expected) > 0
    assert set(frame.application_id) == set(expected.application_id)
    assert frame.observed_at.max() <= pd.Timestamp(plan.as_of)
    # Rows whose label was not yet observed are left out, even though the application is in the window.
    immature = joined[(joined.applied_at >= plan.window_start) & (joined.applied_at < plan.as_of)
                      & (joined.observed_at > plan.as_of)]
    assert len(immature) > 0 and not set(immature.application_id) & set(frame.application_id)
    assert snapshot.label_counts == {str(k): int(v) for k, v in frame.defaulted.value_counts().sort_index().items()}


def test_prior_defaults_count_only_what_was_observed_at_application_time(demo_spec, refit_home, tiny_warehouse_url):
    store = store_from_settings(refit_home)
    snapshot = extract_snapshot(demo_spec, plan_for(demo_spec, refit_home), store, tiny_warehouse_url,
                                refit_home.include_dir)
    frame = store.read_frame(data_location(snapshot))
    tables = raw_tables(tiny_warehouse_url)
    history = tables["applications"].merge(tables["outcomes"], on="application_id")
    sample = frame.sample(200, random_state=0)
    for row in sample.itertuples():
        earlier = history[(history.customer_id == row.customer_id) & (history.applied_at < row.applied_at)]
        assert row.prior_applications == len(earlier)
        known = earlier[(earlier.observed_at < row.applied_at) & (earlier.defaulted == 1)]
        assert row.prior_defaults_observed == len(known)


def test_snapshot_is_staged_until_committed_then_never_written_again(demo_spec, refit_home, tiny_warehouse_url):
    store = store_from_settings(refit_home)
    plan = plan_for(demo_spec, refit_home)
    first = extract_snapshot(demo_spec, plan, store, tiny_warehouse_url, refit_home.include_dir, chunk_rows=500)
    assert first.staging_uri and store.exists(first.staging_uri)
    assert not store.exists(first.uri) and not store.exists(first.manifest_uri)  # not validated yet
    committed = commit_snapshot(first, store)
    assert store.exists(first.uri) and store.read_json(first.manifest_uri)["staging_uri"] is None
    assert not store.exists(first.staging_uri) and committed.staging_uri is None
    path = refit_home.home / "artifacts" / "snapshots" / "credit_default" / first.snapshot_id / "data.parquet"
    written_at = path.stat().st_mtime_ns
    second = extract_snapshot(demo_spec, plan, store, tiny_warehouse_url, refit_home.include_dir, chunk_rows=1_000)
    assert second.snapshot_id == first.snapshot_id  # the id does not depend on chunking
    assert not first.reused and second.reused and second.staging_uri is None
    assert path.stat().st_mtime_ns == written_at
    later = extract_snapshot(demo_spec, plan_for(demo_spec, refit_home, "2024-06-01"), store, tiny_warehouse_url,
                             refit_home.include_dir)
    assert later.snapshot_id != first.snapshot_id


def test_empty_window_fails_naming_tables_and_writes_nothing(demo_spec, refit_home, tiny_warehouse_url):
    store = store_from_settings(refit_home)
    with pytest.raises(ExtractError, match=r"empty window.*customers, applications, outcomes"):
        extract_snapshot(demo_spec, plan_for(demo_spec, refit_home, "2022-01-01"), store, tiny_warehouse_url,
                         refit_home.include_dir)
    assert not (refit_home.home / "artifacts" / "snapshots").exists()


def test_snapshot_id_does_not_depend_on_how_rows_were_batched(demo_spec, refit_home, tiny_warehouse_url):
    store = store_from_settings(refit_home)
    plan = plan_for(demo_spec, refit_home)
    whole = extract_snapshot(demo_spec, plan, store, tiny_warehouse_url, refit_home.include_dir)
    ragged = extract_snapshot(demo_spec, plan, store, tiny_warehouse_url, refit_home.include_dir, chunk_rows=37)
    assert whole.snapshot_id == ragged.snapshot_id and whole.rows == ragged.rows
    assert store.read_frame(data_location(whole)).equals(store.read_frame(data_location(ragged)))


def test_extract_records_strata_counts_for_the_one_pass_sampler(demo_spec, refit_home, tiny_warehouse_url):
    store = store_from_settings(refit_home)
    snapshot = extract_snapshot(demo_spec, plan_for(demo_spec, refit_home), store, tiny_warehouse_url,
                                refit_home.include_dir)
    frame = store.read_frame(data_location(snapshot))
    expected = frame.groupby(["defaulted", "channel"], dropna=False).size()
    assert snapshot.strata.columns == ["defaulted", "channel"]
    assert {(label, channel): n for label, channel, n in snapshot.strata.counts} == expected.to_dict()


def test_postgres_and_sqlite_give_the_same_snapshot(demo_spec, refit_home, postgres_url, tmp_path):
    from ml_tasks.data.demo_warehouse import build_demo_warehouse

    sqlite_url = f"sqlite:///{tmp_path / 'w.db'}"
    for url in (sqlite_url, postgres_url):
        build_demo_warehouse(url, rows=3_000, seed=5)
    store = store_from_settings(refit_home)
    plan = plan_for(demo_spec, refit_home)
    on_sqlite = extract_snapshot(demo_spec, plan, store, sqlite_url, refit_home.include_dir)
    commit_snapshot(on_sqlite, store)
    on_postgres = extract_snapshot(demo_spec, plan, store, postgres_url, refit_home.include_dir)
    # The spec, not the driver, decides the snapshot's types: the content hash is the same.
    assert on_postgres.rows == on_sqlite.rows > 0
    assert on_postgres.columns == on_sqlite.columns
    assert on_postgres.snapshot_id == on_sqlite.snapshot_id and on_postgres.reused


def test_the_manifest_records_the_size_and_sha256_of_the_snapshot_file_and_a_reuse_keeps_them(
        demo_spec, refit_home, tiny_warehouse_url):
    from ml_tasks.io.store import file_checksum

    store = store_from_settings(refit_home)
    plan = plan_for(demo_spec, refit_home)
    staged = extract_snapshot(demo_spec, plan, store, tiny_warehouse_url, refit_home.include_dir)
    committed = commit_snapshot(staged, store)
    path = refit_home.home / "artifacts" / "snapshots" / "credit_default" / staged.snapshot_id / "data.parquet"
    assert file_checksum(path) == (staged.data_bytes, staged.data_sha256) == (committed.data_bytes,
                                                                              committed.data_sha256)
    reused = extract_snapshot(demo_spec, plan, store, tiny_warehouse_url, refit_home.include_dir, chunk_rows=999)
    assert reused.reused and (reused.data_bytes, reused.data_sha256) == (staged.data_bytes, staged.data_sha256)


def test_an_extraction_puts_back_the_sigterm_handler_it_found(demo_spec, refit_home, tiny_warehouse_url):
    import signal

    def airflow_like(signum, frame):  # what Airflow's task runner installs: it calls on_kill
        pass

    previous = signal.signal(signal.SIGTERM, airflow_like)
    try:
        store = store_from_settings(refit_home)
        extract_snapshot(demo_spec, plan_for(demo_spec, refit_home), store, tiny_warehouse_url, refit_home.include_dir)
        assert signal.getsignal(signal.SIGTERM) is airflow_like
    finally:
        signal.signal(signal.SIGTERM, previous)
