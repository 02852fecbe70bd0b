"""Refit's Airflow plugin: what the person on call sees of Refit inside the Airflow UI.

- the listener that writes each retrain run's verdict as its DAG run note;
- the gate results view (a FastAPI app on the API server, framed by the UI) in the navigation
  and as a "Gate report" tab of every DAG run;
- the champion-health page of the same app (each monitor run's health as a table and a chart)
  in the navigation, next to the gate results;
- "Gate report" and "MLflow run" extra links on the gate and report tasks.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from refit_airflow import notes
from refit_airflow.links import GateReportLink, MlflowRunLink
from refit_airflow.report_view import app
from refit_airflow.view_support import URL_PREFIX

# ``href`` is relative to the API server; ``url_route`` is the UI's own route to the frame.
GATE_RESULTS_VIEW = {"name": "Gate results", "href": f"{URL_PREFIX}/", "destination": "nav",
                     "category": "browse", "url_route": "refit-gate-results"}
CHAMPION_HEALTH_VIEW = {"name": "Champion health", "href": f"{URL_PREFIX}/health/", "destination": "nav",
                        "category": "browse", "url_route": "refit-champion-health"}
RUN_REPORT_VIEW = {"name": "Gate report", "href": URL_PREFIX + "/runs/{DAG_ID}/{RUN_ID}", "destination": "dag_run",
                   "url_route": "refit-gate-report"}


class RefitPlugin(AirflowPlugin):
    name = "refit"
    listeners = [notes]
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Refit views"}]
    external_views = [GATE_RESULTS_VIEW, CHAMPION_HEALTH_VIEW, RUN_REPORT_VIEW]
    global_operator_extra_links = [GateReportLink(), MlflowRunLink()]
