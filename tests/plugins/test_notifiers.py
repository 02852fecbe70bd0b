"""Notifications through Airflow's notifiers, each through an Airflow connection.

Each connection is defined the Airflow way (an ``AIRFLOW_CONN_<ID>`` variable holding its URI or
JSON, as a deployment would put it in a secrets backend) and points at a real server on
localhost: an SMTP server that asks for a login, and HTTP endpoints standing in for Slack's
incoming webhook and for Apprise's ``json://`` target. Refit's own settings only name the
connections: no channel needs a secret among them.
"""

from __future__ import annotations

import json
import os
import tempfile
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.reporting import notify as notify_module
from ml_tasks.reporting.notify import chat_text, gate_failed, load_notify_settings, notify, task_failed
from tests.reporting.test_notify import REPORT, http_receiver, smtp_receiver

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))

from refit_airflow import notifiers

SMTP_PASSWORD = "Smtp-Conn-Secret-81"
SLACK_TOKEN = "T0REFIT/B0ONCALL/SlackToken9x"
APPRISE_TOKEN = "AppriseToken7q"
FAILED_GATE = gate_failed("credit", REPORT | {"failing": ["ece 0.08 above 0.05 <for rows & co>"]}, "scheduled__1",
                          "s3://b/runs/credit/report.html")


@pytest.fixture(autouse=True)
def airflow_notifiers():
    """The senders every Refit DAG installs as it is built."""
    notifiers.install()


def settings_naming(tmp_path, channels: str, **conn_ids: str):
    """Notification settings that name the channels and their connections, and nothing secret."""
    env = {"REFIT_NOTIFY_CHANNELS": channels, "REFIT_NOTIFY_EMAIL_TO": "oncall@example.com, ml@example.com",
           **{f"REFIT_NOTIFY_{channel.upper()}_CONN_ID": conn_id for channel, conn_id in conn_ids.items()}}
    settings = load_notify_settings(tmp_path, env=env)
    assert settings.secrets == () and settings.smtp_password is None
    return settings


def test_smtp_sends_through_the_smtp_notifier_with_the_connections_host_login_and_sender(tmp_path, monkeypatch):
    with smtp_receiver() as (port, mailed, logins):
        monkeypatch.setenv("AIRFLOW_CONN_ONCALL_SMTP", f"smtp://refit:{SMTP_PASSWORD}@127.0.0.1:{port}"
                           "?disable_ssl=true&disable_tls=true&from_email=refit%40example.com")
        settings = settings_naming(tmp_path, "smtp", smtp="oncall_smtp")

        assert notify(FAILED_GATE, settings) == ["smtp"]

    assert logins == [("refit", SMTP_PASSWORD)]  # the login came from the connection
    message = message_from_bytes(mailed[0], policy=default_policy)
    assert message["Subject"] == f"[refit] {FAILED_GATE.summary}"
    assert message["From"] == "refit@example.com" and message["To"] == "oncall@example.com, ml@example.com"
    html = message.get_body(("html",)).get_content()
    assert "<li>ece 0.08 above 0.05 &lt;for rows &amp; co&gt;</li>" in html and "s3://b/runs/credit/report.html" in html


def test_slack_sends_through_the_webhook_notifier_to_the_connections_webhook(tmp_path, monkeypatch):
    with http_receiver() as (base_url, posted, paths):
        monkeypatch.setenv("AIRFLOW_CONN_ONCALL_SLACK", json.dumps(
            {"conn_type": "slackwebhook", "host": f"{base_url}/services", "password": SLACK_TOKEN}))
        settings = settings_naming(tmp_path, "slack", slack="oncall_slack")

        assert notify(FAILED_GATE, settings) == ["slack"]

    assert paths == [f"/services/{SLACK_TOKEN}"]  # the webhook's token came from the connection
    assert posted[0]["text"] == chat_text(FAILED_GATE)
    assert posted[0]["text"].startswith("*credit: gate FAIL for challenger lightgbm (1 failing check)")
    assert "- ece 0.08 above 0.05 &lt;for rows &amp; co&gt;" in posted[0]["text"]


