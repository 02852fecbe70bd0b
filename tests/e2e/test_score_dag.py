"""End to end: the real ``score_credit_default`` DAG, run by ``airflow dags test`` after the real
retrain DAG made a champion, on the tiny embedded warehouse.

The scores land in the warehouse's ``credit_default_scores`` tagged with the champion's version
and the interval's run key; running the same interval again replaces them, never duplicating.
"""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect

from refit_airflow.demo import run_dag_test, run_score_dag_test
from tests.e2e.embedded import embedded_home

pytestmark = pytest.mark.e2e
MODEL = "credit_default"
SCORED = "credit_default_scores"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    settings = embedded_home(tmp_path_factory, "e2e-score")
    # The champion, made the way production makes it: the retrain DAG (the baseline alone is enough).
    outcome = run_dag_test(settings, MODEL, "2024-03-01", conf={"candidates": ["logistic_baseline"]})
    assert (outcome.verdict, outcome.champion_version) == ("PASS", "1")
    return settings


def scores(settings) -> pd.DataFrame:
    engine = create_engine(settings.warehouse_url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(f"SELECT * FROM {SCORED}", conn)
    finally:
        engine.dispose()


def test_the_score_dag_writes_the_intervals_rows_tagged_with_the_champion_and_a_rerun_replaces_them(settings):
    first = run_score_dag_test(settings, MODEL, "2024-09-01")

    scored = scores(settings)
    assert first["rows"] == len(scored) > 100
    assert first["served"] == {"table": SCORED, "version": "1", "rows": first["rows"], "replaced": 0}
    assert set(scored["model_version"]) == {"1"} and set(scored["run_key"]) == {first["run_key"]}
    assert scored["score"].between(0, 1).all() and scored["id"].is_unique
    # No version was registered after the champion: nothing to shadow, and no shadow table.
    assert first["shadow"] is None and "registered after champion v1" in first["shadow_note"]
    engine = create_engine(settings.warehouse_url)
    assert not inspect(engine).has_table(f"{SCORED}_shadow")
    engine.dispose()

    again = run_score_dag_test(settings, MODEL, "2024-09-01")

    rescored = scores(settings)
    assert again["run_key"] == first["run_key"] and again["served"]["replaced"] == first["rows"]
    assert len(rescored) == rescored["id"].nunique() == first["rows"]
    assert rescored.sort_values("id")["score"].tolist() == scored.sort_values("id")["score"].tolist()
