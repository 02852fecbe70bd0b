"""The MLflow form of a candidate: one pyfunc model whose ``predict`` returns probabilities.

Imported only inside stage functions (it imports mlflow), never at DAG parse time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.pyfunc.model import PythonModel

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel


class ProbabilityModel(Protocol):
    """What a logged model wraps: a fitted candidate, or a calibrated one (``(n, 2)`` probabilities)."""

    def predict_proba(self, X: pd.DataFrame) -> npt.NDArray[np.float64]: ...


class CandidateModel(PythonModel):
    """Wraps a fitted :class:`ml_tasks.models.Candidate`; serving gets P(label = 1) per row."""

    def __init__(self, candidate: ProbabilityModel) -> None:
        self.candidate = candidate

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None,
                ) -> pd.DataFrame:
        return pd.DataFrame({"probability": self.candidate.predict_proba(model_input)[:, 1]})


def load_pyfunc(model_uri: str) -> PyFuncModel:
    """The pyfunc model at ``model_uri`` (a ``models:/`` or ``runs:/`` URI, or a local folder).

    Models logged before the package layout pickled their classes under the flat module
    names; they load too (:mod:`ml_tasks.registry.legacy_names`).
    """
    from mlflow.pyfunc import load_model

    from ml_tasks.registry.legacy_names import legacy_module_names

    with legacy_module_names():
        return load_model(model_uri)


def positive_probability(pyfunc_model: PyFuncModel, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
    """P(label = 1) from a loaded pyfunc model, as a numpy array."""
    output = pyfunc_model.predict(frame)
    if not isinstance(output, pd.DataFrame):
        raise TypeError(f"expected a model's predictions as a frame with a 'probability' column (a Refit pyfunc), "
                        f"got {type(output).__name__}")
    probabilities: npt.NDArray[np.float64] = output["probability"].to_numpy(dtype=float)
    return probabilities
