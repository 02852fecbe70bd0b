"""The MLflow form of a candidate: one pyfunc model whose ``predict`` returns probabilities.

:func:`log_served_model` logs a fitted (calibrated) candidate the way every Refit model is
logged since the served form: models-from-code (:mod:`ml_tasks.registry.model_code`) over the
model's plain state (:mod:`ml_tasks.models.served`), with the arithmetic shipped as code, so the
model loads with stock MLflow from its own requirements, with nothing of Refit installed.
:class:`CandidateModel` is the earlier form (a cloudpickled wrapper around Refit's classes): it
stays so that models registered with it still load (:func:`load_pyfunc`).

Imported only inside stage functions (it imports mlflow), never at DAG parse time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.pyfunc.model import PythonModel

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo
    from mlflow.pyfunc import PyFuncModel

    from ml_tasks.models import Candidate
    from ml_tasks.models.calibrators import CalibratedCandidate

#: The models-from-code entry point, and the module MLflow ships with it under the name it imports.
MODEL_CODE = Path(__file__).with_name("model_code.py")
SERVED_MODULE_NAME = "refit_served.py"


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


def log_served_model(model: Candidate | CalibratedCandidate, *, input_example: pd.DataFrame,
                     example_probability: npt.NDArray[np.float64], pip_requirements: list[str]) -> ModelInfo:
    """Log ``model`` under the active MLflow run as ``model``: its served state as the ``served``
    artifact, :mod:`ml_tasks.models.served` as the shipped code, the signature inferred from
    ``input_example`` and its probabilities."""
    import mlflow
    from mlflow.models import infer_signature

    from ml_tasks.models import served
    from ml_tasks.models.export import write_served

    with tempfile.TemporaryDirectory(prefix="refit-served-") as scratch:
        state = write_served(model, Path(scratch) / "served")
        code = Path(scratch) / "code" / SERVED_MODULE_NAME
        code.parent.mkdir()
        shutil.copyfile(served.__file__, code)
        # MLflow runs the model's code while logging it (to check it and score the input
        # example) without the model's code/ folder on the path: put the shipped copy there.
        with _on_sys_path(code.parent):
            info: ModelInfo = mlflow.pyfunc.log_model(
                name="model", python_model=str(MODEL_CODE), artifacts={"served": str(state)},
                code_paths=[str(code)], signature=infer_signature(input_example, {"probability": example_probability}),
                input_example=input_example, pip_requirements=pip_requirements,
            )
    return info


@contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def fitted_candidate(model_uri: str) -> Any:
    """The fitted model behind a logged one, as Refit's class (what a warm start continues): a
    served model is restored from its state; an earlier, pickled one is unwrapped."""
    from ml_tasks.models.export import restore_candidate

    wrapper = load_pyfunc(model_uri).unwrap_python_model()  # type: ignore[no-untyped-call]
    if isinstance(wrapper, CandidateModel):
        return wrapper.candidate
    return restore_candidate(Path(wrapper.served.folder))


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
