"""A retrain run the monitor's Asset started says so: the trigger is recorded in its plan, without
changing its run key, and reaches its gate result and its DAG run note."""

from __future__ import annotations

import os
import tempfile

from ml_tasks.core.artifacts import StoreLayout
from ml_tasks.core.plan import make_plan
from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.reporting.gate_results import GateResult
from tests.conftest import DEMO_SPEC

# Airflow reads its configuration once, at its first import: a throwaway home and Refit's plugins
# folder first, as the plugin's own tests expect when they run later in the same session.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))

from refit_airflow.notes import note_text  # after the configuration above

REASON = "monitor 2024-09-01: drift: PSI 0.744 of channel above 0.25"


def test_a_triggered_run_records_why_in_its_plan_under_the_run_key_of_its_interval(demo_spec):
    layout = StoreLayout("/store")
    plain = make_plan(demo_spec, DEMO_SPEC, REPO_ROOT / "include", layout, "2024-09-01")
    triggered = make_plan(demo_spec, DEMO_SPEC, REPO_ROOT / "include", layout, "2024-09-01", trigger=REASON)
    assert plain.trigger is None and triggered.trigger == REASON
    assert triggered.run_key == plain.run_key  # a triggered run of an interval is that interval's run


def test_the_run_note_names_the_trigger():
    result = GateResult(model="credit_default", run_key="20240901T000000-1a2b3c4d", verdict="PASS",
                        written_at="2024-09-02T00:00:00", as_of="2024-09-01", challenger="lightgbm",
                        champion_version="2", dag_run_id="asset_triggered__1", dry_run=False, html_uri="r.html",
                        json_uri="r.json", trigger=REASON)
    assert f"Triggered by {REASON}" in note_text(result.to_dict())
    assert "Triggered" not in note_text({**result.to_dict(), "trigger": None})
