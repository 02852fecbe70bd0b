"""Tell the person on call when a gate fails, when the champion fails its own bars (on any
verdict), when a promotion waits for their approval, or when a task of a retrain run fails.

The messages are Refit's (the builders below, all pure); the channels are chosen by settings,
so embedded mode needs nothing and a deployment picks its own:

``REFIT_NOTIFY_CHANNELS``
    comma-separated, from ``log`` (default), ``smtp``, ``slack``, ``apprise`` (Airflow's
    notifiers, each through an Airflow connection), ``webhook``, ``email`` (plain Python, for runs
    outside Airflow; their settings live in the environment).
``REFIT_NOTIFY_LOG``
    the log file (JSON lines); default ``$REFIT_HOME/notifications.log``.
``REFIT_NOTIFY_SMTP_CONN_ID`` (default ``smtp_default``), ``REFIT_NOTIFY_SLACK_CONN_ID``
(``slack_default``), ``REFIT_NOTIFY_APPRISE_CONN_ID`` (``apprise_default``)
    the Airflow connection each of ``smtp`` (the SMTP provider's ``SmtpNotifier``, to
    ``REFIT_NOTIFY_EMAIL_TO``), ``slack`` (the Slack provider's ``SlackWebhookNotifier``, an
    incoming-webhook connection) and ``apprise`` (the Apprise provider's ``AppriseNotifier``)
    sends through. Credentials stay in Airflow's connections or its secrets backend; these
    settings only name them. The senders are Airflow code: Refit's plugin registers them with
    :func:`use_connection_sender` (``refit_airflow.notifiers``), so outside an Airflow task these
    channels cannot deliver and the notification goes to the log file.
``REFIT_NOTIFY_WEBHOOK_URL``
    receives a JSON POST whose ``text`` field is the one-line summary (the shape Slack and
    Teams incoming webhooks accept) plus every field of the notification.
``REFIT_NOTIFY_EMAIL_TO`` (comma-separated), ``REFIT_NOTIFY_EMAIL_FROM`` (for ``smtp``, default: the
connection's ``from_email``), ``REFIT_SMTP_HOST``, ``REFIT_SMTP_PORT``, ``REFIT_SMTP_USER``,
``REFIT_SMTP_PASSWORD``, ``REFIT_SMTP_STARTTLS``
    plain SMTP (the ``email`` channel).

A channel that cannot deliver never fails the run it reports on (the run's own state already
says what happened); the failure is logged and written to the log file instead, so a
notification is never silently lost.

No secret leaves in a notification: before any channel sees it, every text of a notification
(and every delivery error) goes through :func:`ml_tasks.core.redact.redact`, which hides URL
passwords and ``password=`` values, and masks the secrets this process was configured with
(the passwords in ``REFIT_WAREHOUSE_URL``, ``MLFLOW_TRACKING_URI``, ``REFIT_LOCK_URL`` and
Airflow's database URL, ``REFIT_SMTP_PASSWORD``, ``MLFLOW_TRACKING_PASSWORD``,
``AWS_SECRET_ACCESS_KEY``) wherever they appear, if at least :data:`MIN_CONFIGURED_SECRET` long.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import smtplib
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

from ml_tasks.core.redact import redact, url_secrets

log = logging.getLogger(__name__)
CHANNELS = ("log", "smtp", "slack", "apprise", "webhook", "email")
#: The channels that send through an Airflow notifier: the setting that names the connection, and
#: its default (the provider's own default connection id).
CONNECTION_CHANNELS = {"smtp": ("REFIT_NOTIFY_SMTP_CONN_ID", "smtp_default"),
                       "slack": ("REFIT_NOTIFY_SLACK_CONN_ID", "slack_default"),
                       "apprise": ("REFIT_NOTIFY_APPRISE_CONN_ID", "apprise_default")}
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
WEBHOOK_TIMEOUT_S = 10
#: The sender of the e-mails of the ``email`` channel when ``REFIT_NOTIFY_EMAIL_FROM`` is not set.
DEFAULT_EMAIL_FROM = "refit@localhost"
#: How urgent each kind is, in the words chat and push services use (Apprise's notify types).
SEVERITY = {"gate_failed": "failure", "task_failed": "failure", "champion_degraded": "warning",
            "approval_waiting": "warning", "retrain_triggered": "info"}
#: Settings that are URLs whose password must never show, and settings that are secrets whole.
SECRET_URL_VARIABLES = ("REFIT_WAREHOUSE_URL", "MLFLOW_TRACKING_URI", "REFIT_LOCK_URL",
                        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
SECRET_VARIABLES = ("REFIT_SMTP_PASSWORD", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY")
#: A configured secret shorter than this is not masked as a literal (a test's ``"test"`` key, a
#: demo's ``"refit"`` password would garble every message); URL passwords are hidden whatever their length.
MIN_CONFIGURED_SECRET = 8


class NotifySettingsError(ValueError):
    """A notification setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Notification:
    """What happened, to whom it matters, and where to look.

    Attributes
    ----------
    kind : ``gate_failed`` (a challenger was rejected), ``champion_degraded`` (the champion fails
        its own bars on the test rows, whatever the verdict), ``approval_waiting`` (a verdict other
        than FAIL that the spec's ``promotion`` holds for a person; a held FAIL is told as
        ``gate_failed``, whose summary says it waits), ``retrain_triggered`` (a monitor
        run's trigger fired and queued a retrain) or ``task_failed`` (a stage errored).
    model : spec name.
    summary : one line for a chat message or an e-mail subject.
    dag_run_id : the Airflow run (None from the CLI).
    task_id : the failing task, for ``task_failed``.
    reasons : failing checks or the error, most important first.
    report_uri : the gating report, when there is one.
    """

    kind: Literal["gate_failed", "champion_degraded", "approval_waiting", "retrain_triggered", "task_failed"]
    model: str
    summary: str
    dag_run_id: str | None = None
    task_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    report_uri: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return asdict(self)

    def redacted(self, secrets: tuple[str, ...] = ()) -> Notification:
        """This notification with every text passed through :func:`~ml_tasks.core.redact.redact`."""
        def hide(text: str | None) -> str | None:
            return None if text is None else redact(text, secrets)

        return replace(self, summary=redact(self.summary, secrets), dag_run_id=hide(self.dag_run_id),
                       task_id=hide(self.task_id), reasons=[redact(r, secrets) for r in self.reasons],
                       report_uri=hide(self.report_uri))


