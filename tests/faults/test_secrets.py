"""The warehouse password never leaves the process: not in an error, a log line, a notification,
a manifest, a report or the MLflow store, whether the run fails or passes.

A canary password goes into the warehouse URL; the real stages run (``python -m ml_tasks run`` in
its own process, and the extract stage in this one with the notification the Airflow failure
callback sends on all three channels, to real local receivers), then every output is searched
for it: the process's output and logs, the exception with its traceback and causes, the
notifications log, the webhook's bodies, the e-mails, and every file under REFIT_HOME.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ml_tasks import pipeline
from ml_tasks.data.extract import ExtractError
from ml_tasks.reporting.notify import load_notify_settings, notify, task_failed
from tests.conftest import DEMO_SPEC, TINY_ROWS
from tests.reporting.test_notify import smtp_server, webhook  # noqa: F401  (fixtures, by name below)

CANARY = "Kx9Canary7q"
#: A password with an unescaped '@': drivers read "Kx9Canary7q" as the password and this as the host.
TAIL = "Tail5zq"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def leaked_in(texts: dict[str, str | bytes], *secrets: str) -> list[str]:
    """The names of the outputs in which any of ``secrets`` appears."""
    found = []
    for name, text in texts.items():
        data = text if isinstance(text, bytes) else text.encode()
        if any(secret.encode() in data for secret in secrets):
            found.append(name)
    return found


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def cli_run(*args: str, warehouse_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REFIT_WAREHOUSE_URL": warehouse_url}
    return subprocess.run([sys.executable, "-m", "ml_tasks", "run", "--model", "credit_default", *args],
                          capture_output=True, text=True, env=env, timeout=600)


#: A warehouse URL that fails, and what the error must say instead of the password.
FAILING_URLS = {
    "port is not a number": ("postgresql+psycopg://postgres:{CANARY}@127.0.0.1:54x32/refit",
                             r"warehouse URL 'postgresql\+psycopg://postgres:\*\*\*@127.0.0.1:54x32/refit' is not a "
                             r"valid SQLAlchemy URL: invalid literal for int\(\)"),
    "unescaped @ in the password": ("postgresql+psycopg://postgres:{CANARY}@{TAIL}@127.0.0.1:5432/postgres",
                                    r"postgres:\*\*\*@127.0.0.1:5432/postgres': the password holds an unescaped '@'"),
    "server unreachable": ("postgresql+psycopg://postgres:{CANARY}@127.0.0.1:{port}/refit",
                           r"query sql/credit_default.sql .* failed: OperationalError: .*Connection refused"),
}


@pytest.mark.parametrize("case", list(FAILING_URLS))
def test_a_failing_extraction_shows_the_warehouse_url_only_with_its_password_hidden(
        case, refit_home, monkeypatch, caplog, request):
    url, expected = FAILING_URLS[case]
    url = url.format(CANARY=CANARY, TAIL=TAIL, port=free_port())
    post_url, posted = request.getfixturevalue("webhook")
    smtp_port, mailed = request.getfixturevalue("smtp_server")
    for name, value in {"REFIT_NOTIFY_CHANNELS": "log,webhook,email", "REFIT_NOTIFY_WEBHOOK_URL": post_url,
                        "REFIT_NOTIFY_EMAIL_TO": "oncall@example.com", "REFIT_SMTP_HOST": "127.0.0.1",
                        "REFIT_SMTP_PORT": str(smtp_port)}.items():
        monkeypatch.setenv(name, value)

    # The whole run in its own process, as the CLI and a trainer container run it.
    done = cli_run("--as-of", "2024-03-01", "--candidates", "logistic_baseline", warehouse_url=url)
    assert done.returncode != 0 and "ExtractError" in done.stderr, done.stderr[-3000:]

    # The extract stage in this process, and the notification the Airflow failure callback sends.
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", url)
    plan = pipeline.plan_run(str(DEMO_SPEC), "2024-03-01", candidates=["logistic_baseline"])
    with pytest.raises(ExtractError, match=expected) as failure:
        pipeline.extract(plan)
    error = failure.value
    notify(task_failed("credit_default", "extract", "manual__1", f"{type(error).__name__}: {error}"),
           load_notify_settings(refit_home.home))

    outputs = {"CLI stdout": done.stdout, "CLI stderr": done.stderr, "task log": caplog.text,
               "exception and its causes": "".join(traceback.format_exception(error)),
               "webhook": json.dumps(posted), "e-mail": b"".join(mailed), **files_under(refit_home.home)}
    assert leaked_in(outputs, CANARY, TAIL) == []
    assert len(posted) == 1 and message_from_bytes(mailed[0])["Subject"].startswith("[refit] credit_default")


def test_a_passing_run_on_postgres_with_a_password_in_its_url_leaves_it_nowhere(refit_home, postgres_url):
    from ml_tasks.data.demo_warehouse import build_demo_warehouse

    build_demo_warehouse(postgres_url, rows=TINY_ROWS, seed=11)
    # The local server trusts local connections: the password is accepted and ignored.
    url = make_url(postgres_url).set(password=CANARY).render_as_string(hide_password=False)

    done = cli_run("--as-of", "2024-03-01", "--candidates", "logistic_baseline", "--sample-size", "2000",
                   warehouse_url=url)

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    snapshot = json.loads(Path(report["html_uri"]).with_name("snapshot.json").read_text())
    assert snapshot["engine"] == "adbc" and snapshot["rows"] > 0
    outputs = {"CLI stdout": done.stdout, "CLI stderr": done.stderr, **files_under(refit_home.home)}
    assert any(name.endswith("report.html") for name in outputs)
    assert leaked_in(outputs, CANARY) == []
