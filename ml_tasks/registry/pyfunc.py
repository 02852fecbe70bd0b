"""The MLflow form of a candidate: one pyfunc model whose ``predict`` returns probabilities.

Imported only inside stage functions (it imports mlflow), never at DAG parse time.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class CandidateModel(mlflow.pyfunc.PythonModel):
    """Wraps a fitted :class:`ml_tasks.models.Candidate`; serving gets P(label = 1) per row."""

    def __init__(self, candidate) -> None:
        self.candidate = candidate

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"probability": self.candidate.predict_proba(model_input)[:, 1]})


def load_pyfunc(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """The pyfunc model at ``model_uri`` (a ``models:/`` or ``runs:/`` URI, or a local folder).

    Models logged before the package layout pickled their classes under the flat module
    names; they load too (:mod:`ml_tasks.registry.legacy_names`).
    """
    from ml_tasks.registry.legacy_names import legacy_module_names

    with legacy_module_names():
        return mlflow.pyfunc.load_model(model_uri)


def positive_probability(pyfunc_model, frame: pd.DataFrame):
    """P(label = 1) from a loaded pyfunc model, as a numpy array."""
    return pyfunc_model.predict(frame)["probability"].to_numpy(dtype=float)