@dataclass(frozen=True)
class NotifySettings:
    channels: tuple[str, ...]
    log_path: Path
    webhook_url: str | None = None
    email_to: tuple[str, ...] = ()
    #: None: the ``smtp`` channel takes the connection's ``from_email``, ``email`` the default.
    email_from: str | None = None
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
    #: The Airflow connection id of each of :data:`CONNECTION_CHANNELS`.
    conn_ids: Mapping[str, str] = field(default_factory=lambda: {c: d for c, (_, d) in CONNECTION_CHANNELS.items()})
    #: Literal secrets masked in every notification (see the module docstring).
    secrets: tuple[str, ...] = field(default=(), repr=False)


def load_notify_settings(home: Path, env: Mapping[str, str] | None = None) -> NotifySettings:
    """Read and check the notification settings; errors name the variable at fault."""
    env = os.environ if env is None else env
    channels = tuple(c.strip() for c in env.get("REFIT_NOTIFY_CHANNELS", "log").split(",") if c.strip())
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise NotifySettingsError(f"REFIT_NOTIFY_CHANNELS: unknown channel(s) {unknown}; expected some of "
                                  f"{list(CHANNELS)}")
    webhook_url = env.get("REFIT_NOTIFY_WEBHOOK_URL") or None
    if "webhook" in channels and not (webhook_url or "").startswith(("http://", "https://")):
        raise NotifySettingsError("REFIT_NOTIFY_WEBHOOK_URL: the webhook channel needs an http(s) URL")
    email_to = tuple(a.strip() for a in env.get("REFIT_NOTIFY_EMAIL_TO", "").split(",") if a.strip())
    mailing = [c for c in channels if c in ("email", "smtp")]
    if mailing and not email_to:
        raise NotifySettingsError(f"REFIT_NOTIFY_EMAIL_TO: the {mailing[0]} channel needs at least one recipient")
    conn_ids = {channel: env.get(variable) or default for channel, (variable, default) in CONNECTION_CHANNELS.items()}
    for channel, conn_id in conn_ids.items():
        if not _CONN_ID.match(conn_id):
            raise NotifySettingsError(f"{CONNECTION_CHANNELS[channel][0]}: {conn_id!r} is not an Airflow connection "
                                      "id; expected letters, digits, '_', '-' or '.'")
    port = env.get("REFIT_SMTP_PORT", "25")
    if not port.isdigit():
        raise NotifySettingsError(f"REFIT_SMTP_PORT: expected a port number, got {port!r}")
    return NotifySettings(
        channels=channels,
        log_path=Path(env.get("REFIT_NOTIFY_LOG") or home / "notifications.log"),
        webhook_url=webhook_url,
        email_to=email_to,
        email_from=env.get("REFIT_NOTIFY_EMAIL_FROM") or None,
        smtp_host=env.get("REFIT_SMTP_HOST", "localhost"),
        smtp_port=int(port),
        smtp_user=env.get("REFIT_SMTP_USER") or None,
        smtp_password=env.get("REFIT_SMTP_PASSWORD") or None,
        smtp_starttls=env.get("REFIT_SMTP_STARTTLS", "false").lower() in {"1", "true", "yes"},
        conn_ids=conn_ids,
        secrets=_configured_secrets(env),
    )


