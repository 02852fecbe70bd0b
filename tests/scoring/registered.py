"""A registry of small stand-in models for the scoring tests: plain pyfunc models whose scores are
a known function of the rows, registered in a real MLflow store (no training, no mocks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import ModelSpec
from ml_tasks.registry.tracking import use_store


class ShiftedLogit(PythonModel):
    """P(default) rising with the credit score, shifted by ``shift``: each version scores differently."""

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"probability": expected_scores(model_input["credit_score"], self.shift)})


def expected_scores(credit_score, shift: float) -> np.ndarray:
    """The scores :class:`ShiftedLogit` gives rows with these credit scores."""
    z = shift + (np.asarray(credit_score, dtype=float) - 650.0) / 50.0
    return 1.0 / (1.0 + np.exp(-z))


def register_version(settings: Settings, spec: ModelSpec, shift: float, champion: bool,
                     as_of: str | None = "2024-06-01T00:00:00") -> str:
    """Log a :class:`ShiftedLogit` with the spec's features as its signature, register it under
    ``spec.registry_name`` (tagged ``refit.as_of`` as a retrain run tags it, unless None) and, if
    ``champion``, point the alias at it; the new version's number."""
    import mlflow
    from mlflow.models import infer_signature

    client = use_store(settings)
    example = pd.DataFrame({**{name: [1.0, 2.0] for name in spec.features.numeric},
                            **{name: ["a", None] for name in spec.features.categorical}})
    with mlflow.start_run():
        logged = mlflow.pyfunc.log_model(name="model", python_model=ShiftedLogit(shift),
                                         signature=infer_signature(example, pd.DataFrame({"probability": [0.5, 0.5]})))
    version = str(mlflow.register_model(logged.model_uri, spec.registry_name).version)
    if as_of is not None:
        client.set_model_version_tag(spec.registry_name, version, "refit.as_of", as_of)
    if champion:
        client.set_registered_model_alias(spec.registry_name, "champion", version)
    return version
