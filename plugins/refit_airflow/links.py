"""Extra links on the gate and report tasks of every retrain run: its report and MLflow run.

Global links (registered by the plugin) because the stages are ``@task`` functions, which
take no per-operator links. Both point at the report view (:mod:`refit_airflow.report_view`),
which resolves the run when the link is clicked: a link computed when the task finished
would point nowhere for a run whose report is written later, or re-run.
"""

from __future__ import annotations

from urllib.parse import quote, urlparse

from airflow.sdk import BaseOperatorLink

from refit_airflow.dag_ids import retrain_model_of
from refit_airflow.report_view import URL_PREFIX

LINKED_TASKS = frozenset({"gate", "report", "approve"})


def _ui_path_prefix() -> str:
    """The path Airflow is served under (``[api] base_url``), so links work behind a proxy."""
    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _run_path(ti_key) -> str | None:
    if retrain_model_of(ti_key.dag_id) is None or ti_key.task_id not in LINKED_TASKS:
        return None
    return f"{_ui_path_prefix()}{URL_PREFIX}/runs/{quote(ti_key.dag_id, safe='')}/{quote(ti_key.run_id, safe='')}"


def report_url(dag_id: str, run_id: str) -> str:
    """The run's gate report in the UI: absolute when ``[api] base_url`` names a host, else a path."""
    from airflow.configuration import conf

    path = f"{URL_PREFIX}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"
    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{path}" if urlparse(base).netloc else f"{_ui_path_prefix()}{path}"


class GateReportLink(BaseOperatorLink):
    name = "Gate report"

    def get_link(self, operator, *, ti_key) -> str:
        return _run_path(ti_key) or ""  # empty: the UI shows no button on other tasks


class MlflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        path = _run_path(ti_key)
        return f"{path}/mlflow" if path else ""