def _configured_secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    found = {secret for name in SECRET_URL_VARIABLES for secret in url_secrets(env.get(name))}
    found.update(value for name in SECRET_VARIABLES if (value := env.get(name)))
    return tuple(sorted(secret for secret in found if len(secret) >= MIN_CONFIGURED_SECRET))


def _to_log(settings: NotifySettings, notification: Notification, undelivered: list[str] | None = None) -> None:
    settings.log_path.parent.mkdir(parents=True, exist_ok=True)
    record = notification.to_dict() | ({"undelivered": undelivered} if undelivered else {})
    with settings.log_path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _to_webhook(settings: NotifySettings, notification: Notification) -> None:
    if settings.webhook_url is None:  # load_notify_settings refuses the webhook channel without a URL
        raise OSError("no webhook URL is set (REFIT_NOTIFY_WEBHOOK_URL)")
    body = json.dumps({"text": notification.summary, **notification.to_dict()}).encode()
    request = urllib.request.Request(settings.webhook_url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
        if response.status >= 300:
            raise OSError(f"webhook answered HTTP {response.status}")


def email_subject(notification: Notification) -> str:
    """The summary as an e-mail subject. Pure."""
    return f"[refit] {notification.summary}"


def _where(notification: Notification) -> list[str]:
    """Which model, run and task, and where the report is."""
    lines = [f"model: {notification.model}", f"DAG run: {notification.dag_run_id or '-'}"]
    if notification.task_id:
        lines.append(f"task: {notification.task_id}")
    if notification.report_uri:
        lines.append(f"report: {notification.report_uri}")
    return lines


def message_body(notification: Notification) -> str:
    """The reasons, then which model, run and task and where the report is: what follows the
    summary (a title or subject) in a message. Pure."""
    return "\n".join([f"- {reason}" for reason in notification.reasons] + [""] + _where(notification)).lstrip("\n")


def message_text(notification: Notification) -> str:
    """The whole message as plain text: the summary, then :func:`message_body`. Pure."""
    return f"{notification.summary}\n\n{message_body(notification)}"


def message_html(notification: Notification) -> str:
    """The whole message as HTML for an e-mail client: the summary, the reasons as a list, then
    where to look. Every text is escaped. Pure."""
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in notification.reasons)
    where = "<br>".join(html.escape(line) for line in _where(notification))
    return f"<p><strong>{html.escape(notification.summary)}</strong></p>" + \
        (f"<ul>{reasons}</ul>" if reasons else "") + f"<p>{where}</p>"


