"""Write a retrain run's verdict as its DAG run note, so it shows in the Airflow UI.

A listener (registered by :mod:`refit_airflow.plugin`) runs where DAG runs change state — the
scheduler, or ``airflow dags test`` — which has the metadata database at hand; tasks in
Airflow 3 do not. When a ``retrain_*`` run ends, it looks up that run's gate result in the
model's history and sets the note: verdict, challenger, champion, the first failing reasons
and where the full report is.
"""

from __future__ import annotations

import logging

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)
MAX_REASONS = 3


def note_text(latest: dict) -> str:
    """The note's Markdown (the UI renders notes as Markdown). Pure."""
    lines = [f"**{latest['verdict']}** · challenger `{latest['challenger']}` · champion "
             f"{'v' + str(latest['champion_version']) if latest.get('champion_version') else 'none'}"
             f"{' · dry run' if latest.get('dry_run') else ''}"]
    approval = latest.get("approval")
    if approval:
        lines.append(approval_line(approval))
    failing = latest.get("failing") or []
    lines += [f"- {reason}" for reason in failing[:MAX_REASONS]]
    if latest.get("trigger"):
        lines.append(f"Triggered by {latest['trigger']}")
    if len(failing) > MAX_REASONS:
        lines.append(f"- … and {len(failing) - MAX_REASONS} more")
    lines.append(f"Report: {latest['html_uri']}")
    return "\n".join(lines)


def approval_line(approval: dict) -> str:
    """One line on what a person decided about a held promotion (the spec's ``promotion``). Pure."""
    state = approval.get("state")
    if state == "approved":
        return f"Approved by {approval.get('by')} (v{approval.get('version')}): {approval.get('reason')}"
    if state == "rejected":
        return f"Rejected by {approval.get('by')}" + (f": {approval['reason']}" if approval.get("reason") else "")
    if state == "timed_out":
        return f"Not approved in time ({approval.get('reason')}): champion unchanged"
    return f"Awaiting approval (promotion: {approval.get('promotion')})"


def _run_note(dag_run, model: str) -> str | None:
    from ml_tasks.core.settings import load_settings
    from ml_tasks.io.store import store_from_settings
    from ml_tasks.reporting.gate_results import find_result

    # The run's own gate result, from the history (newest first: normally the first entry read).
    # Not the latest pointer: a dry run does not move it, and another run may have since.
    result = find_result(store_from_settings(load_settings()), model, dag_run_id=dag_run.run_id)
    if result is None:
        return None  # the run failed before its report: its own logs say why
    return note_text(result.to_dict())


def _set_note(dag_run) -> None:
    from refit_airflow.dag_ids import retrain_model_of

    model = retrain_model_of(dag_run.dag_id)
    if model is None:
        return
    run_id = dag_run.run_id  # read now: the except clause must not touch a detached run
    try:
        text = _run_note(dag_run, model)
        if text is None:
            return
        from sqlalchemy import inspect

        if inspect(dag_run).session is not None:
            # The scheduler calls listeners inside its own transaction, which forbids commits
            # (they would break its HA locks) and holds this run's row lock: the note rides on
            # that transaction and is committed with the run's new state.
            dag_run.note = text
            return
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        # `airflow dags test` hands over a run bound to no session.
        with create_session() as session:
            stored = session.get(DagRun, dag_run.id)
            if stored is not None:
                stored.note = text
    except Exception:  # a note must never fail the run it describes
        log.exception("could not write the verdict note of %s", run_id)


@hookimpl
def on_dag_run_success(dag_run, msg: str):
    _set_note(dag_run)


@hookimpl
def on_dag_run_failed(dag_run, msg: str):
    _set_note(dag_run)
