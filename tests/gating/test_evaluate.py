"""The evaluate stage's champion (issue 15, problem 4): scored on the columns of its own MLflow
signature, not on this spec's features; a champion whose columns are gone recorded, named, and
turned into a failing gate check instead of a crash.

The models are real pyfunc models logged to a real (SQLite) MLflow store and loaded back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.manifests import EvaluationManifest, GateCheck, GateManifest, ModelRef
from ml_tasks.core.spec import FeaturesSpec
from ml_tasks.gating.evaluate import (
    UNSCORED_CHAMPION_CHECK,
    fail_unscored_champion,
    score_champion,
    signature_frame,
)
from ml_tasks.registry.versions import ChampionInfo

SIGNATURE = [("age", "double", True), ("income", "double", True), ("region", "string", True)]


class SumOfNumbers:
    """A stand-in fitted model: P(1) grows with the sum of the numeric inputs; it needs ``income``."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        assert "income" in X.columns and X["income"].dtype == np.float64
        p = 1 / (1 + np.exp(-(X.select_dtypes("number").sum(axis=1).to_numpy() / 100.0)))
        return np.column_stack([1 - p, p])


def rows(n: int = 6) -> pd.DataFrame:
    """Test rows as a split holds them: a dropped feature (``income``) as the warehouse typed it,
    text with a missing value, and columns no model takes."""
    return pd.DataFrame({"application_id": range(n), "region": ["north", None, "east", "west", "south", "east"][:n],
                         "income": np.arange(n, dtype="int64") * 1000, "age": np.linspace(20, 70, n),
                         "defaulted": [0, 1] * (n // 2)})


def test_the_champion_takes_its_own_signature_columns_in_its_order_with_the_dtypes_it_was_trained_on():
    frame = signature_frame(rows(), SIGNATURE)

    assert list(frame.columns) == ["age", "income", "region"]
    assert frame["income"].dtype == np.float64 and frame["age"].dtype == np.float64
    assert frame["region"].tolist()[:2] == ["north", None]


def test_an_optional_signature_column_the_rows_lack_is_left_out():
    frame = signature_frame(rows(), [*SIGNATURE, ("segment", "string", False)])
    assert list(frame.columns) == ["age", "income", "region"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> dict[bool, ChampionInfo]:
    """A :class:`SumOfNumbers` pyfunc logged with and without a signature to a fresh SQLite store."""
    import mlflow
    from mlflow.models import infer_signature

    from ml_tasks.registry.pyfunc import CandidateModel

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    example = signature_frame(rows(), SIGNATURE)
    signature = infer_signature(example, pd.DataFrame({"probability": [0.5] * len(example)}))
    champions = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        for with_signature in (True, False):
            with mlflow.start_run():
                info = mlflow.pyfunc.log_model(name="model", python_model=CandidateModel(SumOfNumbers()),
                                               signature=signature if with_signature else None,
                                               pip_requirements=["mlflow"])
            champions[with_signature] = ChampionInfo(version="1", run_id=None, model_uri=info.model_uri, tags={})
        yield champions


def test_a_champion_is_scored_on_a_column_this_spec_no_longer_lists_as_a_feature(logged):
    champion = logged[True]
    spec_features = FeaturesSpec(numeric=["age"], categorical=["region"])  # income dropped

    scored = score_champion(champion, rows(), spec_features)

    assert scored.error is None and scored.columns == ["age", "income", "region"]
    assert scored.probabilities is not None and len(scored.probabilities) == len(rows())
    assert set(scored.costs) == {"latency_ms_per_1k", "size_mb"}


def test_a_champion_whose_column_the_rows_lack_is_recorded_naming_it_instead_of_raising(logged):
    champion = logged[True]

    scored = score_champion(champion, rows().drop(columns=["income"]), FeaturesSpec(numeric=["age"]))

    assert scored.probabilities is None and scored.missing == ["income"]
    assert scored.error is not None and "needs column(s) ['income']" in scored.error
    assert champion.model_uri in scored.error


def test_a_champion_logged_without_a_signature_is_scored_on_the_spec_features(logged):
    champion = logged[False]

    scored = score_champion(champion, rows(), FeaturesSpec(numeric=["age", "income"], categorical=["region"]))

    assert scored.error is None and scored.columns == ["age", "income", "region"]


def evaluation(**fields) -> EvaluationManifest:
    return EvaluationManifest(challenger="lr", candidates=[], champion=None, champion_version="2", predictions_uri="p",
                              test_rows=10, uri="e", models={"lr": ModelRef(candidate="lr", run_id="r", model_uri="m")},
                              **fields)


def passing_gate() -> GateManifest:
    check = GateCheck(name="baseline:roc_auc:superior", metric="roc_auc", challenger=0.8, reference=0.7,
                      difference=0.1, ci_low=0.05, ci_high=0.15, p_value=0.001, threshold=0.0, passed=True, reason="ok")
    return GateManifest(verdict="PASS", champion_version="2", checks=[check], uri="g",
                        challenger_model=ModelRef(candidate="lr", run_id="r", model_uri="m"))


def test_a_champion_that_could_not_be_scored_fails_the_gate_with_a_first_check_naming_the_columns():
    unscored = evaluation(champion_error="champion v2 (models:/m/2) cannot score the test rows: its signature needs "
                                         "column(s) ['salary']", champion_missing_columns=["salary"])

    gate = fail_unscored_champion(passing_gate(), unscored)

    assert gate.verdict == "FAIL"
    first = gate.checks[0]
    assert first.name == UNSCORED_CHAMPION_CHECK and not first.passed and "['salary']" in first.reason
    assert gate.failing_reasons == [first.reason]
    assert fail_unscored_champion(gate, unscored) is gate  # applied once, however often it runs
    assert fail_unscored_champion(passing_gate(), evaluation()).verdict == "PASS"


def test_an_evaluation_json_written_before_the_champion_columns_were_recorded_still_loads():
    earlier = evaluation().to_xcom()
    for name in ("champion_columns", "champion_error", "champion_missing_columns"):
        earlier.pop(name)

    loaded = EvaluationManifest.model_validate(earlier)

    assert loaded.champion_columns == [] and loaded.champion_error is None and loaded.champion_missing_columns == []
