"""Tell the person on call when a gate fails, when the champion fails its own bars (on any
verdict), or when a task of a retrain run fails.

Channels are chosen by environment, so embedded mode needs nothing and a deployment picks
its own:

``REFIT_NOTIFY_CHANNELS``
    comma-separated, from ``log`` (default), ``webhook``, ``email``.
``REFIT_NOTIFY_LOG``
    the log file (JSON lines); default ``$REFIT_HOME/notifications.log``.
``REFIT_NOTIFY_WEBHOOK_URL``
    receives a JSON POST whose ``text`` field is the one-line summary (the shape Slack and
    Teams incoming webhooks accept) plus every field of the notification.
``REFIT_NOTIFY_EMAIL_TO`` (comma-separated), ``REFIT_NOTIFY_EMAIL_FROM``, ``REFIT_SMTP_HOST``,
``REFIT_SMTP_PORT``, ``REFIT_SMTP_USER``, ``REFIT_SMTP_PASSWORD``, ``REFIT_SMTP_STARTTLS``
    plain SMTP.

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

import json
import logging
import os
import smtplib
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

from ml_tasks.core.redact import redact, url_secrets

log = logging.getLogger(__name__)
CHANNELS = ("log", "webhook", "email")
WEBHOOK_TIMEOUT_S = 10
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
        its own bars on the test rows, whatever the verdict), ``retrain_triggered`` (a monitor
        run's trigger fired and queued a retrain) or ``task_failed`` (a stage errored).
    model : spec name.
    summary : one line for a chat message or an e-mail subject.
    dag_run_id : the Airflow run (None from the CLI).
    task_id : the failing task, for ``task_failed``.
    reasons : failing checks or the error, most important first.
    report_uri : the gating report, when there is one.
    """

    kind: Literal["gate_failed", "champion_degraded", "retrain_triggered", "task_failed"]
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
    email_from: str = "refit@localhost"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
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
    if "email" in channels and not email_to:
        raise NotifySettingsError("REFIT_NOTIFY_EMAIL_TO: the email channel needs at least one recipient")
    port = env.get("REFIT_SMTP_PORT", "25")
    if not port.isdigit():
        raise NotifySettingsError(f"REFIT_SMTP_PORT: expected a port number, got {port!r}")
    return NotifySettings(
        channels=channels,
        log_path=Path(env.get("REFIT_NOTIFY_LOG") or home / "notifications.log"),
        webhook_url=webhook_url,
        email_to=email_to,
        email_from=env.get("REFIT_NOTIFY_EMAIL_FROM", "refit@localhost"),
        smtp_host=env.get("REFIT_SMTP_HOST", "localhost"),
        smtp_port=int(port),
        smtp_user=env.get("REFIT_SMTP_USER") or None,
        smtp_password=env.get("REFIT_SMTP_PASSWORD") or None,
        smtp_starttls=env.get("REFIT_SMTP_STARTTLS", "false").lower() in {"1", "true", "yes"},
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


def email_message(settings: NotifySettings, notification: Notification) -> EmailMessage:
    """The e-mail for ``notification``: the summary as subject, reasons and links as body. Pure."""
    message = EmailMessage()
    message["Subject"] = f"[refit] {notification.summary}"
    message["From"] = settings.email_from
    message["To"] = ", ".join(settings.email_to)
    lines = [notification.summary, ""] + [f"- {reason}" for reason in notification.reasons]
    lines += ["", f"model: {notification.model}", f"DAG run: {notification.dag_run_id or '-'}"]
    if notification.task_id:
        lines.append(f"task: {notification.task_id}")
    if notification.report_uri:
        lines.append(f"report: {notification.report_uri}")
    message.set_content("\n".join(lines))
    return message


def _to_email(settings: NotifySettings, notification: Notification) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=WEBHOOK_TIMEOUT_S) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(email_message(settings, notification))


_SENDERS = {"log": _to_log, "webhook": _to_webhook, "email": _to_email}


def notify(notification: Notification, settings: NotifySettings) -> list[str]:
    """Send ``notification`` on every configured channel; returns the channels that delivered.

    Every channel gets the notification with its secrets hidden (see the module docstring)."""
    notification = notification.redacted(settings.secrets)
    delivered, undelivered = [], []
    for channel in settings.channels:
        try:
            _SENDERS[channel](settings, notification)
            delivered.append(channel)
        except (OSError, smtplib.SMTPException) as exc:
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


def report_notifications(model: str, report: dict, dag_run_id: str | None, report_uri: str) -> list[Notification]:
    """What a finished report tells the person on call: a degraded champion (on any verdict),
    then a failed gate. Pure."""
    found = [champion_degraded(model, report, dag_run_id, report_uri)]
    if report.get("verdict") == "FAIL":
        found.append(gate_failed(model, report, dag_run_id, report_uri))
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
