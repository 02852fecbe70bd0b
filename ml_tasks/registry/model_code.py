"""The code of every model Refit logs, as MLflow's models-from-code runs it: loading a model
executes this file from the model's folder, never Refit's installed package.

It needs only what the model's own requirements install (mlflow, numpy, pandas; lightgbm for
trees): the arithmetic is ``refit_served``, the copy of :mod:`ml_tasks.models.served` that MLflow
ships in the model's ``code/`` folder (``code_paths``) and puts on ``sys.path`` before running
this file, and the fitted state is the model's ``served`` artifact. So
``mlflow.pyfunc.load_model("models:/credit_default@champion")`` and ``mlflow models serve`` work
in an environment built from the model's ``requirements.txt`` alone.

``predict`` returns a frame with one column, ``probability``: P(label = 1) per input row.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel
from refit_served import ServedModel  # type: ignore[import-not-found]  # the model's code/ folder, see above


class RefitServedModel(PythonModel):
    """Serves the calibrated P(label = 1) of a model saved as plain state."""

    def load_context(self, context: Any) -> None:
        self.served = ServedModel.load(context.artifacts["served"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return pd.DataFrame({"probability": self.served.probability(model_input)})


set_model(RefitServedModel())
