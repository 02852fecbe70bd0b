"""The moment a run is for: the form's as_of, the logical date, the moment its Asset events name,
or when it was due, in that order."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from types import SimpleNamespace

from ml_tasks.core.settings import REPO_ROOT

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))

from refit_airflow.run_moment import run_as_of  # after the configuration above

DUE = datetime(2026, 12, 7, 4, 0)


def context(as_of=None, logical_date=None, events=None) -> dict:
    return {"params": {"as_of": as_of}, "logical_date": logical_date, "dag_run": SimpleNamespace(run_after=DUE),
            "triggering_asset_events": events or {}}


def test_a_retrain_started_by_the_monitor_trains_as_of_the_moment_the_monitor_measured():
    events = {"refit://credit_default/retrain-trigger": [SimpleNamespace(extra={"as_of": "2024-09-01T00:00:00"}),
                                                         SimpleNamespace(extra={"as_of": "2024-09-03T00:00:00"})]}
    assert run_as_of(context(events=events)) == "2024-09-03T00:00:00"


def test_the_form_and_the_logical_date_come_first_and_an_event_without_a_moment_falls_back_to_when_due():
    champion_moved = {"refit://credit_default/champion": [SimpleNamespace(extra={"version": "2"})]}
    assert run_as_of(context(as_of="2024-05-01", events=champion_moved)) == "2024-05-01"
    assert run_as_of(context(logical_date=datetime(2024, 6, 1))) == datetime(2024, 6, 1)
    assert run_as_of(context(events=champion_moved)) == DUE


def test_a_retrain_started_by_the_monitor_names_its_reasons_and_a_cron_run_none():
    from refit_airflow.assets import trigger_reasons

    events = {"refit://credit_default/retrain-trigger": [SimpleNamespace(extra={
        "as_of": "2024-09-01T00:00:00", "reasons": ["drift: PSI 0.744 of channel above 0.25", "age: 184 days"]})]}
    assert trigger_reasons(context(events=events)) == ("monitor 2024-09-01: drift: PSI 0.744 of channel above 0.25; "
                                                       "monitor 2024-09-01: age: 184 days")
    assert trigger_reasons(context()) is None