def chat_text(notification: Notification) -> str:
    """The whole message in Slack's mrkdwn: the summary in bold, then :func:`message_body`, with
    ``&``, ``<`` and ``>`` escaped as Slack asks. Pure."""
    def escape(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    return f"*{escape(notification.summary)}*\n{escape(message_body(notification))}"


def email_message(settings: NotifySettings, notification: Notification) -> EmailMessage:
    """The e-mail for ``notification``: the summary as subject, reasons and links as body. Pure."""
    message = EmailMessage()
    message["Subject"] = email_subject(notification)
    message["From"] = settings.email_from or DEFAULT_EMAIL_FROM
    message["To"] = ", ".join(settings.email_to)
    message.set_content(message_text(notification))
    return message


def _to_email(settings: NotifySettings, notification: Notification) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=WEBHOOK_TIMEOUT_S) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(email_message(settings, notification))


#: How a connection channel sends: ``sender(connection id, notification, settings)``, raising when
#: it cannot deliver.
ConnectionSender = Callable[[str, Notification, NotifySettings], None]
_CONNECTION_SENDERS: dict[str, ConnectionSender] = {}


def use_connection_sender(channel: str, sender: ConnectionSender) -> None:
    """Send the ``channel`` of :data:`CONNECTION_CHANNELS` with ``sender`` from now on, in this
    process: Refit's Airflow plugin registers its notifiers here (``ml_tasks`` imports no Airflow)."""
    if channel not in CONNECTION_CHANNELS:
        raise ValueError(f"channel {channel!r}: expected one of {list(CONNECTION_CHANNELS)}")
    _CONNECTION_SENDERS[channel] = sender


def _through_connection(channel: str) -> Callable[[NotifySettings, Notification], None]:
    def send(settings: NotifySettings, notification: Notification) -> None:
        sender = _CONNECTION_SENDERS.get(channel)
        if sender is None:
            raise OSError(f"the {channel} channel sends through an Airflow notifier (connection "
                          f"{settings.conn_ids[channel]!r}), and there is none outside an Airflow task")
        sender(settings.conn_ids[channel], notification, settings)

    return send


_SENDERS = {"log": _to_log, "webhook": _to_webhook, "email": _to_email,
            **{channel: _through_connection(channel) for channel in CONNECTION_CHANNELS}}


def notify(notification: Notification, settings: NotifySettings) -> list[str]:
    """Send ``notification`` on every configured channel; returns the channels that delivered.

    Every channel gets the notification with its secrets hidden (see the module docstring)."""
    notification = notification.redacted(settings.secrets)
    delivered, undelivered = [], []
    for channel in settings.channels:
        try:
            _SENDERS[channel](settings, notification)
            delivered.append(channel)
        except Exception as exc:  # whatever a channel or its provider raises, the run goes on
            error = redact(str(exc), settings.secrets)
            log.error("notification channel %s failed for %s: %s", channel, notification.model, error)
            undelivered.append(f"{channel}: {error}")
    if undelivered and "log" not in delivered:
        try:
            _to_log(settings, notification, undelivered)
        except OSError:  # nowhere left to write: the task log above is the last record
            log.exception("notification for %s could not be written to %s either", notification.model,
                          settings.log_path)
    return delivered


def gate_failed(model: str, report: dict, dag_run_id: str | None, report_uri: str) -> Notification:
    """The notification for a rejected challenger, from the report's content. Pure."""
    failing = list(report.get("failing") or [])
    challenger = report["gate"]["challenger"]
    return Notification(
        kind="gate_failed", model=model, dag_run_id=dag_run_id, reasons=failing, report_uri=report_uri,
        summary=f"{model}: gate FAIL for challenger {challenger} ({len(failing)} failing check"
                f"{'' if len(failing) == 1 else 's'}); {_champion_state(report)}",
    )


