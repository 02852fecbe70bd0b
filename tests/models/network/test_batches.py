"""The data path (``ml_tasks.models.network.batches``): both paths feed the same batches."""

from __future__ import annotations

import numpy as np

from tests.models.network.demo_data import fit, time_split


def test_resident_and_streamed_batches_train_the_same_model():
    _, _, (Xt, _) = time_split(12_000)
    params = {"max_epochs": 2, "one_batch_check": False}
    resident, streamed = fit({**params, "resident": True}), fit({**params, "resident": False})
    assert resident.resident_ and not streamed.resident_
    assert np.array_equal(resident.predict_proba(Xt), streamed.predict_proba(Xt))
