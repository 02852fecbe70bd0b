"""What every task of Refit's DAGs shares: owner, retries and who hears of a final failure.

``REFIT_RETRY_DELAY_S`` (read when the DAG is parsed, default 120) sets the wait before a
task's retry: two minutes lets a restarted service come back; a test stack sets seconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

from ml_tasks.core.spec import ModelSpec
from refit_airflow.callbacks import notify_task_failure

DEFAULT_RETRY_DELAY_S = 120


def retry_delay(env: Mapping[str, str] | None = None) -> timedelta:
    """``REFIT_RETRY_DELAY_S`` as a timedelta; anything but a non-negative integer is an error naming it."""
    env = os.environ if env is None else env
    raw = (env.get("REFIT_RETRY_DELAY_S") or str(DEFAULT_RETRY_DELAY_S)).strip()
    if not raw.isdigit():
        raise ValueError(f"REFIT_RETRY_DELAY_S={raw!r}: expected a whole number of seconds, e.g. 120")
    return timedelta(seconds=int(raw))


def task_defaults(spec: ModelSpec, env: Mapping[str, str] | None = None) -> dict:
    """``default_args`` for a model's DAGs."""
    return {"owner": spec.owner, "retries": 1, "retry_delay": retry_delay(env),
            "on_failure_callback": notify_task_failure}
