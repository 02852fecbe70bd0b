"""The moment a Refit DAG run is for, read from its task context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param


def run_as_of(context: Mapping[str, Any]) -> Any:
    """The trigger form's ``as_of``, else the run's logical date, else when the run was due: a run
    triggered by an Asset event has no logical date, and scores (or trains on) what was there then."""
    return context["params"].get("as_of") or context.get("logical_date") or context["dag_run"].run_after


def as_of_param(what: str) -> Param:
    """The trigger form's ``as_of``: a date or empty, for what :func:`run_as_of` then reads."""
    return Param(None, type=["null", "string"], format="date",
                 description=f"{what} (UTC). Empty: the run's logical date, or when it was due.")
