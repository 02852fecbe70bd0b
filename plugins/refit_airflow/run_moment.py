"""The moment a Refit DAG run is for, read from its task context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param


def run_as_of(context: Mapping[str, Any]) -> Any:
    """The trigger form's ``as_of``, else the run's logical date, else the moment the Asset events
    that started the run are about (their extra's ``as_of``: a monitor's retrain trigger names the
    moment it measured), else when the run was due: a run started by a champion's event has no
    logical date, and scores what was there then."""
    return (context["params"].get("as_of") or context.get("logical_date") or _events_as_of(context)
            or context["dag_run"].run_after)


def triggering_extras(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The extra of every Asset event that started the run (none for a cron or manual run)."""
    events = context.get("triggering_asset_events") or {}
    return [getattr(event, "extra", None) or {} for asset_events in events.values() for event in asset_events]


def _events_as_of(context: Mapping[str, Any]) -> str | None:
    """The latest ``as_of`` named in the extra of the Asset events that triggered the run."""
    moments = [str(extra["as_of"]) for extra in triggering_extras(context) if extra.get("as_of")]
    return max(moments) if moments else None


def as_of_param(what: str) -> Param:
    """The trigger form's ``as_of``: a date or empty, for what :func:`run_as_of` then reads."""
    return Param(None, type=["null", "string"], format="date",
                 description=f"{what} (UTC). Empty: the run's logical date, or when it was due.")
