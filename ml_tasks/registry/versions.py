"""The MLflow model registry: look up the champion, register a passed challenger, move aliases.

Aliases (``champion``, ``previous``) are the only pointers to production models; the
deprecated stages are never used.

Registration is a small state machine that any retry finishes
-------------------------------------------------------------------
A version carries the run's idempotency key (``refit.idempotency_key``: run key and snapshot)
and its registration state (``refit.registration``):

``pending``
    created, aliases not moved yet. The version also records the champion it replaces
    (``refit.replaces``), read when it was created.
``complete``
    ``previous`` and ``champion`` were moved (or, for a version registered before this state
    existed, the registration ran to its end in one go).

:func:`register_challenger` reads that state for the run's key and does what is missing: create
the version when there is none, move the aliases when it is ``pending``, nothing when it is
``complete``. A process killed anywhere in between (after the version, after ``previous``)
leaves a state the next try of the same interval completes; a completed registration is never
redone, so a re-run of an old interval never moves the champion back. Every write happens
under the model's registry lock (:mod:`ml_tasks.registry.lock`), and a registry read that
fails raises: a failed search never means "no such version".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ml_tasks.core.fault_points import reached
from ml_tasks.core.manifests import GateManifest, RegistrationManifest, RunPlan
from ml_tasks.core.settings import Settings, code_version
from ml_tasks.core.spec import ModelSpec
from ml_tasks.registry.lock import model_lock
from ml_tasks.registry.tracking import use_store

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
PREVIOUS = "previous"
KEY_TAG = "refit.idempotency_key"
STATE_TAG = "refit.registration"
REPLACES_TAG = "refit.replaces"
PENDING, COMPLETE = "pending", "complete"


class RegistryError(RuntimeError):
    """The registry could not be read or holds something Refit did not write; the message says what."""


class RegistryActionError(RuntimeError):
    """A manual promotion or rollback cannot be done; the message says what is missing."""


@dataclass(frozen=True)
class ChampionInfo:
    version: str
    run_id: str | None
    model_uri: str
    tags: dict[str, str]
    #: Where the version's model lives: ``models:/m-…`` (its LoggedModel) for models logged by MLflow 3.
    source: str = ""


def get_champion(settings: Settings, registry_name: str) -> ChampionInfo | None:
    """The version behind the ``champion`` alias, or None when there is none yet."""
    version = _version_by_alias(use_store(settings), registry_name, CHAMPION)
    if version is None:
        return None
    return ChampionInfo(version=str(version.version), run_id=version.run_id,
                        model_uri=f"models:/{registry_name}/{version.version}", tags=dict(version.tags),
                        source=version.source or "")


def _version_by_alias(mlflow_client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at; None only when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise RegistryError(f"registered model {name!r}: could not read alias {alias!r}: {exc}") from exc


def idempotency_key(plan: RunPlan, snapshot_id: str) -> str:
    return f"{plan.run_key}:{snapshot_id}"


def register_challenger(
    spec: ModelSpec, plan: RunPlan, gate: GateManifest, snapshot_id: str,
    report_uri: str, settings: Settings, hold: bool = False,
) -> RegistrationManifest:
    """Register the model the gate put forward and make it champion, only on PASS and not in a dry run.

    Converges: whatever an earlier try of this run key left (nothing, a version without the
    aliases, ``previous`` moved but not ``champion``), the result is the state of an
    uninterrupted registration. Aliases move ``previous`` first and ``champion`` last, so a
    failure in between leaves the old champion serving.

    ``hold`` (the spec's ``promotion`` wants a person for this verdict): register nothing and say
    ``awaiting_approval``; :func:`approve_run` registers after the approval. A run key whose
    registration already completed (an approved interval run again) stays ``already_registered``.

    ``already_registered`` in the DAG run whose earlier try registered the version (a retry after
    the alias moved) says so in ``champion_moved_by_this_run`` while the version is champion, so
    the champion Asset is announced at least once.
    """
    name = spec.registry_name
    if plan.dry_run or (gate.verdict != "PASS" and not hold):
        current = get_champion(settings, name)
        return RegistrationManifest(
            registry_name=name, action="skipped_failed_gate" if gate.verdict != "PASS" else "skipped_dry_run",
            version=None, champion_version=current.version if current else None, previous_version=None)
    key = idempotency_key(plan, snapshot_id)
    if hold:
        done = version_with_key(use_store(settings), name, key)
        current = get_champion(settings, name)
        held = done is None or done.tags.get(STATE_TAG) == PENDING
        return RegistrationManifest(registry_name=name, action="awaiting_approval" if held else "already_registered",
                                    version=None if held or done is None else str(done.version),
                                    champion_version=current.version if current else None, previous_version=None)
    with model_lock(settings, name):
        mlflow_client = use_store(settings)
        version = version_with_key(mlflow_client, name, key)
        if version is None:
            current = get_champion(settings, name)
            version = _create_unique_version(mlflow_client, spec, plan, gate, snapshot_id, report_uri,
                                             replaces=current.version if current else None)
        if version.tags.get(STATE_TAG) != PENDING:
            current = get_champion(settings, name)
            moved_here = (plan.in_dag_run and version.tags.get("refit.dag_run_id") == plan.dag_run_id
                          and current is not None and str(current.version) == str(version.version))
            replaced = (version.tags.get(REPLACES_TAG) or None) if moved_here else None
            return RegistrationManifest(registry_name=name, action="already_registered", version=str(version.version),
                                        champion_version=current.version if current else None,
                                        previous_version=replaced, champion_moved_by_this_run=moved_here)
        _check_same_model(version, gate, key)
        previous = _complete(mlflow_client, name, version)
    return RegistrationManifest(registry_name=name, action="registered", version=str(version.version),
                                champion_version=str(version.version), previous_version=previous)


def _create_unique_version(mlflow_client: MlflowClient, spec: ModelSpec, plan: RunPlan, gate: GateManifest,
                           snapshot_id: str, report_uri: str, replaces: str | None) -> ModelVersion:
    """Create the run's version, then make sure it is the only one with its key.

    The lock keeps two writers apart; should two have slipped through anyway (hosts that do not
    share a lock), the re-check keeps the lowest version of the key and deletes this one, so the
    key still names exactly one version.
    """
    created = _create_version(mlflow_client, spec, plan, gate, snapshot_id, report_uri, gate.verdict, replaces)
    kept = version_with_key(mlflow_client, spec.registry_name, idempotency_key(plan, snapshot_id))
    if kept is None or str(kept.version) == str(created.version):
        return created
    mlflow_client.delete_model_version(spec.registry_name, str(created.version))
    return kept


def _complete(mlflow_client: MlflowClient, name: str, version: ModelVersion) -> str | None:
    """Move ``previous`` and ``champion`` for a pending version, then mark it complete.

    Returns the version that was champion before (None for the first one)."""
    number = str(version.version)
    current = _version_by_alias(mlflow_client, name, CHAMPION)
    if current is not None and str(current.version) == number:  # killed after champion moved
        previous = _version_by_alias(mlflow_client, name, PREVIOUS)
        outgoing = str(previous.version) if previous is not None else None
    else:
        outgoing = str(current.version) if current is not None else None
        _move_aliases(mlflow_client, name, number, outgoing)
    mlflow_client.set_model_version_tag(name, number, STATE_TAG, COMPLETE)
    return outgoing


def _move_aliases(mlflow_client: MlflowClient, name: str, version: str, current_version: str | None) -> None:
    # ``previous`` first, ``champion`` last: a failure in between leaves the old champion serving.
    if current_version is not None:
        mlflow_client.set_registered_model_alias(name, PREVIOUS, current_version)
        reached("registry.previous_moved")
    mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    reached("registry.champion_moved")


def version_with_key(mlflow_client: MlflowClient, name: str, key: str) -> ModelVersion | None:
    """The version registered for run key ``key`` (the lowest, should a race have made two).

    A failed search raises :class:`RegistryError`: taking it for "none yet" would register a
    duplicate and move the champion.
    """
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow_client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryError(f"registered model {name!r}: could not search its versions for run key {key!r}, so "
                            f"registration cannot tell whether it already happened; retry when the registry answers: "
                            f"{exc}") from exc
    matching = sorted((v for v in versions if v.tags.get(KEY_TAG) == key), key=lambda v: int(v.version))
    return matching[0] if matching else None


def _check_same_model(version: ModelVersion, gate: GateManifest, key: str) -> None:
    """A pending version found for the key must hold the model this gate put forward."""
    model = gate.challenger_model
    if version.run_id != model.run_id:
        raise RegistryError(f"version {version.version} of {version.name!r} has run key {key!r} but holds MLflow run "
                            f"{version.run_id!r}, not {model.run_id!r} that this run's gate put forward; archive or "
                            "delete that version before re-running the interval")


def _ensure_registered_model(mlflow_client: MlflowClient, spec: ModelSpec) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(spec.registry_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"registered model {spec.registry_name!r}: could not be read: {exc}") from exc
        mlflow_client.create_registered_model(spec.registry_name, tags={"refit.model": spec.name},
                                              description=spec.description)


def _create_version(mlflow_client: MlflowClient, spec: ModelSpec, plan: RunPlan, gate: GateManifest,
                    snapshot_id: str, report_uri: str, verdict: str, replaces: str | None) -> ModelVersion:
    """A new, pending version of the model the gate put forward (the challenger, or the baseline
    it fell back to: never evaluation's validation winner), tagged with the run's lineage, its
    idempotency key, and the champion it replaces."""
    _ensure_registered_model(mlflow_client, spec)
    model = gate.challenger_model
    tags = {
        KEY_TAG: idempotency_key(plan, snapshot_id), "refit.snapshot_id": snapshot_id,
        "refit.spec_hash": plan.spec_hash, "refit.dag_run_id": plan.dag_run_id, "refit.run_key": plan.run_key,
        "refit.as_of": plan.as_of.isoformat(), "refit.candidate": model.candidate, "refit.verdict": verdict,
        "refit.report_uri": report_uri, "refit.code_version": code_version(),
        STATE_TAG: PENDING, REPLACES_TAG: replaces or "",
    }
    version = mlflow_client.create_model_version(name=spec.registry_name, source=model.model_uri, run_id=model.run_id,
                                                 tags=tags, model_id=model.model_uri.removeprefix("models:/"))
    reached("registry.version_created")
    return version


def promote_run(spec: ModelSpec, plan: RunPlan, gate: GateManifest, snapshot_id: str, report_uri: str,
                reason: str, requested_by: str, settings: Settings) -> RegistrationManifest:
    """Promote the model a run's gate put forward after human review, whatever its verdict.

    The version keeps the run's idempotency key (promoting twice does not register twice), and
    each promotion adds an entry to the version's history of manual decisions (reason, person,
    time), never overwriting an earlier one. Aliases move in the same order as an automatic
    promotion: ``previous`` first, ``champion`` last. A spec that names ``approvers`` takes it
    only from one of them (:func:`require_approver`).
    """
    require_approver(spec, requested_by)
    return _promote(spec, plan, gate, snapshot_id, report_uri, _required_reason(reason), requested_by, settings,
                    kind="promotion", verdict_tag="promoted manually", action="promoted_manually")


def approve_run(spec: ModelSpec, plan: RunPlan, gate: GateManifest, snapshot_id: str, report_uri: str,
                reason: str, approved_by: str, settings: Settings, at: str | None = None) -> RegistrationManifest:
    """Promote the model a run's gate put forward because a person approved it in the run's
    approve task (the spec's ``promotion``): the same locked, idempotent path as
    :func:`promote_run`, tagged ``refit.approved_by`` and ``refit.approval_reason`` (and an entry
    ``refit.approval.<n>`` with the time ``at`` of the answer; a retry with the same answer adds none).
    The version's ``refit.verdict`` stays the gate's verdict."""
    return _promote(spec, plan, gate, snapshot_id, report_uri, _required_reason(reason), approved_by, settings,
                    kind="approval", verdict_tag=gate.verdict, action="approved", at=at)


def _promote(spec: ModelSpec, plan: RunPlan, gate: GateManifest, snapshot_id: str, report_uri: str, reason: str,
             by: str, settings: Settings, *, kind: str, verdict_tag: str,
             action: Literal["promoted_manually", "approved"], at: str | None = None) -> RegistrationManifest:
    name = spec.registry_name
    key = idempotency_key(plan, snapshot_id)
    with model_lock(settings, name):
        mlflow_client = use_store(settings)
        current = get_champion(settings, name)
        version = version_with_key(mlflow_client, name, key)
        if version is None:
            version = _create_version(mlflow_client, spec, plan, gate, snapshot_id, report_uri, verdict_tag,
                                      replaces=current.version if current else None)
        number = str(version.version)
        _record_decision(mlflow_client, version, kind, reason, by, at)
        if current is not None and current.version == number:
            mlflow_client.set_model_version_tag(name, number, STATE_TAG, COMPLETE)
            return RegistrationManifest(registry_name=name, action="already_registered", version=number,
                                        champion_version=number, previous_version=None)
        _move_aliases(mlflow_client, name, number, current.version if current else None)
        mlflow_client.set_model_version_tag(name, number, STATE_TAG, COMPLETE)
    return RegistrationManifest(registry_name=name, action=action, version=number,
                                champion_version=number, previous_version=current.version if current else None)


def rollback(spec: ModelSpec, reason: str, requested_by: str, settings: Settings) -> RegistrationManifest:
    """Point ``champion`` back at ``previous``; ``previous`` then names the version rolled back
    from, so a second rollback undoes the first."""
    reason = _required_reason(reason)
    name = spec.registry_name
    with model_lock(settings, name):
        mlflow_client = use_store(settings)
        current = _version_by_alias(mlflow_client, name, CHAMPION)
        previous_version = _version_by_alias(mlflow_client, name, PREVIOUS)
        previous = str(previous_version.version) if previous_version is not None else None
        if current is None or previous is None or previous == str(current.version):
            raise RegistryActionError(f"model {name!r}: rollback needs both a 'champion' and a 'previous' alias; "
                                      f"found champion={current.version if current else None}, previous={previous}")
        _record_decision(mlflow_client, current, "rollback", reason, requested_by)
        _move_aliases(mlflow_client, name, previous, str(current.version))
    return RegistrationManifest(registry_name=name, action="rolled_back", version=previous,
                                champion_version=previous, previous_version=str(current.version))


#: The tags of the latest manual decision of each kind (what the report and the UI show).
_LATEST_DECISION_TAGS = {"promotion": ("refit.manual_promotion_reason", "refit.promoted_by"),
                         "rollback": ("refit.rolled_back_reason", "refit.rolled_back_by"),
                         "approval": ("refit.approval_reason", "refit.approved_by")}


def _record_decision(mlflow_client: MlflowClient, version: ModelVersion, kind: str, reason: str, by: str,
                     at: str | None = None) -> None:
    """Add a manual decision to the version's history (``refit.<kind>.<n>``, never overwritten)
    and keep the latest one under the tags earlier releases wrote. A decision with its own time
    ``at`` (an approval's answer) that the history already holds is not added again."""
    name, number = version.name, str(version.version)
    entries = {tag: value for tag, value in version.tags.items() if tag.startswith(f"refit.{kind}.")}
    entry = json.dumps({"reason": reason, "by": by, "at": at or datetime.now(UTC).isoformat(timespec="seconds")},
                       sort_keys=True)
    if entry not in entries.values():
        mlflow_client.set_model_version_tag(name, number, f"refit.{kind}.{len(entries) + 1}", entry)
    reason_tag, by_tag = _LATEST_DECISION_TAGS[kind]
    mlflow_client.set_model_version_tag(name, number, reason_tag, reason)
    mlflow_client.set_model_version_tag(name, number, by_tag, by)


def require_approver(spec: ModelSpec, *user: str | None) -> None:
    """Raise :class:`RegistryActionError` unless the spec names no ``approvers`` or ``user`` (its
    id and/or name: the registry DAG knows only the triggering user's name) is one of them.
    Rollback is not held to it: moving back to the version that served before is the on-call
    person's emergency exit."""
    if spec.approvers and not any(who in spec.approvers for who in user if who):
        who = " / ".join(repr(w) for w in user if w) or "an unknown user"
        raise RegistryActionError(f"user {who} may not promote model {spec.name!r}: it takes promotions and "
                                  f"approvals only from its approvers {spec.approvers}")


def _required_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 10:
        raise RegistryActionError(f"parameter 'reason': a manual registry change needs a reason of at least 10 "
                                  f"characters for the audit trail, got {reason!r}")
    return reason


def latest_challenger(settings: Settings, registry_name: str, champion_version: str) -> ChampionInfo | None:
    """The newest version registered after the champion (a higher number), or None when there is none.

    That is the latest challenger the registry holds that does not serve: one a rollback set
    aside, one whose registration has not moved the aliases yet, or one registered without being
    promoted. Older versions are former champions, not challengers. Read-only; a registry that
    does not answer raises :class:`RegistryError`.
    """
    from mlflow.exceptions import MlflowException

    try:
        versions = use_store(settings).search_model_versions(f"name = '{registry_name}'")
    except MlflowException as exc:
        raise RegistryError(f"registered model {registry_name!r}: could not search its versions for the latest "
                            f"challenger: {exc}") from exc
    newer = [v for v in versions if int(v.version) > int(champion_version)]
    if not newer:
        return None
    latest = max(newer, key=lambda v: int(v.version))
    return ChampionInfo(version=str(latest.version), run_id=latest.run_id,
                        model_uri=f"models:/{registry_name}/{latest.version}", tags=dict(latest.tags))
