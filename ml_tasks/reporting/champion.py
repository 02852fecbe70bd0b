"""The champion's own health on this run's test rows, for the report and the notifications.

The gate asks whether the challenger may replace the champion; it also records whether the
champion itself still clears the spec's absolute bars on the very rows the challenger was tested
on (``GateManifest.champion_health``), what the policy ``acceptance.degraded_champion`` did when it
does not (``champion_note``). A champion that fails a bar opens the report and is notified on
every verdict; these functions shape that for both. Pure: manifests in, JSON-safe dicts out.
"""

from __future__ import annotations

from typing import Any

from ml_tasks.core.manifests import EvaluationManifest, GateCheck, GateManifest, RegistrationManifest
from ml_tasks.core.spec import ModelSpec

#: Registry actions after which the challenger is the champion.
_REPLACED = ("registered", "already_registered")


def bar_text(check: GateCheck) -> str:
    """``roc_auc 0.5600 < 0.7``: the value checked, how it stands to its bar, and the bar."""
    limit = check.threshold
    if limit is None:
        return check.reason
    if check.passed:
        relation = ">=" if check.name.endswith(":min") else "<="
    else:
        relation = "<" if check.challenger < limit else ">"
    return f"{check.metric} {check.challenger:.4f} {relation} {limit:g}"


def champion_health(evaluation: EvaluationManifest, gate: GateManifest,
                    registration: RegistrationManifest) -> dict[str, Any] | None:
    """The report's champion-health section; None when the champion was not checked against bars.

    ``degraded``: the champion fails a bar; ``failing``: those bars as :func:`bar_text`;
    ``note``: the gate's paragraph (bars, policy, what it did); ``outcome``: what became of the
    champion in the registry.
    """
    if not gate.champion_health or evaluation.champion is None:
        return None
    failing = [bar_text(c) for c in gate.champion_health if not c.passed]
    return {
        "champion": evaluation.champion.name, "version": evaluation.champion_version,
        "checks": [c.to_xcom() for c in gate.champion_health], "degraded": gate.champion_degraded,
        "failing": failing, "policy": gate.degraded_champion_policy, "note": gate.champion_note,
        "outcome": registry_outcome(evaluation.champion.name, gate, registration),
    }


def registry_outcome(champion: str, gate: GateManifest, registration: RegistrationManifest) -> str:
    """What became of the champion in the registry after this run's gate, in a few words."""
    if registration.action in _REPLACED:
        return f"challenger {gate.challenger} replaces it as v{registration.version}"
    if gate.verdict == "PASS":
        return f"challenger {gate.challenger} passed but was not registered ({registration.action.replace('_', ' ')})"
    return f"challenger {gate.challenger} not promoted, so {champion} stays champion"


def champion_inputs_note(evaluation: EvaluationManifest, spec: ModelSpec | None) -> str | None:
    """How the scored champion's own columns differ from this spec's features, when they do."""
    if spec is None or evaluation.champion is None or not evaluation.champion_columns:
        return None
    features = spec.features.all
    extra = [c for c in evaluation.champion_columns if c not in features]
    absent = [c for c in features if c not in evaluation.champion_columns]
    if not extra and not absent:
        return None
    parts = [f"it also takes {extra}, no longer features of this spec" if extra else "",
             f"it does not take {absent}, new features of this spec" if absent else ""]
    differences = "; ".join(part for part in parts if part)
    return (f"{evaluation.champion.name.capitalize()} was scored on its own signature's "
            f"{len(evaluation.champion_columns)} columns: {differences}")
