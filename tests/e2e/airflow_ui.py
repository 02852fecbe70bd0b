"""The real Airflow API server (which serves the UI) and a headless Chromium, for UI tests.

The server runs as a subprocess with the embedded-mode environment of a Refit home, the
plugins folder, and authentication on (the simple auth manager with one admin whose password
is set here). Chromium and ChromeDriver are Debian's packages, installed by
``make system-deps``; without them the UI tests fail with that instruction instead of skipping,
so an untested view never passes silently.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ml_tasks.core.settings import Settings
from refit_airflow.demo import airflow_binary, airflow_env
from tests.e2e.real_services import AirflowApi, FreePorts, Processes, wait_for

USERNAME = "oncall"
PASSWORD = "refit-ui-test-password"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class ApiServer:
    url: str
    #: The REST API, logged in as the UI's user (``api.http`` under /api/v2, ``api.root`` for plugins).
    api: AirflowApi


@contextmanager
def api_server(settings: Settings, other_users: dict[str, str] | None = None) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free port over the home's metadata database, until exit.

    ``other_users`` (name: password) are admins too, for tests of who may do what."""
    airflow_home = settings.home / "airflow"
    passwords = airflow_home / "ui-test-passwords.json"
    users = {USERNAME: PASSWORD, **(other_users or {})}
    passwords.write_text(json.dumps(users))
    port = FreePorts()()
    url = f"http://127.0.0.1:{port}"
    env = {**airflow_env(settings),
           "AIRFLOW__CORE__AUTH_MANAGER":
               "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:admin" for user in users),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__API__BASE_URL": url,
           "AIRFLOW__API__SECRET_KEY": os.urandom(16).hex(),
           "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex()}
    processes = Processes(settings.home / "logs" / f"ui-{port}")
    try:
        processes.start("airflow-api-server", [airflow_binary(), "api-server", "--host", "127.0.0.1",
                                               "--port", str(port)], env)
        wait_for("Airflow api-server", lambda: httpx.get(f"{url}/api/v2/monitor/health", timeout=5).is_success,
                 START_TIMEOUT_S, processes)
        yield ApiServer(url=url, api=AirflowApi(url, USERNAME, PASSWORD))
    finally:
        processes.stop_all()


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium driven by Debian's ChromeDriver (never a downloaded one)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() and shutil.which("chromedriver")):
        pytest.fail("Chromium and ChromeDriver are missing: `make system-deps` installs Debian's chromium and "
                    "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
