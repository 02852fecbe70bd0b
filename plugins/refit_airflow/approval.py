"""The approve task: a person accepts or rejects a held promotion from the task's form in the UI.

A spec with ``promotion: approve_on_fail`` (or ``always_approve``) gets two tasks after the
report (:func:`approval_tasks`):

``approve`` (:class:`ApprovalTask`, Airflow's human-in-the-loop operator)
    asks only when the run's registration is ``awaiting_approval`` (a FAIL, or any verdict with
    ``always_approve``); otherwise it returns at once and asks nothing. When it asks, the UI's
    *Required Actions* form shows the verdict, the failing reasons and the report's link
    (:func:`ml_tasks.pipeline.approval_form`), two buttons, ``Approve`` and ``Reject``, and a
    ``reason`` field. The task waits in Airflow 3.3's ``awaiting_input`` state (no worker slot,
    no triggerer) until someone answers, in the UI or through the REST API (``PATCH
    /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails`` with
    ``{"chosen_options": ["Approve"], "params_input": {"reason": "…"}}``) by one of the spec's
    ``approvers`` when it names any (Airflow refuses anyone else with 403), or until
    ``approval_timeout_hours`` pass, when the scheduler answers ``Reject`` for nobody. An
    ``Approve`` without a reason of at least 10 characters is not taken: the form is cleared and
    asked again. Its XCom is the answer: ``{"chosen", "reason", "by", "by_id", "at"}`` — ``by``
    is the name of the Airflow user who responded (``responded_by_user``), None for a timeout.
``apply_approval``
    acts on it (:func:`ml_tasks.pipeline.apply_approval`): ``Approve`` promotes the gate's
    put-forward model through the registry's locked promotion path, tagging the version with
    ``refit.approved_by`` and ``refit.approval_reason``; ``Reject`` or a timeout registers nothing.
    Its return value is the registration the champion Asset's task announces. A version it
    registers gets the same lineage as one the register task registers (snapshot -> version).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, task

from ml_tasks.core.spec import ModelSpec
from ml_tasks.registry.approval import APPROVE, MIN_REASON, ON_TIMEOUT, OPTIONS

REASON_HELP = ("Why you approve (at least 10 characters: recorded on the model version and in the report) or "
               "reject (optional).")


class ApprovalTask(HITLOperator):
    """Ask a person to approve or reject the promotion a run's registration holds; see the module."""

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "plan", "gate_manifest", "registration",
                                      "report_manifest")
    ui_color = "#fff3cd"

    def __init__(self, *, spec: ModelSpec, plan: Any, gate_manifest: Any, registration: Any, report_manifest: Any,
                 **kwargs: Any) -> None:
        hours = spec.approval_timeout_hours
        kwargs.pop("params", None)  # the DAG's trigger params, handed down: the form asks only for a reason
        super().__init__(
            subject=f"Promote {spec.name}'s challenger?",  # replaced by the run's own when it asks
            options=list(OPTIONS), defaults=[ON_TIMEOUT], multiple=False,
            # No minLength: the form does not check one, and an answer that failed it would fail the
            # task; an approval without a reason is asked again instead (execute_complete).
            params={"reason": Param(None, type=["null", "string"], maxLength=1000, title="Reason",
                                    description=REASON_HELP)},
            response_timeout=timedelta(hours=hours) if hours else None,
            # Airflow answers anyone else's response with 403 (the auth manager's is_authorized_hitl_task).
            assigned_users=[{"id": user, "name": user} for user in spec.approvers] or None,
            doc_md=f"Approve or reject a promotion `promotion: {spec.promotion}` holds for a person.",
            **kwargs)
        self.plan = plan
        self.gate_manifest = gate_manifest
        self.registration = registration
        self.report_manifest = report_manifest

    def execute(self, context: Any) -> Any:
        return self._ask(context)

    def _ask(self, context: Any) -> Any:
        """Show the form and wait (``awaiting_input``); None at once when there is nothing to ask."""
        from ml_tasks import pipeline
        from refit_airflow.links import report_url

        ti = context["task_instance"]
        form = pipeline.approval_form(self.plan, self.gate_manifest, self.registration, self.report_manifest,
                                      report_link=report_url(ti.dag_id, ti.run_id))
        if form is None:
            self.log.info("registration %r waits for no one: nothing to ask", (self.registration or {}).get("action"))
            return None
        self.subject, self.body = form["subject"], form["body"]
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = answer_of(super().execute_complete(context, event))
        if answer["chosen"] == APPROVE and len(answer["reason"]) < MIN_REASON:
            # Not an answer the registry takes: clear it and ask again (the form opens anew).
            self.log.warning("%s chose %s without a reason of at least %d characters (%r): asking again",
                             answer["by"], APPROVE, MIN_REASON, answer["reason"])
            return self._ask(context)
        return answer


def answer_of(response: dict[str, Any]) -> dict[str, Any]:
    """The answer Refit keeps of a HITL response (JSON-safe): the option, the reason, who and when."""
    user = response.get("responded_by_user") or None
    at = response.get("responded_at")
    return {"chosen": (response.get("chosen_options") or [None])[0],
            "reason": ((response.get("params_input") or {}).get("reason") or "").strip(),
            "by": (user.get("name") or user.get("id")) if user else None,
            "by_id": user.get("id") if user else None,
            "at": at.isoformat(timespec="seconds") if isinstance(at, datetime) else at}


def approval_tasks(spec: ModelSpec, run_plan: Any, validation: Any, gate: Any, registration: Any,
                   report: Any) -> Any:
    """``approve`` then ``apply_approval`` (see the module); returns the registration after the decision."""
    asked = ApprovalTask(task_id="approve", spec=spec, plan=run_plan, gate_manifest=gate, registration=registration,
                         report_manifest=report)

    @task(task_id="apply_approval")
    def apply_approval(plan: dict, validation_manifest: dict, gate_manifest: dict, held: dict,
                       answer: dict | None) -> dict:
        from ml_tasks import pipeline
        from refit_airflow.lineage import registration_lineage

        registration = pipeline.apply_approval(plan, validation_manifest, gate_manifest, held, answer)
        if registration.get("action") == "approved":  # the version this task registered: snapshot -> version
            registration_lineage(validation_manifest, registration, task="apply_approval")
        return registration

    answer: Any = asked.output  # the approve task's XCom, resolved when apply_approval runs
    return apply_approval(run_plan, validation, gate, registration, answer)
