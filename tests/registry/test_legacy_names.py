"""Champions registered before the package layout still load: their pickles name the flat modules."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks.registry.pyfunc import load_pyfunc, positive_probability

SAVED = Path(__file__).parent / "data" / "flat_layout_models"


# The network computes in float32, and torch's CPU kernels sum in an order that depends on how
# many threads they get (seen: 1.5e-7 relative under load), so it is held to float32's precision.
RELATIVE_TOLERANCE = {"logistic_regression": 1e-9, "lightgbm": 1e-9, "torch_mlp": 1e-5}


@pytest.mark.parametrize("family", list(RELATIVE_TOLERANCE))
def test_a_model_pickled_under_the_flat_module_names_loads_and_predicts_as_before(family):
    folder = SAVED / family
    assert b"ml_tasks.calibrate" in (folder / "python_model.pkl").read_bytes()  # the old names, really

    model = load_pyfunc(str(folder))

    served = positive_probability(model, pd.read_parquet(folder / "probe.parquet"))
    expected = json.loads((folder / "expected.json").read_text())
    np.testing.assert_allclose(served, expected, rtol=RELATIVE_TOLERANCE[family], atol=1e-12)
    calibrated = model.unwrap_python_model().candidate
    assert type(calibrated).__module__ == "ml_tasks.models.calibrators"


def test_the_flat_module_names_are_gone_again_after_loading():
    load_pyfunc(str(SAVED / "logistic_regression"))

    assert "ml_tasks.calibrate" not in sys.modules and "ml_tasks.pyfunc" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("ml_tasks.calibrate")
    assert not hasattr(importlib.import_module("ml_tasks"), "calibrate")
