"""A person approves or rejects a held promotion (the spec's ``promotion``), and the registry follows.

With ``promotion: approve_on_fail`` a FAIL, and with ``always_approve`` every verdict, registers
nothing by itself (:func:`ml_tasks.registry.versions.register_challenger` with ``hold``): the
retrain DAG asks a person in its ``approve`` task, whose form shows :func:`approval_form` (the
verdict, the failing reasons, the report's link). The answer comes back as an
:class:`ApprovalAnswer`, and :func:`decide` acts on it:

``Approve`` (with a reason of at least 10 characters)
    the gate's put-forward model is registered and made champion through the same locked,
    idempotent path as a manual promotion (:func:`~ml_tasks.registry.versions.approve_run`), its
    version tagged ``refit.approved_by`` and ``refit.approval_reason``;
``Reject``, or no answer within ``approval_timeout_hours``
    nothing is registered and the champion stays; the decision is recorded.

Either way the decision is an :class:`~ml_tasks.core.manifests.ApprovalManifest`, which the
pipeline keeps in the run's folder and in its report. Nothing here knows about Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ml_tasks.core.manifests import ApprovalManifest, GateManifest, RegistrationManifest, RunPlan
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import ModelSpec
from ml_tasks.registry.versions import RegistryActionError, approve_run, get_champion, require_approver

APPROVE, REJECT = "Approve", "Reject"
#: The answers the form offers, and the one a timeout takes.
OPTIONS = (APPROVE, REJECT)
ON_TIMEOUT = REJECT
#: The shortest reason an approval is taken with (the registry's rule for every manual change).
MIN_REASON = 10
MAX_REASONS = 8


@dataclass(frozen=True)
class ApprovalAnswer:
    """A person's answer (or the timeout's), as the approve task hands it over.

    ``by`` is None when nobody answered (the timeout chose ``Reject``)."""

    chosen: str
    reason: str = ""
    by: str | None = None
    by_id: str | None = None
    at: str | None = None

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ApprovalAnswer:
        chosen = payload.get("chosen")
        if chosen not in OPTIONS:
            raise RegistryActionError(f"approval answer: chosen option {chosen!r}; expected one of {list(OPTIONS)}")
        return cls(chosen=str(chosen), reason=str(payload.get("reason") or "").strip(), by=payload.get("by"),
                   by_id=payload.get("by_id"), at=payload.get("at"))

    @property
    def decision(self) -> Literal["approved", "rejected", "timed_out"]:
        if self.chosen == APPROVE:
            return "approved"
        return "timed_out" if self.by is None else "rejected"


def approval_form(spec: ModelSpec, plan: RunPlan, gate: GateManifest, registration: RegistrationManifest,
                  report_uri: str, report_link: str | None = None,
                  now: datetime | None = None) -> dict[str, str] | None:
    """The approve task's ``subject`` and ``body`` (Markdown) for a held promotion; None when the
    registration is not waiting for a person (nothing to ask). Pure."""
    if registration.action != "awaiting_approval":
        return None
    champion = f"champion v{registration.champion_version}" if registration.champion_version else "no champion yet"
    lines = [f"**{gate.verdict}** · `{plan.model}` · as of {plan.as_of:%Y-%m-%d} · challenger "
             f"`{gate.challenger}` · {champion}", ""]
    failing = gate.failing_reasons
    if failing:
        lines += ["Why the gate failed:", ""]
        lines += [f"- {reason}" for reason in failing[:MAX_REASONS]]
        if len(failing) > MAX_REASONS:
            lines.append(f"- … and {len(failing) - MAX_REASONS} more (in the report)")
        lines.append("")
    else:
        lines += ["Every check passed; the spec's `promotion: always_approve` still asks a person.", ""]
    if report_link:
        lines += [f"[Open the gating report]({report_link}) (file: `{report_uri}`)", ""]
    else:
        lines += [f"Gating report: `{report_uri}`", ""]
    keeps = (f"champion v{registration.champion_version} stays" if registration.champion_version
             else "the model stays without a champion")
    lines.append(f"**Approve** registers `{gate.challenger}` and makes it champion, with your name and reason on "
                 f"the model version (a reason of at least {MIN_REASON} characters). **Reject** registers nothing: "
                 f"{keeps}.")
    if spec.approval_timeout_hours is not None:
        deadline = (now or datetime.now(UTC)) + timedelta(hours=spec.approval_timeout_hours)
        lines += ["", f"No answer by {deadline:%Y-%m-%d %H:%M} UTC counts as a rejection."]
    if spec.approvers:
        lines += ["", f"Only {', '.join(spec.approvers)} may answer (the spec's `approvers`)."]
    subject = (f"Promote {plan.model}'s challenger {gate.challenger}? Gate {gate.verdict}, as of "
               f"{plan.as_of:%Y-%m-%d}")
    return {"subject": subject, "body": "\n".join(lines)}


def pending_approval(spec: ModelSpec, registration: RegistrationManifest) -> dict[str, Any] | None:
    """What the report says while the approve task waits (None when no approval is asked)."""
    if registration.action != "awaiting_approval":
        return None
    return {"state": "pending", "promotion": spec.promotion, "timeout_hours": spec.approval_timeout_hours,
            "approvers": list(spec.approvers)}


def decide(spec: ModelSpec, plan: RunPlan, gate: GateManifest, registration: RegistrationManifest, snapshot_id: str,
           report_uri: str, answer: ApprovalAnswer, settings: Settings) -> ApprovalManifest:
    """Act on the answer to a held promotion: register and promote on ``Approve``, nothing otherwise.

    Retried with the same answer, it ends in the same state (one version per run key, one
    approval entry on it). ``Approve`` without a reason of 10 characters, or from a user who is
    not among the spec's ``approvers`` (when it names any), raises
    :class:`~ml_tasks.registry.versions.RegistryActionError` and moves nothing.
    """
    if registration.action != "awaiting_approval":
        raise RegistryActionError(f"run {plan.run_key}: registration {registration.action!r} is not waiting for an "
                                  "approval; expected 'awaiting_approval'")
    promotion = spec.promotion
    if promotion == "auto":
        raise RegistryActionError(f"model {spec.name!r}: promotion 'auto' asks no person; expected approve_on_fail "
                                  "or always_approve")
    if answer.decision == "approved":
        if answer.by is None:
            raise RegistryActionError("approval answer: 'Approve' without the user who gave it; expected an answer "
                                      "from a person")
        require_approver(spec, answer.by_id, answer.by)  # Airflow refused anyone else already (assigned users)
        outcome = approve_run(spec, plan, gate, snapshot_id, report_uri, answer.reason, answer.by, settings,
                              at=answer.at)
    else:
        current = get_champion(settings, spec.registry_name)
        outcome = RegistrationManifest(registry_name=spec.registry_name, action="rejected", version=None,
                                       champion_version=current.version if current else None, previous_version=None)
    reason = answer.reason or (f"no answer within {spec.approval_timeout_hours:g} h"
                               if answer.decision == "timed_out" and spec.approval_timeout_hours else "")
    return ApprovalManifest(decision=answer.decision, promotion=promotion, verdict=gate.verdict,
                            challenger=gate.challenger, by=answer.by, by_id=answer.by_id, reason=reason,
                            at=answer.at, registration=outcome)
