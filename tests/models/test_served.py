"""The served form (``ml_tasks.models.served``) predicts what the fitted model predicts, for every
family and calibrator, from plain state alone; and a warm start gets the fitted model back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.spec import CandidateSpec
from ml_tasks.models import build_candidate
from ml_tasks.models.calibrators import METHOD_ORDER, CalibratedCandidate, make_calibrator
from ml_tasks.models.export import restore_candidate, write_served
from ml_tasks.models.served import ServedModel
from tests.models.network.demo_data import FAST, FEATURES, time_split

FAMILIES = {
    "prior": {},
    "logistic_regression": {"C": 1.0},
    "lightgbm": {"n_estimators": 60, "num_leaves": 7},
    "torch_mlp": {**FAST, "max_epochs": 2},
}


@pytest.fixture(scope="module")
def rows():
    return time_split(3_000)


@pytest.fixture(scope="module")
def fitted(rows):
    (X, y), (Xv, yv), _ = rows
    return {family: build_candidate(CandidateSpec(name=family, family=family, params=params), FEATURES, seed=3)
            .fit(X, y, None, Xv, yv, None) for family, params in FAMILIES.items()}


def awkward(frame: pd.DataFrame, family: str) -> pd.DataFrame:
    """Test rows with what serving meets: missing numerics, missing and never-seen categories, and
    inf where the family takes it (scikit-learn's logistic regression refuses it, served or not)."""
    out = frame.copy()
    out.loc[out.index[:5], "income"] = np.nan
    if family != "logistic_regression":
        out.loc[out.index[5:8], "amount"] = np.inf
    out.loc[out.index[8:12], "region"] = None
    out.loc[out.index[12:16], "purpose"] = "a purpose never seen in training"
    return out


@pytest.mark.parametrize("method", METHOD_ORDER)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_served_state_predicts_what_the_fitted_model_predicts(fitted, rows, tmp_path, family, method):
    (_, _), (Xv, yv), (X_test, _) = rows
    candidate = fitted[family]
    p_valid = candidate.predict_proba(Xv)[:, 1]
    model = CalibratedCandidate(candidate, make_calibrator(method).fit(p_valid, yv, np.ones(len(yv))))
    test = awkward(X_test, family)

    served = ServedModel.load(write_served(model, tmp_path / "served"))

    np.testing.assert_allclose(served.probability(test), model.predict_proba(test)[:, 1], rtol=1e-9, atol=1e-12)
    # Plain state only: JSON and the family's own files, nothing pickled.
    assert {p.name for p in (tmp_path / "served").iterdir()} <= {"model.json", "lightgbm.txt", "network.npz"}
    assert json.loads((tmp_path / "served" / "model.json").read_text())["calibrator"]["method"] == method


@pytest.mark.parametrize("family", ["lightgbm", "torch_mlp"])
def test_a_warm_start_gets_the_fitted_model_back_from_its_served_state(fitted, rows, tmp_path, family):
    _, _, (X_test, _) = rows
    restored = restore_candidate(write_served(fitted[family], tmp_path / "served"))
    assert type(restored) is type(fitted[family]) and restored.can_warm_start_from(fitted[family]) is None
    np.testing.assert_array_equal(restored.predict_proba(X_test), fitted[family].predict_proba(X_test))


def test_a_missing_feature_column_is_named(fitted, rows, tmp_path):
    _, _, (X_test, _) = rows
    served = ServedModel.load(write_served(fitted["lightgbm"], tmp_path / "served"))
    with pytest.raises(ValueError, match=r"missing feature column\(s\) \['channel'\]"):
        served.probability(X_test.drop(columns="channel"))


def test_a_state_written_by_a_newer_format_is_refused_not_misread(fitted, tmp_path):
    folder = write_served(fitted["prior"], tmp_path / "served")
    description = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**description, "format": 99}))
    with pytest.raises(ValueError, match="format 99 is newer"):
        ServedModel.load(folder)
