"""Charts of model quality: the reliability diagram."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ml_tasks.evaluation.charts import reliability_diagram_png
from tests.overconfident import positive

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram_is_a_small_png_and_leaves_matplotlib_alone(windows, overconfident):
    import matplotlib

    backend = matplotlib.get_backend()
    X, y, w = windows["test"]
    p = positive(overconfident, X)
    png = reliability_diagram_png({"before": (y, p, w), "after (temperature)": (y, expit(np.log(p / (1 - p)) / 3), w)},
                                  bins=15, title="Calibration")
    assert png.startswith(PNG_MAGIC)
    assert len(png) < 150_000
    assert matplotlib.get_backend() == backend
