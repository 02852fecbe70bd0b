"""What every spec section shares: the strict base model, the error type, names and metric checks."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
)

from ml_tasks.core.columns import HIGHER_IS_BETTER

#: Candidate families the trainer knows; a spec picks among them with ``family``.
FAMILIES = ("prior", "logistic_regression", "lightgbm", "torch_mlp")

#: Model, candidate and stream names: plain identifiers (also what the CLI's ``--model`` accepts).
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
SAMPLE_SIZES = (100, 10_000_000)  # bounds of sampling.size, and of the retrain DAG form's sample_size


class SpecError(ValueError):
    """A model spec is invalid; the message names the file and field."""


class Strict(BaseModel):
    # strict: a number must be written as one (``size: true`` is not 1, ``"5"`` not 5); ints pass as floats.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check_metric(name: str, where: str = "selection_metric") -> None:
    if name not in HIGHER_IS_BETTER:
        raise ValueError(f"{where}: unknown metric {name!r}; expected one of {sorted(HIGHER_IS_BETTER)}")
