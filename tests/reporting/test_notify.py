"""Notifications on a failed gate or task: a log file by default, a webhook and e-mail by settings.

The webhook and SMTP receivers are real servers on localhost, so what is tested is what goes
over the wire.
"""

from __future__ import annotations

import base64
import contextlib
import email.policy
import json
import threading
import warnings
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from ml_tasks.reporting.notify import (
    NotifySettingsError,
    champion_degraded,
    email_message,
    gate_failed,
    load_notify_settings,
    notify,
    report_notifications,
    task_failed,
)

REPORT = {"failing": ["champion: roc_auc worse by 0.031 (p=0.002)", "ece 0.08 above 0.05"],
          "gate": {"challenger": "lightgbm"}}


@contextlib.contextmanager
def http_receiver() -> Iterator[tuple[str, list[dict], list[str]]]:
    """A local HTTP server: its base URL, every JSON body POSTed to it and the path of each; it
    answers ``200 ok`` (what Slack's incoming webhooks answer, and its client expects)."""
    received: list[dict] = []
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received, paths
    finally:
        server.shutdown()


@pytest.fixture
def webhook():
    """A local HTTP endpoint that records every JSON body POSTed to it."""
    with http_receiver() as (base_url, received, _):
        yield f"{base_url}/hook", received


@contextlib.contextmanager
def smtp_receiver() -> Iterator[tuple[int, list[bytes], list[tuple[str, str]]]]:
    """A local SMTP server (the standard library's, still in 3.11): its port, the messages it
    received, and the logins (user, password) clients gave with ``AUTH PLAIN``, which it offers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore
        import smtpd

    received: list[bytes] = []
    logins: list[tuple[str, str]] = []

    class Channel(smtpd.SMTPChannel):
        def push(self, msg):
            if msg == "250 HELP":  # the last line of the EHLO answer: offer AUTH before it
                super().push("250-AUTH PLAIN")
            super().push(msg)

        def smtp_AUTH(self, arg):  # noqa: N802  (smtpd dispatches on the command's name)
            _, user, password = base64.b64decode(arg.partition(" ")[2]).decode().split("\0")
            logins.append((user, password))
            self.push("235 2.7.0 Authentication successful")

    class Recorder(smtpd.SMTPServer):
        channel_class = Channel

        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            received.append(data)

    server = Recorder(("127.0.0.1", 0), None, decode_data=False)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [asyncore.loop(timeout=0.05, count=1) for _ in iter(stop.is_set, True)],
                              daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1], received, logins
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.fixture
def smtp_server():
    """A local SMTP server that keeps what it receives."""
    with smtp_receiver() as (port, received, _):
        yield port, received


def test_a_failed_gate_is_written_to_the_log_file_by_default(tmp_path):
    settings = load_notify_settings(tmp_path, env={})
    delivered = notify(gate_failed("credit", REPORT, "scheduled__2024-09-01", "runs/credit/x/report.html"), settings)

    assert delivered == ["log"]
    record = json.loads((tmp_path / "notifications.log").read_text().splitlines()[0])
    assert record["kind"] == "gate_failed" and record["reasons"] == REPORT["failing"]
    assert "gate FAIL for challenger lightgbm (2 failing checks); champion unchanged" in record["summary"]
    assert record["report_uri"].endswith("report.html")


PENDING = {"state": "pending", "promotion": "approve_on_fail", "timeout_hours": 24.0, "approvers": ["alice", "bob"]}


def test_a_failed_gate_that_waits_for_an_approval_says_so_and_who_may_give_it():
    [failed] = report_notifications("credit", {**REPORT, "verdict": "FAIL", "approval": PENDING}, "run_1", "r.html")

    assert failed.kind == "gate_failed" and failed.reasons == REPORT["failing"]
    assert failed.summary == ("credit: gate FAIL for challenger lightgbm (2 failing checks); champion unchanged "
                              "unless approved: the run's approve task waits for an approval from alice, bob "
                              "(Required actions); no answer within 24 h rejects it")


def test_a_pass_held_for_a_person_is_told_and_a_pass_that_promoted_itself_is_not():
    held = {**REPORT, "verdict": "PASS", "failing": [],
            "approval": {**PENDING, "promotion": "always_approve", "approvers": [], "timeout_hours": None}}

    [waiting] = report_notifications("credit", held, "run_1", "r.html")

    assert (waiting.kind, waiting.report_uri) == ("approval_waiting", "r.html")
    assert waiting.summary == ("credit: gate PASS for challenger lightgbm; the run's approve task waits for an "
                               "approval (Required actions)")
    assert report_notifications("credit", {**held, "approval": None}, "run_1", "r.html") == []


def test_the_webhook_receives_a_chat_ready_text_and_every_field(tmp_path, webhook):
    url, received = webhook
    settings = load_notify_settings(tmp_path, env={"REFIT_NOTIFY_CHANNELS": "webhook", "REFIT_NOTIFY_WEBHOOK_URL": url})

    assert notify(task_failed("credit", "extract", "manual__1", "ValidationError: column 'income' missing"),
                  settings) == ["webhook"]
    assert received[0]["text"] == "credit: task extract failed: ValidationError: column 'income' missing"
    assert received[0]["task_id"] == "extract" and received[0]["dag_run_id"] == "manual__1"
    assert not (tmp_path / "notifications.log").exists()


def test_email_goes_through_smtp_with_the_summary_as_subject(tmp_path, smtp_server):
    port, received = smtp_server
    settings = load_notify_settings(tmp_path, env={
        "REFIT_NOTIFY_CHANNELS": "email,log", "REFIT_NOTIFY_EMAIL_TO": "oncall@example.com, ml@example.com",
        "REFIT_SMTP_HOST": "127.0.0.1", "REFIT_SMTP_PORT": str(port)})

    assert notify(gate_failed("credit", REPORT, "run-1", "s3://b/report.html"), settings) == ["email", "log"]
    message = message_from_bytes(received[0])
    assert message["Subject"].startswith("[refit] credit: gate FAIL")
    assert message["To"] == "oncall@example.com, ml@example.com"
    assert "ece 0.08 above 0.05" in message.get_payload() and "s3://b/report.html" in message.get_payload()


DEGRADED = {"champion_health": {
    "champion": "champion v1", "degraded": True, "failing": ["roc_auc 0.5600 < 0.7"], "policy": "alert",
    "checks": [{"passed": False, "reason": "champion v1's roc_auc 0.5600 misses the spec's min >= 0.7"}],
    "note": "champion v1 fails its own bars on these test rows", "outcome": "challenger lightgbm not promoted"}}


def test_a_champion_failing_its_own_bars_is_told_on_every_channel(tmp_path, webhook, smtp_server):
    url, posted = webhook
    port, mailed = smtp_server
    settings = load_notify_settings(tmp_path, env={
        "REFIT_NOTIFY_CHANNELS": "log,webhook,email", "REFIT_NOTIFY_WEBHOOK_URL": url,
        "REFIT_NOTIFY_EMAIL_TO": "oncall@example.com", "REFIT_SMTP_HOST": "127.0.0.1", "REFIT_SMTP_PORT": str(port)})
    notification = champion_degraded("credit", DEGRADED, "scheduled__1", "runs/credit/x/report.html")

    assert notify(notification, settings) == ["log", "webhook", "email"]

    summary = "credit: champion v1 fails its own bars: roc_auc 0.5600 < 0.7; policy alert: challenger lightgbm not " \
              "promoted"
    assert json.loads((tmp_path / "notifications.log").read_text())["kind"] == "champion_degraded"
    assert posted[0]["text"] == summary and posted[0]["kind"] == "champion_degraded"
    assert message_from_bytes(mailed[0], policy=email.policy.default)["Subject"] == f"[refit] {summary}"


def test_an_unreachable_webhook_never_loses_the_notification(tmp_path):
    settings = load_notify_settings(tmp_path, env={"REFIT_NOTIFY_CHANNELS": "webhook",
                                                   "REFIT_NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    assert notify(task_failed("credit", "train", "run-2", "killed"), settings) == []
    record = json.loads((tmp_path / "notifications.log").read_text())
    assert record["undelivered"][0].startswith("webhook:") and record["task_id"] == "train"


@pytest.mark.parametrize(("env", "named"), [
    ({"REFIT_NOTIFY_CHANNELS": "log,pager"}, "REFIT_NOTIFY_CHANNELS"),
    ({"REFIT_NOTIFY_CHANNELS": "webhook"}, "REFIT_NOTIFY_WEBHOOK_URL"),
    ({"REFIT_NOTIFY_CHANNELS": "email"}, "REFIT_NOTIFY_EMAIL_TO"),
    ({"REFIT_NOTIFY_CHANNELS": "smtp"}, "REFIT_NOTIFY_EMAIL_TO"),
    ({"REFIT_NOTIFY_SLACK_CONN_ID": "oncall slack"}, "REFIT_NOTIFY_SLACK_CONN_ID"),
    ({"REFIT_SMTP_PORT": "smtp"}, "REFIT_SMTP_PORT"),
])
def test_bad_settings_name_the_variable(tmp_path, env, named):
    with pytest.raises(NotifySettingsError, match=named):
        load_notify_settings(tmp_path, env=env)


def test_the_email_body_lists_reasons_and_where_to_look(tmp_path):
    settings = load_notify_settings(Path(tmp_path), env={"REFIT_NOTIFY_EMAIL_TO": "a@b.c"})
    failure = task_failed("credit", "train", "run-3", "CUDA out of memory\ntraceback…")
    body = email_message(settings, failure).get_content()
    assert "- CUDA out of memory" in body and "traceback" not in body and "task: train" in body


LEAKED = ("extract failed: could not connect to postgresql+psycopg://etl:Kx9Canary7q@db:5432/warehouse "
          "(conninfo host=db password=Kx9Canary7q) with SMTP login Smtp-Secret-42")


def test_every_channel_gets_the_notification_with_passwords_hidden_even_when_a_stage_leaked_one(
        tmp_path, webhook, smtp_server, caplog):
    url, posted = webhook
    port, mailed = smtp_server
    settings = load_notify_settings(tmp_path, env={
        "REFIT_NOTIFY_CHANNELS": "log,webhook,email", "REFIT_NOTIFY_WEBHOOK_URL": url,
        "REFIT_NOTIFY_EMAIL_TO": "oncall@example.com", "REFIT_SMTP_HOST": "127.0.0.1", "REFIT_SMTP_PORT": str(port),
        "REFIT_SMTP_PASSWORD": "Smtp-Secret-42"})

    assert notify(task_failed("credit", "extract", "manual__1", LEAKED), settings) == ["log", "webhook", "email"]

    outputs = {"log": (tmp_path / "notifications.log").read_text(), "webhook": json.dumps(posted),
               "email": b"".join(mailed).decode(), "task log": caplog.text, "settings": repr(settings)}
    for channel, text in outputs.items():
        assert "Kx9Canary7q" not in text and "Smtp-Secret-42" not in text, channel
    record = json.loads(outputs["log"])
    assert "postgresql+psycopg://etl:***@db:5432/warehouse" in record["summary"]
    assert "password=***" in record["reasons"][0]



def test_a_url_cut_by_the_first_line_limit_still_has_its_password_hidden(tmp_path):
    error = "x" * 470 + " postgresql://etl:Kx9Canary7q-and-more@db/w"  # the line limit falls inside the password
    failure = task_failed("credit", "extract", "run-4", error)
    assert "Kx9Can" not in failure.summary + "".join(failure.reasons)
