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
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ml_tasks.demo import airflow_binary, airflow_env
from ml_tasks.settings import Settings

USERNAME = "oncall"
PASSWORD = "refit-ui-test-password"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class ApiServer:
    url: str
    log_path: Path

    def token(self) -> str:
        """A JWT for the REST API, from the same login the UI uses."""
        request = urllib.request.Request(f"{self.url}/auth/token", method="POST",
                                         data=json.dumps({"username": USERNAME, "password": PASSWORD}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["access_token"]

    def get_json(self, path: str) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token()}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow api-server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise RuntimeError(f"airflow api-server not healthy after {START_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")


@contextmanager
def api_server(settings: Settings) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free port over the home's metadata database, until exit."""
    airflow_home = settings.home / "airflow"
    passwords = airflow_home / "ui-test-passwords.json"
    passwords.write_text(json.dumps({USERNAME: PASSWORD}))
    port = free_port()
    env = {**airflow_env(settings),
           "AIRFLOW__CORE__AUTH_MANAGER":
               "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "AIRFLOW__API__SECRET_KEY": os.urandom(16).hex(),
           "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex()}
    log_path = settings.home / "logs" / f"api-server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen([airflow_binary(), "api-server", "--host", "127.0.0.1", "--port", str(port)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, log_path)
        yield ApiServer(url=url, log_path=log_path)
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


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
