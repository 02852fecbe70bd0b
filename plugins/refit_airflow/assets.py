"""The Airflow Assets Refit's DAGs exchange: per model, its champion and its retrain trigger.

The retrain DAG's register task (and the manual registry DAG) emit a model's champion Asset
when the ``champion`` alias actually moves; a ``score_<model>`` DAG whose spec says
``scoring.on_champion: true`` is scheduled on it, so a new champion scores the latest interval
without waiting for the cron. Systems outside Refit can schedule on the same URI.

A ``monitor_<model>`` DAG emits the model's retrain-trigger Asset when one of its spec's
``monitoring.triggers`` fired, with the reasons in the event's extra; the retrain DAG of such a
spec is scheduled on its cron *or* that Asset (:func:`retrain_schedule`).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from refit_airflow.run_moment import triggering_extras

#: Registration actions that move the ``champion`` alias (ml_tasks.core.manifests.RegistrationManifest).
#: "already_registered" does not: it is a re-run finding the version an earlier run registered.
CHAMPION_MOVES = ("registered", "promoted_manually", "rolled_back", "approved")


def champion_asset(registry_name: str) -> Asset:
    """The Asset of ``registry_name``'s champion: ``refit://<registry_name>/champion``."""
    return Asset(uri=f"refit://{registry_name}/champion", name=f"{registry_name}_champion")


def announce_champion(registry_name: str) -> Any:
    """A task that emits the champion Asset's event when the registration it is given moved the
    alias, with the version in the event's extra; otherwise it is skipped, and a skipped task
    emits nothing (a FAIL, a dry run or a re-run of a registered interval announces no champion).
    A register task retried after its first try moved the alias (``champion_moved_by_this_run``)
    still announces it: a consumer hears of every champion at least once.

    Its own task, after the registry step, so that the registry step stays one retriable action
    and a downstream DAG never hears of a champion whose alias did not move.
    """
    asset = champion_asset(registry_name)

    @task(task_id="announce_champion", outlets=[asset])
    def announce(registration: dict) -> dict:
        retried = bool(registration.get("champion_moved_by_this_run"))  # an earlier try moved it
        if registration.get("action") not in CHAMPION_MOVES and not retried:
            raise AirflowSkipException(f"the champion alias did not move ({registration.get('action')}): "
                                       f"no {asset.uri} event")
        extra = {"version": registration["version"], "previous_version": registration.get("previous_version"),
                 "action": "registered" if retried else registration["action"],
                 "model_uri": f"models:/{registry_name}/{registration['version']}"}
        get_current_context()["outlet_events"][asset].extra = extra
        return extra

    return announce


def retrain_trigger_asset(registry_name: str) -> Asset:
    """The Asset a monitor emits when a retrain is due: ``refit://<registry_name>/retrain-trigger``."""
    return Asset(uri=f"refit://{registry_name}/retrain-trigger", name=f"{registry_name}_retrain_trigger")


def retrain_schedule(schedule: str, registry_name: str, monitored: bool) -> str | AssetOrTimeSchedule:
    """The retrain DAG's schedule: its cron, or, for a monitored model, its cron or the trigger Asset."""
    if not monitored:
        return schedule
    # A preset (@monthly) is a cron too: CronTriggerTimetable takes both.
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(schedule, timezone="UTC"),
                               assets=[retrain_trigger_asset(registry_name)])


def announce_retrain(registry_name: str) -> Any:
    """A task that emits the retrain-trigger Asset's event when the health record it is given has a
    fired trigger, with the reasons in the extra; otherwise it is skipped and emits nothing (a
    healthy champion, or a trigger still cooling down, queues no retrain)."""
    asset = retrain_trigger_asset(registry_name)

    @task(task_id="announce_retrain", outlets=[asset])
    def announce(record: dict) -> dict:
        fired = [state for state in record.get("triggers", []) if state.get("fired")]
        if not fired:
            raise AirflowSkipException(f"no trigger fired at {record.get('as_of')}: no {asset.uri} event")
        extra = {"triggers": [state["name"] for state in fired],
                 "reasons": [f"{state['name']}: {state['reason']}" for state in fired],
                 "as_of": record["as_of"], "champion_version": record["champion_version"],
                 "monitor_run_key": record["run_key"]}
        get_current_context()["outlet_events"][asset].extra = extra
        return extra

    return announce


def trigger_reasons(context: Any) -> str | None:
    """What triggered a retrain run, from the retrain-trigger events that started it (None: cron or a
    person); one line, e.g. ``monitor 2024-09-01: drift: PSI 0.744 of channel above 0.25``."""
    reasons = [f"monitor {str(extra.get('as_of', ''))[:10]}: {reason}"
               for extra in triggering_extras(context) for reason in extra.get("reasons", [])]
    return "; ".join(reasons) or None
