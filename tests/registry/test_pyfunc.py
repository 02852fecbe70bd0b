"""The pyfunc form of a candidate serves exactly the calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.models.calibrators import CalibratedCandidate, make_calibrator
from ml_tasks.registry.pyfunc import CandidateModel
from tests.overconfident import positive


@pytest.mark.filterwarnings("ignore:.*Any type hint is inferred")  # mlflow on pyfunc.py's untyped predict
def test_pyfunc_candidate_model_serves_the_calibrated_probabilities(windows, overconfident):
    X, y, w = windows["calibration"]
    model = CalibratedCandidate(overconfident, make_calibrator("isotonic").fit(positive(overconfident, X), y, w))
    frame = pd.DataFrame(windows["test"][0][:50])
    served = CandidateModel(model).predict(None, frame)["probability"].to_numpy()
    assert np.array_equal(served, model.predict_proba(frame)[:, 1])
