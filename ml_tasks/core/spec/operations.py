"""How a model's runs are operated, not what they compute: who must approve a promotion, and how
long each stage's tasks may run. None of it is part of the recipe hash (:data:`~ml_tasks.core.spec.
loading.NOT_RECIPE`): changing it gives no interval a new run key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

#: ``promotion``: ``auto`` moves the champion on a PASS with no person involved (no approval
#: task); ``approve_on_fail`` still promotes a PASS alone, and holds a FAIL for a person who may
#: accept its trade-off from the approval task's form; ``always_approve`` holds every verdict,
#: PASS included, for a person (high-stakes models that must never move on their own).
Promotion = Literal["auto", "approve_on_fail", "always_approve"]
PROMOTION_MODES: tuple[str, ...] = ("auto", "approve_on_fail", "always_approve")

#: ``approvers``: the user ids (as the Airflow auth manager knows them: the user name for the
#: simple auth manager and for Keycloak, the numeric id as text for FAB) who may answer the
#: approve task. Airflow itself refuses anyone else's answer (403, its HITL ``assigned_users``),
#: and the registry refuses an approval or a manual promotion by anyone else
#: (:func:`ml_tasks.registry.versions.require_approver`, which also takes the user's name).
Approver = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@+-]{1,256}$")]

#: Stages whose task timeout a spec may set (``timeouts:``), by the task ids of Refit's DAGs;
#: ``default`` covers every other task (the small bookkeeping tasks).
Stage = Literal["default", "plan", "extract", "validate", "sample", "split", "train", "backtest", "evaluate", "gate",
                "register", "report", "score", "monitor"]

#: Minutes a task of each stage may run when the spec's ``timeouts`` does not say: generous
#: bounds for the deployed sizes (millions of rows, GPU training), meant to catch a task that
#: hangs (a warehouse query that never returns, a trainer stuck on a device), not a slow one.
DEFAULT_TIMEOUT_MINUTES: dict[str, float] = {
    "default": 30, "plan": 15, "extract": 120, "validate": 60, "sample": 60, "split": 60, "train": 360,
    "backtest": 360, "evaluate": 120, "gate": 60, "register": 30, "report": 60, "score": 240, "monitor": 120,
}

#: Tasks that belong to a stage under another name (the approval's decision moves the registry).
TASK_STAGES: dict[str, str] = {"apply_approval": "register", "backtest_summary": "backtest"}

#: A week: a longer bound would hold the DAG's only active-run slot for good.
MAX_TIMEOUT_MINUTES = 7 * 24 * 60

TimeoutMinutes = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_MINUTES)]
Timeouts = dict[Stage, TimeoutMinutes]


def timeout_minutes(timeouts: Mapping[Any, float], task_id: str) -> float:
    """Minutes a task may run: the spec's value for its stage, else the stage's default, else the
    spec's (or the built-in) ``default``."""
    stage = TASK_STAGES.get(task_id, task_id)
    if stage in timeouts:
        return timeouts[stage]
    if stage in DEFAULT_TIMEOUT_MINUTES and stage != "default":
        return DEFAULT_TIMEOUT_MINUTES[stage]
    return timeouts.get("default", DEFAULT_TIMEOUT_MINUTES["default"])


def approval_needed(promotion: str, verdict: str, dry_run: bool = False) -> bool:
    """Whether a run with this verdict waits for a person before the registry moves."""
    if dry_run:
        return False  # a dry run never touches the registry, so there is nothing to approve
    return promotion == "always_approve" or (promotion == "approve_on_fail" and verdict != "PASS")
