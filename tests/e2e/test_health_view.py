"""The champion-health page in the Airflow UI: headless Chromium against the real API server with
Refit's plugin, over health records in the home's artifact store as monitor runs write them.

The records are written directly (``tests/monitoring/health_records.py``) rather than by monitor
runs, which would need a retrain run first: what is under test is the page reading them back.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from ml_tasks.io.store import store_from_settings
from tests.e2e.embedded import embedded_home
from tests.monitoring.health_records import monitor_record, write_history

pytestmark = pytest.mark.e2e
MODEL = "credit_default"
WAIT_S = 60


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return embedded_home(tmp_path_factory, "health-ui")


def listed_health(driver) -> list[dict]:
    """The rows of the champion-health tables inside the frame, with each run's trigger states."""
    WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, "tr.run")))
    rows = []
    for row in driver.find_elements(By.CSS_SELECTOR, "tr.run"):
        cells = row.find_elements(By.TAG_NAME, "td")
        rows.append({"run_key": row.get_attribute("data-run-key"), "as_of": cells[0].text,
                     "champion": cells[1].text, "rows": cells[2].text, "live": cells[3].text,
                     "registered": cells[4].text, "max_psi": cells[5].text,
                     "triggers": {span.get_attribute("data-trigger"): span.text.split(": ", 1)[1]
                                  for span in cells[7].find_elements(By.CSS_SELECTOR, "span.trigger")},
                     "dag_run": cells[8].text})
    return rows


def test_champion_health_page_in_the_airflow_ui_tabulates_and_charts_every_monitor_run(settings):
    from tests.e2e.airflow_ui import api_server, chromium
    from tests.e2e.ui_checks import log_in, open_plugin_frame

    records = [
        monitor_record(MODEL, 7, live=0.801, psi={"income": 0.03, "age": 0.01}),
        monitor_record(MODEL, 14, live=0.78, psi={"income": 0.26, "age": 0.02}, drift="fired"),
        monitor_record(MODEL, 21, live=0.74, psi={"income": 0.31, "age": 0.05}, drift="cooling", version="2",
                       rows=650),
    ]
    write_history(store_from_settings(settings), records)
    fired = records[1]
    with api_server(settings) as server, chromium() as driver:
        for path in ("/refit/health/", f"/refit/api/health?model={MODEL}"):
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(f"{server.url}{path}", timeout=30)  # no login, no page

        log_in(driver, server)
        open_plugin_frame(driver, server, "/plugin/refit-champion-health")
        rows = listed_health(driver)
        assert [row["run_key"] for row in rows] == [r.run_key for r in reversed(records)]  # newest first
        newest = rows[0]
        assert (newest["as_of"], newest["champion"], newest["rows"]) == ("2024-03-22", "v2", "650")
        assert newest["live"] == "roc_auc 0.7400 [0.7100, 0.7700] decayed" and newest["registered"] == "0.8000"
        assert newest["max_psi"] == "0.310 (income)" and newest["dag_run"] == "scheduled__2024-03-22"
        assert [row["triggers"] for row in rows] == [
            {"drift": "tripped, cooling down", "volume": "ok"}, {"drift": "FIRED", "volume": "ok"},
            {"drift": "ok", "volume": "ok"}]

        # The chart: one point per run in each panel, oldest left; the run whose trigger fired is marked.
        chart = driver.find_element(By.CSS_SELECTOR, f"svg.health-chart[data-model='{MODEL}']")
        for panel in ("live", "psi"):
            points = chart.find_elements(By.CSS_SELECTOR, f"circle.point.{panel}")
            assert [p.get_attribute("data-run-key") for p in points] == [r.run_key for r in records]
            xs = [float(p.get_attribute("cx")) for p in points]
            assert xs == sorted(xs)
        assert [m.get_attribute("data-run-key") for m in chart.find_elements(By.CSS_SELECTOR, ".fired-mark")] == [
            fired.run_key]
        assert len(chart.find_elements(By.CSS_SELECTOR, "polygon.band")) == 1
        assert len(chart.find_elements(By.CSS_SELECTOR, "polyline.reference")) == 2
        assert driver.find_element(By.CSS_SELECTOR, f"circle.live[data-run-key='{fired.run_key}']"
                                   ).get_attribute("class").split() == ["point", "live", "fired"]

        # A model with no monitor run yet says so; the JSON lists the records newest first.
        driver.switch_to.default_content()
        driver.get(f"{server.url}/refit/health/?model=churn")
        assert "churn has no monitor run yet" in driver.find_element(By.ID, "empty-churn").text
        listed = server.api.root.get("/refit/api/health", params={"model": MODEL, "limit": 2})
        assert [r["run_key"] for r in listed.json()] == [records[2].run_key, fired.run_key]
