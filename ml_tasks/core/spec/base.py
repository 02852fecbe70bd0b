"""What every spec section shares: the strict base model, the error type, names and metric checks,
and the problem records that let a check report any number of errors, each at its own field."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from croniter import CroniterBadDateError, CroniterError, croniter  # type: ignore[import-untyped]
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ml_tasks.core.columns import HIGHER_IS_BETTER

#: Candidate families the trainer knows; a spec picks among them with ``family``.
FAMILIES = ("prior", "logistic_regression", "lightgbm", "torch_mlp")

#: Model, candidate and stream names: plain identifiers (also what the CLI's ``--model`` accepts).
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
SAMPLE_SIZES = (100, 10_000_000)  # bounds of sampling.size, and of the retrain DAG form's sample_size

#: Schedule presets a spec may write instead of a cron expression (Airflow's names).
PRESETS = frozenset({"@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"})
_CRON_FIELD = r"[\d\*/,\-A-Za-z?LW#]+"
_CRON = re.compile(rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$")

#: Where a problem sits in a spec: keys and list positions, e.g. ``("candidates", 2, "params", "epochs")``.
Loc = tuple[str | int, ...]


class SpecError(ValueError):
    """A model spec is invalid; the message names the file and field."""


class Strict(BaseModel):
    # strict: a number must be written as one (``size: true`` is not 1, ``"5"`` not 5); ints pass as floats.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def problem(loc: Loc, message: str, value: object = None, kind: str = "spec") -> InitErrorDetails:
    """One error at field ``loc`` (relative to the model whose validator reports it)."""
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def nested(exc: ValidationError, prefix: Loc = ()) -> list[InitErrorDetails]:
    """The errors of ``exc`` as problems under ``prefix``, each keeping its kind, message and value."""
    return [problem((*prefix, *error["loc"]), error["msg"], error.get("input"), error["type"])
            for error in exc.errors()]


def raise_problems(title: str, problems: Sequence[InitErrorDetails]) -> None:
    """Raise every problem at once (pydantic prefixes each with where the validated model sits)."""
    if problems:
        raise ValidationError.from_exception_data(title, list(problems))


def metric_problem(name: str, loc: Loc) -> list[InitErrorDetails]:
    """An unknown metric name at ``loc``, or nothing."""
    if name in HIGHER_IS_BETTER:
        return []
    return [problem(loc, f"unknown metric {name!r}; expected one of {sorted(HIGHER_IS_BETTER)}", name)]


def checked_schedule(value: str, presets: Collection[str]) -> str:
    """``value`` if it is one of ``presets`` or a 5-field cron expression that fires; else a
    ValueError saying what was expected."""
    if value in presets:
        return value
    expected = f"expected a 5-field cron expression or one of {sorted(presets)}, got {value!r}"
    if not _CRON.match(value.strip()):
        raise ValueError(expected)
    try:  # croniter is the parser Airflow's cron timetables validate with
        croniter(value).get_next(float)
    except CroniterBadDateError:
        raise ValueError(f"{value!r} never fires (no such date); expected a schedule that runs") from None
    except (CroniterError, TypeError) as exc:
        raise ValueError(f"{expected}: {exc}") from None
    return value
