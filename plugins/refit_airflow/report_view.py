"""The on-call view inside the Airflow UI: recent gate results per model, and their reports.

A FastAPI app that the plugin mounts on Airflow's API server under ``/refit``; the UI shows
it in a frame from the navigation ("Browse → Gate results") and as a "Gate report" tab on
every DAG run. The pages read only the artifact store (:mod:`ml_tasks.reporting.gate_results`), so
they work the same on a local folder and on S3, and never load a model. The same app serves the
champion-health page (:mod:`refit_airflow.health_view`, "Browse → Champion health").

Every page requires an Airflow login with read access to DAG runs: the browser's Airflow
session cookie is sent along with the frame's requests, as with the UI's own API calls
(:data:`refit_airflow.view_support.can_read_runs`).
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from ml_tasks.reporting import gate_results
from ml_tasks.reporting.gate_results import GateResult
from refit_airflow import health_view
from refit_airflow.dag_ids import retrain_model_of
from refit_airflow.view_support import URL_PREFIX as URL_PREFIX  # what the links and the plugin mount
from refit_airflow.view_support import airflow_base, bad_request, base, can_read_runs, store, templates

LIST_LIMIT = 20

app = FastAPI(title="Refit views (gate results, champion health)", docs_url=None, redoc_url=None, openapi_url=None)
app.include_router(health_view.router)


def _model_of(dag_id: str) -> str:
    model = retrain_model_of(dag_id)
    if model is None:
        raise HTTPException(404, f"DAG {dag_id!r} is not a Refit retrain DAG (expected retrain_<model>)")
    return model


def _result(model: str, *, run_key: str | None = None, dag_run_id: str | None = None) -> GateResult | None:
    with bad_request():
        return gate_results.find_result(store(), model, run_key=run_key, dag_run_id=dag_run_id)


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
                        f"</head><body style='font:14px system-ui,sans-serif;margin:1.25rem'>{body}</body></html>",
                        status_code=status_code)


@app.get("/", response_class=HTMLResponse, dependencies=[can_read_runs])
def list_results(request: Request, model: str | None = None) -> HTMLResponse:
    """Recent gate results of every model (or of ``?model=``), newest first."""
    with bad_request():
        names = [model] if model else gate_results.models_with_results(store())
        models = [(name, gate_results.recent_results(store(), name, LIST_LIMIT)) for name in names]
    html = templates().get_template("gate_results.html.j2").render(
        models=[(name, results) for name, results in models if results], limit=LIST_LIMIT,
        base=base(request), airflow_base=airflow_base(request))
    return HTMLResponse(html)


@app.get("/api/results", dependencies=[can_read_runs])
def results_json(model: str, limit: int = LIST_LIMIT) -> JSONResponse:
    """The same list as JSON, for scripts and dashboards."""
    with bad_request():
        results = gate_results.recent_results(store(), model, max(1, min(limit, 500)))
    return JSONResponse([result.to_dict() for result in results])


@app.get("/reports/{model}/{run_key}", response_class=HTMLResponse, dependencies=[can_read_runs])
def report(model: str, run_key: str) -> HTMLResponse:
    """The run's self-contained HTML report, read from the artifact store."""
    result = _result(model, run_key=run_key)
    if result is None:
        raise HTTPException(404, f"model {model!r} has no gate result for run key {run_key!r}")
    return HTMLResponse(store().read_text(result.html_uri))


@app.get("/runs/{dag_id}/{run_id}", dependencies=[can_read_runs])
def report_of_dag_run(request: Request, dag_id: str, run_id: str):
    """The report of one Airflow run: the DAG run tab and the gate task's extra link land here."""
    model = _model_of(dag_id)
    result = _result(model, dag_run_id=run_id)
    if result is None:
        return _page("No gate result", f"<p id='no-result'>Run <code>{escape(run_id)}</code> of {escape(model)} "
                     "has no gate result yet: it is still running, or it failed before its report stage (its task "
                     "logs say why).</p>", status_code=404)
    return RedirectResponse(f"{base(request)}/reports/{model}/{result.run_key}", status_code=307)


@app.get("/runs/{dag_id}/{run_id}/mlflow", dependencies=[can_read_runs])
def mlflow_run_of_dag_run(dag_id: str, run_id: str):
    """The challenger's MLflow run (its models, metrics and the logged report)."""
    from ml_tasks.core.settings import load_settings
    from ml_tasks.registry.tracking import mlflow_ui_url

    model = _model_of(dag_id)
    result = _result(model, dag_run_id=run_id)
    if result is None or not result.mlflow_run_id:
        raise HTTPException(404, f"run {run_id!r} of {model} has no challenger MLflow run recorded")
    url = mlflow_ui_url(load_settings(), result.mlflow_run_id, experiment_id=result.mlflow_experiment_id)
    if url is None:
        return _page("MLflow run", f"<p>The challenger's MLflow run is <code id='mlflow-run-id'>"
                     f"{result.mlflow_run_id}</code>. This deployment has no MLflow UI address "
                     "(set <code>REFIT_MLFLOW_UI_URL</code>); locally, <code>mlflow ui --backend-store-uri "
                     "&lt;tracking URI&gt;</code> serves it.</p>")
    return RedirectResponse(url, status_code=307)
