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


def positive_probability(pyfunc_model, frame: pd.DataFrame):
    """P(label = 1) from a loaded pyfunc model, as a numpy array."""
    return pyfunc_model.predict(frame)["probability"].to_numpy(dtype=float)
