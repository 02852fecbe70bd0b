"""What the browser test checks in the Airflow UI, reusable against any Refit home with runs."""

from __future__ import annotations

from urllib.parse import quote

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.airflow_ui import PASSWORD, USERNAME, ApiServer

WAIT_S = 60


def log_in(driver, server: ApiServer) -> None:
    """Sign in through the UI's own login form, as a person would."""
    driver.get(f"{server.url}/")
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(USERNAME)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.XPATH, "//button[@type='submit' or normalize-space()='Sign in']").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)


def open_plugin_frame(driver, server: ApiServer, ui_path: str) -> None:
    """Open a UI route that frames a plugin view and switch into the frame."""
    driver.get(f"{server.url}{ui_path}")
    WebDriverWait(driver, WAIT_S).until(ec.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe")))


def listed_results(driver) -> list[dict]:
    """The rows of the gate results table inside the frame, as the on-call person reads them."""
    WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, "tr.result")))
    rows = []
    for row in driver.find_elements(By.CSS_SELECTOR, "tr.result"):
        cells = row.find_elements(By.TAG_NAME, "td")
        rows.append({"run_key": row.get_attribute("data-run-key"), "verdict": cells[0].text.split()[0],
                     "as_of": cells[2].text, "champion": cells[4].text, "dag_run": cells[6].text})
    return rows


def extra_links(server: ApiServer, dag_id: str, run_id: str, task_id: str) -> dict:
    response = server.api.http.get(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/links")
    response.raise_for_status()
    return response.json()["extra_links"]


def report_banner(driver) -> str:
    """The verdict banner of a gating report open in the current frame."""
    return WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.ID, "verdict"))).text
