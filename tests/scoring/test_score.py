"""Batch scoring on SQLite and PostgreSQL: every row of the interval scored by the pinned champion,
a re-run that replaces instead of duplicating, shadow scores kept out of the served table, and
clear errors for a missing champion, a foreign destination table and a query that lacks a column.

The models are small pyfunc stand-ins registered in a real MLflow store
(``tests/scoring/registered.py``); the warehouses are the seeded demo warehouse on SQLite and on
the local PostgreSQL server.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timedelta

import pandas as pd
import pytest

from ml_tasks.core.artifacts import StoreLayout
from ml_tasks.core.settings import REPO_ROOT, Settings, ensure_local_folders, load_settings
from ml_tasks.core.spec import ModelSpec, ScoringSpec
from ml_tasks.data.demo_warehouse import build_demo_warehouse
from ml_tasks.scoring.destination import DestinationError
from ml_tasks.scoring.parity import FeatureSkewError
from ml_tasks.scoring.plan import NoChampionError, make_scoring_plan, scoring_run_key
from ml_tasks.scoring.score import ScoringError, score_interval
from tests.conftest import DEMO_SPEC, TINY_ROWS, postgres_databases
from tests.scoring.registered import expected_scores, register_version

INCLUDE = REPO_ROOT / "include"
AS_OF = "2024-09-01"
#: A year of the tiny warehouse (about 4,000 applications): several chunks of 1,000 rows.
WINDOW_DAYS = 365
CHAMPION_SHIFT, CHALLENGER_SHIFT = 0.0, 1.0


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    """One MLflow store for the module: ``credit_default`` v1 is champion, v2 was registered after it."""
    from ml_tasks.core.spec import load_spec

    settings = load_settings({"REFIT_HOME": str(tmp_path_factory.mktemp("scoring") / "refit")})
    ensure_local_folders(settings)
    spec = load_spec(DEMO_SPEC)
    assert register_version(settings, spec, CHAMPION_SHIFT, champion=True) == "1"
    assert register_version(settings, spec, CHALLENGER_SHIFT, champion=False) == "2"
    return settings


@pytest.fixture(scope="module")
def postgres_warehouse():
    with postgres_databases("warehouse") as urls:
        build_demo_warehouse(urls["warehouse"], rows=TINY_ROWS, seed=11)
        yield urls["warehouse"]


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request, tiny_warehouse_url, tmp_path) -> str:
    """The tiny demo warehouse on each dialect; scores are written into it, so SQLite gets a copy."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_warehouse")
    copy = tmp_path / "warehouse.db"
    shutil.copy(tiny_warehouse_url.removeprefix("sqlite:///"), copy)
    return f"sqlite:///{copy}"


def scoring_spec(demo_spec: ModelSpec, **changes) -> ModelSpec:
    """The demo spec scoring a year into a table of its own (a fresh name per test)."""
    scoring = ScoringSpec(query_file="sql/credit_default_score.sql", window_days=WINDOW_DAYS,
                          destination=f"scores_{uuid.uuid4().hex[:8]}", chunk_rows=1_000)
    return demo_spec.model_copy(update={"scoring": scoring.model_copy(update=changes)})


def score(spec: ModelSpec, settings: Settings, url: str, as_of: str = AS_OF):
    plan = make_scoring_plan(spec, DEMO_SPEC, StoreLayout(settings.artifact_root), as_of, settings)
    return plan, score_interval(spec, plan, url, INCLUDE, settings)


def table(url: str, name: str) -> pd.DataFrame:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(f"SELECT * FROM {name} ORDER BY 1", conn)
    finally:
        engine.dispose()


