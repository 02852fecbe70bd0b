"""The Airflow Assets Refit's DAGs exchange: one per model's champion.

The retrain DAG's register task (and the manual registry DAG) emit a model's champion Asset
when the ``champion`` alias actually moves; a ``score_<model>`` DAG whose spec says
``scoring.on_champion: true`` is scheduled on it, so a new champion scores the latest interval
without waiting for the cron. Systems outside Refit can schedule on the same URI.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

#: Registration actions that move the ``champion`` alias (ml_tasks.core.manifests.RegistrationManifest).
#: "already_registered" does not: it is a re-run finding the version an earlier run registered.
CHAMPION_MOVES = ("registered", "promoted_manually", "rolled_back")


def champion_asset(registry_name: str) -> Asset:
    """The Asset of ``registry_name``'s champion: ``refit://<registry_name>/champion``."""
    return Asset(uri=f"refit://{registry_name}/champion", name=f"{registry_name}_champion")


def announce_champion(registry_name: str) -> Any:
    """A task that emits the champion Asset's event when the registration it is given moved the
    alias, with the version in the event's extra; otherwise it is skipped, and a skipped task
    emits nothing (a FAIL, a dry run or a re-run of a registered interval announces no champion).

    Its own task, after the registry step, so that the registry step stays one retriable action
    and a downstream DAG never hears of a champion whose alias did not move.
    """
    asset = champion_asset(registry_name)

    @task(task_id="announce_champion", outlets=[asset])
    def announce(registration: dict) -> dict:
        if registration.get("action") not in CHAMPION_MOVES:
            raise AirflowSkipException(f"the champion alias did not move ({registration.get('action')}): "
                                       f"no {asset.uri} event")
        extra = {"version": registration["version"], "previous_version": registration.get("previous_version"),
                 "action": registration["action"], "model_uri": f"models:/{registry_name}/{registration['version']}"}
        get_current_context()["outlet_events"][asset].extra = extra
        return extra

    return announce
