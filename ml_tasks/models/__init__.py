"""The candidate interface and every model family (prior, logistic regression, LightGBM, the PyTorch network).

The package exports what the training and gating code use, so callers write
``from ml_tasks.models import build_candidate, feature_frame``. The network's class is reached
lazily (``ml_tasks.models.TorchMLPCandidate``): importing this package never imports torch.
Models registered before the package layout pickled their classes under this package's name
(``ml_tasks.models.LightGBMCandidate``), so those names stay exported here.
"""

from __future__ import annotations

from typing import Any

from ml_tasks.models.base import (
    Candidate,
    category_vocabulary,
    feature_frame,
    frozen_categorical,
)
from ml_tasks.models.families import build_candidate
from ml_tasks.models.lightgbm import LightGBMCandidate
from ml_tasks.models.linear import LogisticRegressionCandidate, PriorCandidate

__all__ = [
    "Candidate", "LightGBMCandidate", "LogisticRegressionCandidate", "PriorCandidate", "TorchMLPCandidate",
    "build_candidate", "category_vocabulary", "feature_frame", "frozen_categorical",
]


def __getattr__(name: str) -> Any:
    if name == "TorchMLPCandidate":
        from ml_tasks.models.network import (
            TorchMLPCandidate,  # imports torch: only when asked for
        )

        return TorchMLPCandidate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