def interval_rows(url: str, as_of: str = AS_OF) -> pd.DataFrame:
    """The applications of the scored interval (id and credit score), read without Refit."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            apps = pd.read_sql("SELECT application_id AS id, applied_at, credit_score FROM applications", conn)
    finally:
        engine.dispose()
    end = datetime.fromisoformat(as_of)
    start = end - pd.Timedelta(days=WINDOW_DAYS)
    applied = pd.to_datetime(apps["applied_at"])
    return apps[(applied >= start) & (applied < end)].sort_values("id").reset_index(drop=True)


def test_every_row_of_the_interval_is_scored_once_by_the_champion_and_tagged_with_its_version(
        demo_spec, settings, warehouse):
    spec = scoring_spec(demo_spec)
    plan, manifest = score(spec, settings, warehouse)

    scored = table(warehouse, spec.scoring.destination)
    expected = interval_rows(warehouse)
    assert len(expected) > 3 * spec.scoring.chunk_rows  # several chunks
    assert manifest.rows == manifest.served.rows == len(scored) == len(expected)
    assert scored["id"].tolist() == expected["id"].tolist()
    assert scored["score"].to_numpy() == pytest.approx(expected_scores(expected["credit_score"], CHAMPION_SHIFT),
                                                       rel=1e-12)
    assert set(scored["model_version"]) == {"1"} and manifest.served.version == "1"
    assert set(scored["run_key"]) == {plan.run_key} and manifest.run_key == plan.run_key
    assert pd.to_datetime(scored["scored_at"]).nunique() == 1
    assert manifest.shadow is None and manifest.served.replaced == 0


def test_rerunning_an_interval_replaces_its_rows_and_never_duplicates(demo_spec, settings, warehouse):
    spec = scoring_spec(demo_spec)
    _, first = score(spec, settings, warehouse)
    _, again = score(spec, settings, warehouse)

    scored = table(warehouse, spec.scoring.destination)
    assert again.run_key == first.run_key
    assert len(scored) == scored["id"].nunique() == first.rows == again.rows
    assert again.served.replaced == first.rows  # every row of the first run, replaced
    assert pd.to_datetime(scored["scored_at"]).unique().tolist() == [pd.Timestamp(again.scored_at)]


def test_an_overlapping_later_interval_rescores_shared_ids_in_place(demo_spec, settings, warehouse):
    spec = scoring_spec(demo_spec)
    _, first = score(spec, settings, warehouse, as_of="2024-09-01")
    _, later = score(spec, settings, warehouse, as_of="2024-10-01")  # 11 of its 12 months overlap

    scored = table(warehouse, spec.scoring.destination)
    assert scored["id"].is_unique
    assert set(scored["run_key"]) == {first.run_key, later.run_key}
    assert (scored["run_key"] == later.run_key).sum() == later.rows
    assert 0 < later.served.replaced < first.rows


def test_shadow_scores_of_the_latest_challenger_go_only_to_the_shadow_table(demo_spec, settings, warehouse):
    spec = scoring_spec(demo_spec, shadow="latest_challenger")
    plan, manifest = score(spec, settings, warehouse)

    served = table(warehouse, spec.scoring.destination)
    shadow = table(warehouse, f"{spec.scoring.destination}_shadow")
    expected = interval_rows(warehouse)
    assert plan.shadow is not None and plan.shadow.version == "2"
    assert set(served["model_version"]) == {"1"} and set(shadow["model_version"]) == {"2"}
    assert served["id"].tolist() == shadow["id"].tolist() == expected["id"].tolist()
    assert served["score"].to_numpy() == pytest.approx(expected_scores(expected["credit_score"], CHAMPION_SHIFT))
    assert shadow["score"].to_numpy() == pytest.approx(expected_scores(expected["credit_score"], CHALLENGER_SHIFT))
    assert manifest.shadow is not None and (manifest.shadow.table, manifest.shadow.version) == (
        f"{spec.scoring.destination}_shadow", "2")


def test_without_a_version_newer_than_the_champion_shadow_scoring_is_skipped_and_says_why(demo_spec, settings):
    spec = scoring_spec(demo_spec, shadow="latest_challenger").model_copy(update={"registry_name": "solo"})
    register_version(settings, spec, CHAMPION_SHIFT, champion=False)
    register_version(settings, spec, CHAMPION_SHIFT, champion=True)  # v2 champion, v1 only a former one

    plan = make_scoring_plan(spec, DEMO_SPEC, StoreLayout(settings.artifact_root), AS_OF, settings)

    assert plan.shadow is None and plan.shadow_destination is None
    assert "no version of 'solo' was registered after champion v2" in plan.shadow_note


def test_no_champion_is_an_error_naming_the_registered_model_and_alias(demo_spec, settings):
    spec = scoring_spec(demo_spec).model_copy(update={"registry_name": "never_trained"})
    with pytest.raises(NoChampionError, match="registered model 'never_trained' has no 'champion' alias"):
        make_scoring_plan(spec, DEMO_SPEC, StoreLayout(settings.artifact_root), AS_OF, settings)


def test_a_destination_with_other_columns_is_refused_and_left_untouched(demo_spec, settings, warehouse):
    from sqlalchemy import create_engine, text

    spec = scoring_spec(demo_spec)
    engine = create_engine(warehouse)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {spec.scoring.destination} (application_id BIGINT, probability FLOAT)"))
        conn.execute(text(f"INSERT INTO {spec.scoring.destination} VALUES (1, 0.5)"))
    engine.dispose()

    with pytest.raises(DestinationError, match=rf"destination table '{spec.scoring.destination}' exists with "
                                               r"columns \['application_id', 'probability'\]; expected exactly "
                                               r"\['id', 'score', 'model_version', 'run_key', 'scored_at'\]"):
        score(spec, settings, warehouse)
    assert table(warehouse, spec.scoring.destination).to_dict("records") == [{"application_id": 1,
                                                                          "probability": 0.5}]


def test_a_query_without_a_column_the_champion_needs_names_the_query_and_the_column(demo_spec, settings, warehouse):
    spec = scoring_spec(demo_spec, query_file=None, query=(
        "SELECT application_id, amount FROM applications WHERE applied_at >= :window_start AND applied_at < :as_of"))
    with pytest.raises(ScoringError, match=r"scoring.query of spec 'credit_default': .*'age'.*no such column"):
        score(spec, settings, warehouse)


def test_a_failed_run_leaves_the_previous_scores_of_the_interval_in_place(demo_spec, settings, warehouse):
    spec = scoring_spec(demo_spec)
    _, first = score(spec, settings, warehouse)
    # The same interval again, from a query that returns every row twice: refused as a whole.
    sql = (INCLUDE / "sql" / "credit_default_score.sql").read_text()
    doubled = scoring_spec(demo_spec, destination=spec.scoring.destination, query_file=None,
                           query=f"SELECT * FROM ({sql}) s UNION ALL SELECT * FROM ({sql}) t")
    with pytest.raises(DestinationError, match=r"returned id\(s\) \[\d+.*more than once"):
        score(doubled, settings, warehouse)

    scored = table(warehouse, spec.scoring.destination)
    assert len(scored) == first.rows and set(scored["run_key"]) == {first.run_key}


def test_every_run_first_checks_the_scoring_querys_features_on_the_champions_labelled_rows(
        demo_spec, settings, warehouse):
    _, manifest = score(scoring_spec(demo_spec), settings, warehouse)

    checked = manifest.feature_check
    assert checked is not None and checked["ok"] is True
    # The champion's training window: source.window_days before its as-of (its refit.as_of tag).
    champion_as_of = datetime(2024, 6, 1)
    assert (checked["window_start"], checked["as_of"]) == (
        (champion_as_of - timedelta(days=demo_spec.source.window_days)).isoformat(), champion_as_of.isoformat())
    assert checked["compared_rows"] == checked["training_rows"] > 1_000


def test_a_scoring_query_that_computes_a_feature_differently_scores_nothing_and_names_it(
        demo_spec, settings, warehouse):
    sql = (INCLUDE / "sql" / "credit_default_score.sql").read_text()
    assert "    a.credit_score," in sql
    skewed = scoring_spec(demo_spec, query_file=None,
                          query=sql.replace("    a.credit_score,", "    a.credit_score + 5 AS credit_score,"))

    with pytest.raises(FeatureSkewError, match=r"scoring query of spec 'credit_default' computes features "
                                               r"differently from its training query on the labelled rows of "
                                               r"\[\d{4}-\d\d-\d\d, 2024-06-01\): feature 'credit_score' differs "
                                               r"on \d+ row\(s\), e\.g\. id \d+: "):
        score(skewed, settings, warehouse)
    assert not destination_exists(warehouse, skewed.scoring.destination)

    # A spec that means it (a feature served fresher than it is trained, say) turns the check off.
    allowed = skewed.model_copy(update={"scoring": skewed.scoring.model_copy(update={"check_features": False})})
    _, manifest = score(allowed, settings, warehouse)
    assert manifest.rows > 0 and manifest.feature_check is None


def destination_exists(url: str, name: str) -> bool:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        return inspect(engine).has_table(name)
    finally:
        engine.dispose()


def test_the_run_key_names_the_interval_alone():
    start, end = datetime(2024, 8, 1), datetime(2024, 9, 1)
    assert scoring_run_key(end, start) == scoring_run_key(end, start)
    assert scoring_run_key(end, start).startswith("20240901T000000-")
    assert scoring_run_key(end, start) != scoring_run_key(end, datetime(2024, 8, 2))


def test_the_cli_scores_the_demo_specs_interval_and_records_the_manifest_in_the_store(settings, tiny_warehouse_url,
                                                                                      tmp_path):
    import json
    import os
    import subprocess
    import sys

    from ml_tasks.io.store import store_from_settings

    warehouse = tmp_path / "warehouse.db"
    shutil.copy(tiny_warehouse_url.removeprefix("sqlite:///"), warehouse)
    # As the person on call runs it: REFIT_HOME and the warehouse (MLflow found through REFIT_HOME).
    env = {name: value for name, value in os.environ.items() if name not in {"MLFLOW_TRACKING_URI",
                                                                              "REFIT_INCLUDE_DIR"}}
    env |= {"REFIT_HOME": str(settings.home), "REFIT_WAREHOUSE_URL": f"sqlite:///{warehouse}"}
    done = subprocess.run([sys.executable, "-m", "ml_tasks", "score", "--model", "credit_default", "--as-of", AS_OF],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    manifest = json.loads(done.stdout.strip().splitlines()[-1])
    store = store_from_settings(settings)
    assert store.read_json(manifest["uri"]) == manifest
    assert store.read_json(store.layout.latest_scoring("credit_default")) == manifest
    assert manifest["served"] == {"table": "credit_default_scores", "version": "1", "rows": manifest["rows"],
                                  "replaced": 0}
    assert manifest["shadow"]["table"] == "credit_default_scores_shadow" and manifest["shadow"]["version"] == "2"
    assert len(table(f"sqlite:///{warehouse}", "credit_default_scores")) == manifest["rows"] > 0
    # The features check passed and is kept for this champion and these queries: the next run reuses it.
    [kept] = store.list(f"{settings.artifact_root}/scoring/credit_default/feature-checks", suffix=".json")
    assert store.read_json(kept) == manifest["feature_check"] and manifest["feature_check"]["ok"] is True
    store.write_json(kept, {**manifest["feature_check"], "marked": "by the test"})
    again = subprocess.run([sys.executable, "-m", "ml_tasks", "score", "--model", "credit_default", "--as-of", AS_OF],
                           capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["feature_check"]["marked"] == "by the test"