def _champion_state(report: dict) -> str:
    """What became of the champion after a FAIL, and what is wrong with it if anything is."""
    waiting = _approval_waiting(report)
    if waiting:
        return f"champion unchanged unless approved: {waiting}"
    evaluation, health = report.get("evaluation") or {}, report.get("champion_health") or {}
    missing = evaluation.get("champion_missing_columns")
    if missing:
        return f"champion v{evaluation.get('champion_version')} unchanged but cannot score the test rows: " \
               f"missing column(s) {missing}"
    if health.get("degraded"):
        return f"{health['champion']} unchanged although it fails its own bars: {', '.join(health['failing'])}"
    return "champion unchanged"


def champion_degraded(model: str, report: dict, dag_run_id: str | None, report_uri: str) -> Notification | None:
    """The notification for a champion that fails its own bars on this run's test rows, whatever
    the verdict (None when it clears them). Pure."""
    health = report.get("champion_health") or {}
    if not health.get("degraded"):
        return None
    policy = f"policy {health['policy']}: " if health.get("policy") else ""
    return Notification(
        kind="champion_degraded", model=model, dag_run_id=dag_run_id, report_uri=report_uri,
        reasons=[c["reason"] for c in health["checks"] if not c["passed"]] + [health["note"] or health["outcome"]],
        summary=f"{model}: {health['champion']} fails its own bars: {', '.join(health['failing'])}; "
                f"{policy}{health['outcome']}",
    )


def _approval_waiting(report: dict) -> str | None:
    """What a report whose promotion waits for a person says about it (None: nothing waits)."""
    approval = report.get("approval") or {}
    if approval.get("state") != "pending":
        return None
    who = f" from {', '.join(approval['approvers'])}" if approval.get("approvers") else ""
    deadline = (f"; no answer within {approval['timeout_hours']:g} h rejects it" if approval.get("timeout_hours")
                else "")
    return f"the run's approve task waits for an approval{who} (Required actions){deadline}"


def approval_waiting(model: str, report: dict, dag_run_id: str | None, report_uri: str) -> Notification | None:
    """The notification for a PASS (or any verdict but FAIL) that the spec's ``promotion:
    always_approve`` holds for a person (None when nothing waits). Pure."""
    waiting = _approval_waiting(report)
    if waiting is None:
        return None
    return Notification(kind="approval_waiting", model=model, dag_run_id=dag_run_id, report_uri=report_uri,
                        reasons=[waiting],
                        summary=f"{model}: gate {report.get('verdict')} for challenger {report['gate']['challenger']}; "
                                f"{waiting}")


def report_notifications(model: str, report: dict, dag_run_id: str | None, report_uri: str) -> list[Notification]:
    """What a finished report tells the person on call: a degraded champion (on any verdict),
    then a failed gate (saying when it waits for an approval) or a promotion that waits. Pure."""
    found = [champion_degraded(model, report, dag_run_id, report_uri)]
    if report.get("verdict") == "FAIL":
        found.append(gate_failed(model, report, dag_run_id, report_uri))
    else:
        found.append(approval_waiting(model, report, dag_run_id, report_uri))
    return [notification for notification in found if notification is not None]


def retrain_triggered(model: str, champion_version: str, reasons: list[str], dag_run_id: str | None) -> Notification:
    """The notification for a monitor run whose triggers fired: the champion's health moved enough
    that a retrain is queued, and the person on call should know why before its gate reports. Pure."""
    return Notification(
        kind="retrain_triggered", model=model, dag_run_id=dag_run_id, reasons=list(reasons),
        summary=f"{model}: champion v{champion_version} monitor fired {len(reasons)} trigger"
                f"{'' if len(reasons) == 1 else 's'} ({', '.join(r.split(':', 1)[0] for r in reasons)}); "
                f"retrain_{model} queued",
    )


def task_failed(model: str, task_id: str, dag_run_id: str | None, error: str | None) -> Notification:
    """The notification for a stage that errored. Pure."""
    # Hidden before the first line is cut short, which could cut a URL before its '@'.
    lines = redact(error or "").strip().splitlines()
    first_line = lines[0][:500] if lines else "unknown error"
    return Notification(kind="task_failed", model=model, task_id=task_id, dag_run_id=dag_run_id,
                        reasons=[first_line], summary=f"{model}: task {task_id} failed: {first_line}")
