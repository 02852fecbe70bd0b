"""What the person on call asks first: who is champion, and how did the last run go?"""

from __future__ import annotations

from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import ModelSpec
from ml_tasks.io.store import ArtifactStore
from ml_tasks.registry.versions import PREVIOUS, get_champion
from ml_tasks.reporting.gate_results import recent_results


def model_status(spec: ModelSpec, settings: Settings, store: ArtifactStore) -> dict:
    champion = get_champion(settings, spec.registry_name)
    latest = store.layout.latest_report(spec.name)
    last_run = store.read_json(latest) if store.exists(latest) else None
    # Dry runs never move the latest pointer; the newest one is shown beside it.
    newest = recent_results(store, spec.name, limit=1)
    last_dry_run = newest[0].to_dict() if newest and newest[0].dry_run else None
    return {
        "model": spec.name,
        "registry_name": spec.registry_name,
        "champion": None if champion is None else {
            "version": champion.version, "run_id": champion.run_id, "model_uri": champion.model_uri,
            "as_of": champion.tags.get("refit.as_of"), "candidate": champion.tags.get("refit.candidate"),
            "report_uri": champion.tags.get("refit.report_uri"),
        },
        "previous_version": _previous_version(settings, spec.registry_name),
        "last_run": last_run,
        "last_dry_run": last_dry_run,
    }


def _previous_version(settings: Settings, registry_name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    from ml_tasks.registry.tracking import use_store

    try:
        return str(use_store(settings).get_model_version_by_alias(registry_name, PREVIOUS).version)
    except MlflowException:
        return None


def format_status(status: dict) -> str:
    lines = [f"model {status['model']} (registry {status['registry_name']})"]
    champion = status["champion"]
    if champion:
        lines.append(f"  champion: version {champion['version']} · {champion['candidate']} · as of "
                     f"{champion['as_of']} · run {champion['run_id']}")
    else:
        lines.append("  champion: none yet")
    if status["previous_version"]:
        lines.append(f"  previous: version {status['previous_version']}")
    last = status["last_run"]
    if last:
        lines.append(f"  last run: {last['verdict']} · as of {last['as_of']} · challenger {last['challenger']}"
                     f"{' · dry run' if last.get('dry_run') else ''}")
        lines.append(f"  report:   {last['html_uri']}")
    else:
        lines.append("  last run: none yet")
    dry = status.get("last_dry_run")
    if dry:
        lines.append(f"  last dry run: {dry['verdict']} · as of {dry['as_of']} · challenger {dry['challenger']}")
        lines.append(f"  report:   {dry['html_uri']}")
    return "\n".join(lines)
