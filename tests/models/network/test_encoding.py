"""The network's inputs (``ml_tasks.models.network.encoding``): fitted on the training rows only;
missing and unseen values share a neutral index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.models.network import TorchMLPCandidate
from tests.models.network.demo_data import FAST, FEATURES, fit, time_split


def test_normalisation_and_vocabularies_come_from_the_training_rows_only():
    (X, y), (Xv, yv), _ = time_split(12_000)
    shifted = Xv.copy()
    shifted["income"] *= 1000.0
    shifted["credit_score"] = np.nan
    shifted["region"] = "atlantis"  # a category only the validation rows have
    params = {**FAST, "max_epochs": 1, "one_batch_check": False}
    a = TorchMLPCandidate(FEATURES, params).fit(X, y, None, Xv, yv, None)
    b = TorchMLPCandidate(FEATURES, params).fit(X, y, None, shifted, yv, None)
    assert a.encoder_ == b.encoder_
    i = FEATURES.numeric.index("income")
    assert a.encoder_.means[i] == pytest.approx(X["income"].mean())
    assert a.encoder_.medians[i] == pytest.approx(X["income"].median())
    assert "atlantis" not in a.encoder_.vocab["region"]


def test_unseen_and_missing_categories_share_index_zero_and_predict():
    model = fit({"max_epochs": 1, "one_batch_check": False})
    _, _, (Xt, _) = time_split(12_000)
    rows = Xt.head(3).copy()
    unseen, missing = rows.copy(), rows.copy()
    unseen[FEATURES.categorical] = "never-seen"
    missing[FEATURES.categorical] = None
    missing[FEATURES.numeric[:2]] = np.nan
    missing.loc[missing.index[0], "amount"] = np.inf
    codes = model.encoder_.transform(unseen)[1]
    assert (codes == 0).all() and (model.encoder_.transform(missing)[1] == 0).all()
    known = model.encoder_.transform(Xt)[1]
    for j, name in enumerate(FEATURES.categorical):  # a known value is its 1-based place in the vocabulary
        assert np.array_equal(known[:, j], pd.Index(model.encoder_.vocab[name]).get_indexer(Xt[name]) + 1)
    assert np.isfinite(model.predict_proba(missing)).all()
    numeric_only = unseen.copy()
    numeric_only[FEATURES.categorical] = None
    assert np.array_equal(model.predict_proba(unseen), model.predict_proba(numeric_only))
