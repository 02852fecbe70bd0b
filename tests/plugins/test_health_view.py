"""The champion-health page and its JSON as the Refit views' app serves them, with the login check
stubbed out (the browser test, ``tests/e2e/test_health_view.py``, runs it with the real one)."""

from __future__ import annotations

import os
import re
import tempfile

import pytest

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.io.store import store_from_settings
from tests.monitoring.health_records import monitor_record, write_history

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))

from fastapi.testclient import TestClient

from refit_airflow import view_support
from refit_airflow.report_view import app


@pytest.fixture
def client(refit_home):
    view_support.store.cache_clear()
    app.dependency_overrides[view_support.can_read_runs.dependency] = lambda: None
    try:
        yield TestClient(app, root_path="/refit")
    finally:
        app.dependency_overrides.clear()
        view_support.store.cache_clear()


def test_the_page_tabulates_and_charts_every_model_with_health_records(client, refit_home):
    records = [monitor_record("credit_default", day, drift="fired" if day == 20 else "ok") for day in (10, 20, 30)]
    write_history(store_from_settings(refit_home), [*records, monitor_record("churn", 5, live=None)])
    html = client.get("/health/").text
    assert html.index('id="model-churn"') < html.index('id="model-credit_default"')
    rows = re.findall(r'<tr class="run( fired)?" data-run-key="([^"]+)"', html)
    assert rows[1:] == [("", records[2].run_key), (" fired", records[1].run_key), ("", records[0].run_key)]
    assert len(re.findall(r'<circle class="point live', html)) == 3  # churn's one run judged no decay
    assert len(re.findall(r'<circle class="point psi', html)) == 4
    assert re.findall(r'class="fired-mark" data-run-key="([^"]+)"', html) == [records[1].run_key]
    assert "<script" not in html and "://" not in html  # nothing the frame would fetch or run

    only = client.get("/health/", params={"model": "credit_default"}).text
    assert 'id="model-churn"' not in only and only.count('<tr class="run') == 3


def test_a_model_without_a_monitor_run_says_so_and_a_bad_name_is_a_400(client):
    page = client.get("/health/", params={"model": "credit_default"})
    assert page.status_code == 200 and 'id="empty-credit_default"' in page.text
    assert "<code>monitor_credit_default</code>" in page.text
    assert 'id="empty"' in client.get("/health/").text  # no model has any
    bad = client.get("/health/", params={"model": "../reports"})
    assert bad.status_code == 400 and "parameter 'model'" in bad.json()["detail"]
    assert client.get("/api/health", params={"model": "a/b"}).status_code == 400


def test_the_json_lists_the_newest_records_first(client, refit_home):
    write_history(store_from_settings(refit_home), [monitor_record("credit_default", day) for day in (10, 20, 30)])
    listed = client.get("/api/health", params={"model": "credit_default", "limit": 2}).json()
    assert [record["as_of"][:10] for record in listed] == ["2024-03-31", "2024-03-21"]
    assert listed[0]["health"]["decay"]["live"]["metric"] == "roc_auc"
    assert client.get("/api/health", params={"model": "nothing_yet"}).json() == []
