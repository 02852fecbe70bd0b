"""The DAG ids Refit gives each model spec, and the model read back from a DAG id.

One place for the naming rule: the DAG files build ids with it, and the plugins (run notes,
report links, failure callbacks) and the demo read the model back with it.
"""

from __future__ import annotations

RETRAIN_PREFIX = "retrain_"
REGISTRY_PREFIX = "registry_"
SCORE_PREFIX = "score_"
MONITOR_PREFIX = "monitor_"


def retrain_dag_id(model: str) -> str:
    """``credit_default`` → ``retrain_credit_default``: the scheduled retraining DAG."""
    return f"{RETRAIN_PREFIX}{model}"


def registry_dag_id(model: str) -> str:
    """``credit_default`` → ``registry_credit_default``: the manual promote / rollback DAG."""
    return f"{REGISTRY_PREFIX}{model}"


def score_dag_id(model: str) -> str:
    """``credit_default`` → ``score_credit_default``: batch scoring with the champion (specs with ``scoring:``)."""
    return f"{SCORE_PREFIX}{model}"


def monitor_dag_id(model: str) -> str:
    """``credit_default`` → ``monitor_credit_default``: champion health and retrain triggers
    (specs with ``monitoring:``)."""
    return f"{MONITOR_PREFIX}{model}"


def model_of(dag_id: str, prefixes: tuple[str, ...] = (RETRAIN_PREFIX, REGISTRY_PREFIX, SCORE_PREFIX,
                                                        MONITOR_PREFIX)) -> str | None:
    """The model behind a Refit DAG id, or None for a DAG that is not one of ``prefixes``."""
    for prefix in prefixes:
        if dag_id.startswith(prefix) and len(dag_id) > len(prefix):
            return dag_id.removeprefix(prefix)
    return None


def retrain_model_of(dag_id: str) -> str | None:
    """The model of a retrain DAG id; None for any other DAG (registry DAGs included)."""
    return model_of(dag_id, (RETRAIN_PREFIX,))