def test_apprise_sends_through_the_apprise_notifier_to_the_services_of_the_connection(tmp_path, monkeypatch):
    with http_receiver() as (base_url, posted, paths):
        target = base_url.replace("http://", "json://") + f"/{APPRISE_TOKEN}"
        monkeypatch.setenv("AIRFLOW_CONN_ONCALL_APPRISE", json.dumps(
            {"conn_type": "apprise", "extra": {"config": [{"path": target, "tag": "oncall"}]}}))
        settings = settings_naming(tmp_path, "apprise,log", apprise="oncall_apprise")
        failure = task_failed("credit", "extract", "manual__1", "OperationalError: connection refused")

        assert notify(failure, settings) == ["apprise", "log"]

    assert paths == [f"/{APPRISE_TOKEN}"]
    assert posted[0]["title"] == failure.summary and posted[0]["type"] == "failure"
    assert posted[0]["message"].startswith("- OperationalError: connection refused\n\nmodel: credit")


def test_the_channels_default_to_the_providers_default_connections(tmp_path):
    settings = load_notify_settings(tmp_path, env={})
    assert dict(settings.conn_ids) == {"smtp": "smtp_default", "slack": "slack_default", "apprise": "apprise_default"}


def test_a_notifier_that_cannot_deliver_leaves_the_notification_in_the_log_without_its_secrets(
        tmp_path, monkeypatch, caplog):
    closed = "127.0.0.1:9"  # the discard port: nothing listens
    monkeypatch.setenv("AIRFLOW_CONN_DOWN_SMTP", f"smtp://refit:{SMTP_PASSWORD}@{closed}?disable_ssl=true")
    monkeypatch.setenv("AIRFLOW_CONN_DOWN_SLACK", json.dumps(
        {"conn_type": "slackwebhook", "password": f"http://{closed}/services/{SLACK_TOKEN}"}))
    monkeypatch.setenv("AIRFLOW_CONN_DOWN_APPRISE", json.dumps(
        {"conn_type": "apprise", "extra": {"config": [{"path": f"json://{closed}/{APPRISE_TOKEN}"},
                                                      {"path": f"mispelt://{APPRISE_TOKEN}"}]}}))
    settings = settings_naming(tmp_path, "smtp,slack,apprise", smtp="down_smtp", slack="down_slack",
                               apprise="down_apprise")

    assert notify(FAILED_GATE, settings) == []

    record = json.loads((tmp_path / "notifications.log").read_text())
    assert record["summary"] == FAILED_GATE.summary
    assert [entry.split(":")[0] for entry in record["undelivered"]] == ["smtp", "slack", "apprise"]
    # Apprise's own words, though its provider drops them.
    assert "Unparseable URL" in record["undelivered"][2] and "Connection error" in record["undelivered"][2]
    for secret in (SMTP_PASSWORD, SLACK_TOKEN, APPRISE_TOKEN):
        assert secret not in json.dumps(record) and secret not in caplog.text


def test_an_undefined_connection_is_named_in_the_log(tmp_path):
    settings = settings_naming(tmp_path, "slack", slack="nobody_defined_this")
    assert notify(FAILED_GATE, settings) == []
    assert "nobody_defined_this" in json.loads((tmp_path / "notifications.log").read_text())["undelivered"][0]


def test_outside_airflow_the_connection_channels_fall_back_to_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(notify_module, "_CONNECTION_SENDERS", {})  # as in the CLI: no plugin installed them
    settings = settings_naming(tmp_path, "slack", slack="oncall_slack")
    assert notify(FAILED_GATE, settings) == []
    undelivered = json.loads((tmp_path / "notifications.log").read_text())["undelivered"]
    assert undelivered == ["slack: the slack channel sends through an Airflow notifier (connection 'oncall_slack'), "
                           "and there is none outside an Airflow task"]


def test_a_notifiers_error_that_quotes_the_connection_has_its_secrets_masked(monkeypatch):
    url = f"https://hooks.example.com/services/{SLACK_TOKEN}"
    monkeypatch.setenv("AIRFLOW_CONN_QUOTED_SLACK", json.dumps({"conn_type": "slackwebhook", "password": url}))
    with pytest.raises(notifiers.NotifierError) as raised, notifiers._masking("quoted_slack"):
        raise ValueError(f"POST {url} answered 404")
    assert str(raised.value) == "ValueError: POST *** answered 404"
