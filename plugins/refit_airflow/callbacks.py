"""Task callbacks shared by Refit's DAGs: tell the person on call when a stage fails for good."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def notify_task_failure(context) -> None:
    """``on_failure_callback``: runs once the task has used its retries, never on a retry."""
    from ml_tasks.core.settings import load_settings
    from ml_tasks.reporting.notify import load_notify_settings, notify, task_failed
    from refit_airflow.dag_ids import model_of
    from refit_airflow.notifiers import install

    install()  # the smtp, slack and apprise channels send through Airflow's notifiers
    ti = context["ti"]
    exception = context.get("exception")
    try:
        notify(task_failed(model_of(ti.dag_id) or ti.dag_id, ti.task_id, ti.run_id,
                           f"{type(exception).__name__}: {exception}" if exception else None),
               load_notify_settings(load_settings().home))
    except Exception:  # a broken notifier must not hide the task's own failure
        log.exception("could not send the failure notification of %s.%s", ti.dag_id, ti.task_id)
