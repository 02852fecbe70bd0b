"""The MLflow model registry: look up the champion, register a passed challenger, move aliases.

Aliases (``champion``, ``previous``) are the only pointers to production models; the
deprecated stages are never used. Registration is idempotent: a version carries the run's
idempotency key, so re-running the same interval finds it instead of registering a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_tasks.core.manifests import GateManifest, RegistrationManifest, RunPlan
from ml_tasks.core.settings import Settings, code_version
from ml_tasks.core.spec import ModelSpec
from ml_tasks.registry.tracking import use_store

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
PREVIOUS = "previous"


@dataclass(frozen=True)
class ChampionInfo:
    version: str
    run_id: str | None
    model_uri: str
    tags: dict[str, str]


def get_champion(settings: Settings, registry_name: str) -> ChampionInfo | None:
    """The version behind the ``champion`` alias, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    mlflow_client = use_store(settings)
    try:
        version = mlflow_client.get_model_version_by_alias(registry_name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise
    return ChampionInfo(version=str(version.version), run_id=version.run_id,
                        model_uri=f"models:/{registry_name}/{version.version}", tags=dict(version.tags))


def idempotency_key(plan: RunPlan, snapshot_id: str) -> str:
    return f"{plan.run_key}:{snapshot_id}"


def register_challenger(
    spec: ModelSpec, plan: RunPlan, gate: GateManifest, snapshot_id: str,
    report_uri: str, settings: Settings,
) -> RegistrationManifest:
    """Register the challenger and make it champion, only if the gate passed and this is no dry run.

    Order matters: the new version is created and tagged first, then ``previous`` is pointed at
    the old champion, and ``champion`` moves last — a failure at any step leaves the old
    champion serving.
    """
    name = spec.registry_name
    current = get_champion(settings, name)
    current_version = current.version if current else None
    if gate.verdict != "PASS":
        return RegistrationManifest(registry_name=name, action="skipped_failed_gate", version=None,
                                    champion_version=current_version, previous_version=None)
    if plan.dry_run:
        return RegistrationManifest(registry_name=name, action="skipped_dry_run", version=None,
                                    champion_version=current_version, previous_version=None)
    mlflow_client = use_store(settings)
    key = idempotency_key(plan, snapshot_id)
    existing = _version_with_key(mlflow_client, name, key)
    if existing is not None:
        return RegistrationManifest(registry_name=name, action="already_registered", version=existing,
                                    champion_version=current_version, previous_version=None)
    new_version = _create_version(mlflow_client, spec, plan, gate, snapshot_id, report_uri, gate.verdict)
    _make_champion(mlflow_client, name, new_version, current_version)
    return RegistrationManifest(registry_name=name, action="registered", version=new_version,
                                champion_version=new_version, previous_version=current_version)


def _ensure_registered_model(mlflow_client: MlflowClient, spec: ModelSpec) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(spec.registry_name)
    except MlflowException:
        mlflow_client.create_registered_model(spec.registry_name, tags={"refit.model": spec.name},
                                              description=spec.description)


def _version_with_key(mlflow_client: MlflowClient, name: str, key: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow_client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for version in versions:
        if version.tags.get("refit.idempotency_key") == key:
            return str(version.version)
    return None


class RegistryActionError(RuntimeError):
    """A manual promotion or rollback cannot be done; the message says what is missing."""


def _create_version(mlflow_client: MlflowClient, spec: ModelSpec, plan: RunPlan, gate: GateManifest, snapshot_id: str,
                    report_uri: str, verdict: str) -> str:
    """A new version of the model the gate put forward (the challenger, or the baseline it fell
    back to: never evaluation's validation winner), tagged with the run's lineage and its
    idempotency key."""
    _ensure_registered_model(mlflow_client, spec)
    model = gate.challenger_model
    tags = {
        "refit.idempotency_key": idempotency_key(plan, snapshot_id), "refit.snapshot_id": snapshot_id,
        "refit.spec_hash": plan.spec_hash, "refit.dag_run_id": plan.dag_run_id, "refit.run_key": plan.run_key,
        "refit.as_of": plan.as_of.isoformat(), "refit.candidate": model.candidate, "refit.verdict": verdict,
        "refit.report_uri": report_uri, "refit.code_version": code_version(),
    }
    version = mlflow_client.create_model_version(name=spec.registry_name, source=model.model_uri, run_id=model.run_id,
                                                 tags=tags, model_id=model.model_uri.removeprefix("models:/"))
    return str(version.version)


def _make_champion(mlflow_client: MlflowClient, name: str, version: str, current_version: str | None) -> None:
    # ``previous`` first, ``champion`` last: a failure in between leaves the old champion serving.
    if current_version is not None:
        mlflow_client.set_registered_model_alias(name, PREVIOUS, current_version)
    mlflow_client.set_registered_model_alias(name, CHAMPION, version)


def promote_run(spec: ModelSpec, plan: RunPlan, gate: GateManifest, snapshot_id: str, report_uri: str,
                reason: str, requested_by: str, settings: Settings) -> RegistrationManifest:
    """Promote the model a run's gate put forward after human review, whatever its verdict.

    The reason and the person are recorded as tags of the version (and the version keeps the
    run's idempotency key, so promoting twice does not register twice). Aliases move in the
    same order as an automatic promotion: ``previous`` first, ``champion`` last.
    """
    reason = _required_reason(reason)
    name = spec.registry_name
    mlflow_client = use_store(settings)
    current = get_champion(settings, name)
    key = idempotency_key(plan, snapshot_id)
    existing = _version_with_key(mlflow_client, name, key)
    if existing is None:
        existing = _create_version(mlflow_client, spec, plan, gate, snapshot_id, report_uri, "promoted manually")
    mlflow_client.set_model_version_tag(name, existing, "refit.manual_promotion_reason", reason)
    mlflow_client.set_model_version_tag(name, existing, "refit.promoted_by", requested_by)
    if current is not None and current.version == existing:
        return RegistrationManifest(registry_name=name, action="already_registered", version=existing,
                                    champion_version=existing, previous_version=None)
    _make_champion(mlflow_client, name, existing, current.version if current else None)
    return RegistrationManifest(registry_name=name, action="promoted_manually", version=existing,
                                champion_version=existing, previous_version=current.version if current else None)


def rollback(spec: ModelSpec, reason: str, requested_by: str, settings: Settings) -> RegistrationManifest:
    """Point ``champion`` back at ``previous``; ``previous`` then names the version rolled back
    from, so a second rollback undoes the first."""
    from mlflow.exceptions import MlflowException

    reason = _required_reason(reason)
    name = spec.registry_name
    mlflow_client = use_store(settings)
    current = get_champion(settings, name)
    try:
        previous = str(mlflow_client.get_model_version_by_alias(name, PREVIOUS).version)
    except MlflowException:
        previous = None
    if current is None or previous is None or previous == current.version:
        raise RegistryActionError(f"model {name!r}: rollback needs both a 'champion' and a 'previous' alias; "
                                  f"found champion={current.version if current else None}, previous={previous}")
    mlflow_client.set_model_version_tag(name, current.version, "refit.rolled_back_reason", reason)
    mlflow_client.set_model_version_tag(name, current.version, "refit.rolled_back_by", requested_by)
    _make_champion(mlflow_client, name, previous, current.version)
    return RegistrationManifest(registry_name=name, action="rolled_back", version=previous,
                                champion_version=previous, previous_version=current.version)


def _required_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 10:
        raise RegistryActionError(f"parameter 'reason': a manual registry change needs a reason of at least 10 "
                                  f"characters for the audit trail, got {reason!r}")
    return reason
