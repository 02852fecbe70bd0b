"""Refit's notifications sent through Airflow's notifiers, each through an Airflow connection.

``ml_tasks.reporting.notify`` builds the messages and picks the channels
(``REFIT_NOTIFY_CHANNELS``); for the channels ``smtp``, ``slack`` and ``apprise`` it hands the
message to a sender registered here by :func:`install`, which every Refit DAG calls as it is
built (so the stages that run inside a task, and the failure callback, send through these):

* ``smtp``: the SMTP provider's ``SmtpNotifier`` (connection type ``smtp``: host, port, login,
  password; extras ``from_email``, ``disable_tls``, ``disable_ssl``, ``timeout``), to
  ``REFIT_NOTIFY_EMAIL_TO``, the summary as subject and the message as HTML;
* ``slack``: the Slack provider's ``SlackWebhookNotifier`` (connection type ``slackwebhook``:
  the incoming webhook's token as password, or its whole URL);
* ``apprise``: the Apprise provider's ``AppriseNotifier`` (connection type ``apprise``: extra
  ``config``, one ``{"path": <apprise URL>, "tag": ...}`` or a list), the summary as title and
  the kind's severity as notify type.

The connection ids are ``REFIT_NOTIFY_SMTP_CONN_ID``, ``REFIT_NOTIFY_SLACK_CONN_ID`` and
``REFIT_NOTIFY_APPRISE_CONN_ID`` (defaults: each provider's own default id). The credentials
live in the connection (an ``AIRFLOW_CONN_*`` variable, the metadata database or a secrets
backend), never in Refit's settings. A notifier that cannot deliver raises, and the notification
goes to the log file with the reason, with the connection's secrets masked in it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

from ml_tasks.core.redact import redact, url_secrets
from ml_tasks.reporting.notify import (
    SEVERITY,
    WEBHOOK_TIMEOUT_S,
    Notification,
    NotifySettings,
    chat_text,
    email_subject,
    message_body,
    message_html,
    use_connection_sender,
)


class NotifierError(OSError):
    """A notifier could not deliver; the message has the connection's secrets masked."""


def send_smtp(conn_id: str, notification: Notification, settings: NotifySettings) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    with _masking(conn_id):
        SmtpNotifier(smtp_conn_id=conn_id, to=list(settings.email_to), from_email=settings.email_from,
                     subject=email_subject(notification), html_content=message_html(notification)).notify({})


def send_slack(conn_id: str, notification: Notification, settings: NotifySettings) -> None:
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    with _masking(conn_id):
        SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text=chat_text(notification),
                             timeout=WEBHOOK_TIMEOUT_S).notify({})


def send_apprise(conn_id: str, notification: Notification, settings: NotifySettings) -> None:
    import apprise
    from airflow.providers.apprise.notifications.apprise import AppriseNotifier

    with _masking(conn_id):
        notifier = AppriseNotifier(apprise_conn_id=conn_id, title=notification.summary,
                                   body=message_body(notification),
                                   notify_type=apprise.NotifyType(SEVERITY.get(notification.kind, "info")))
        # The provider drops Apprise's "delivered" flag; what went wrong is in Apprise's log.
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as problems:
            notifier.notify({})
        said = [line for line in problems.getvalue().splitlines() if line.strip()]
        if said:
            raise NotifierError("; ".join(said))


def install() -> None:
    """Send the ``smtp``, ``slack`` and ``apprise`` channels through the notifiers above, in this
    process (idempotent)."""
    use_connection_sender("smtp", send_smtp)
    use_connection_sender("slack", send_slack)
    use_connection_sender("apprise", send_apprise)


@contextlib.contextmanager
def _masking(conn_id: str) -> Iterator[None]:
    """Re-raise whatever a notifier raises as :class:`NotifierError`, its message with the
    connection's password, its URL's password and its Apprise URLs masked (a message may quote a
    webhook URL, whose token is the secret)."""
    try:
        yield
    except Exception as exc:
        text = str(exc) if isinstance(exc, NotifierError) else f"{type(exc).__name__}: {exc}"
        raise NotifierError(redact(text, _connection_secrets(conn_id))) from None


def _connection_secrets(conn_id: str) -> tuple[str, ...]:
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception:  # not defined: the error says so, and holds none of its secrets
        return ()
    config = connection.extra_dejson.get("config") if connection.conn_type == "apprise" else None
    if isinstance(config, str):  # the provider accepts the list as JSON text too
        with contextlib.suppress(ValueError):
            config = json.loads(config)
    paths = [entry.get("path", "") for entry in (config if isinstance(config, list) else [config])
             if isinstance(entry, dict)]
    return tuple(s for s in (connection.password, *url_secrets(connection.get_uri()), *paths) if s)
