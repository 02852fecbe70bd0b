"""The champion-health page inside the Airflow UI: what each monitor run measured, as a table and a chart.

Routes of the Refit views' app (:mod:`refit_airflow.report_view` includes :data:`router`), so the
page sits at ``/refit/health/`` next to the gate results and the UI frames it from the navigation
("Browse → Champion health"). It reads only the health records the monitor DAG writes to the
artifact store (:func:`ml_tasks.monitoring.health.read_history`); the chart is an inline SVG
(:mod:`ml_tasks.monitoring.health_page`), so the framed page needs no script and no network.
Same login as every Refit view: read access to DAG runs.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from ml_tasks.monitoring.health import models_with_health, read_history
from ml_tasks.monitoring.health_page import health_chart, table_rows
from refit_airflow.dag_ids import monitor_dag_id
from refit_airflow.view_support import airflow_base, bad_request, base, can_read_runs, store, templates

#: Runs the chart shows per model (the newest); the table lists the newest :data:`TABLE_LIMIT` of them.
CHART_LIMIT = 90
TABLE_LIMIT = 30

router = APIRouter(dependencies=[can_read_runs])


@router.get("/health/", response_class=HTMLResponse)
def champion_health(request: Request, model: str | None = None) -> HTMLResponse:
    """Every model with health records (or only ``?model=``): recent runs as a table and a chart."""
    with bad_request():
        names = [model] if model else models_with_health(store())
        histories = [(name, read_history(store(), name, CHART_LIMIT)) for name in names]
    models = [{"name": name, "monitor_dag_id": monitor_dag_id(name), "rows": table_rows(records)[:TABLE_LIMIT],
               "runs": len(records), "chart": health_chart(records)} for name, records in histories]
    html = templates().get_template("champion_health.html.j2").render(
        models=models, asked=model, table_limit=TABLE_LIMIT, chart_limit=CHART_LIMIT, base=base(request),
        airflow_base=airflow_base(request))
    return HTMLResponse(html)


@router.get("/api/health")
def health_json(model: str, limit: int = TABLE_LIMIT) -> JSONResponse:
    """The ``limit`` newest health records of ``model`` as JSON, newest first (as ``/api/results``)."""
    with bad_request():
        records = read_history(store(), model, max(1, min(limit, 500)))
    return JSONResponse([record.to_xcom() for record in reversed(records)])
