"""How the shadow model did against the champion on the rows they both scored, once those rows'
labels have matured: the section the next retrain's gate report shows.

The latest scoring run wrote the champion's scores to the served table and the shadow model's
(``shadow: latest_challenger``) to ``<destination>_shadow``, under one run key. A later retrain
run's snapshot holds labels that matured by its as-of; the ids both tables scored and the
snapshot labels are compared as the gate compares models: ROC AUC with DeLong's paired test,
and log loss and Brier score side by side. Unweighted: these are every scored row, not a sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.core.manifests import ScoringManifest
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.evaluation.statistics.delong import delong_paired
from ml_tasks.io.warehouse.types import TargetType

SCORE_COLUMNS: dict[str, TargetType] = {"id": "int64", "score": "float64", "model_version": "string"}
#: Fewer matured rows (or fewer of a class) than this and the comparison says so instead.
MIN_ROWS = 200
MIN_CLASS = 10


def read_scores(warehouse_url: str, table: str, run_key: str) -> pd.DataFrame:
    """``id, score, model_version`` of one scoring run's rows in ``table``, read by the warehouse
    reader every stage uses (:func:`ml_tasks.io.warehouse.stream_query`)."""
    import pyarrow as pa

    from ml_tasks.io.warehouse import stream_query

    batches = list(stream_query(warehouse_url, f"SELECT id, score, model_version FROM {table} WHERE run_key = :run_key",
                                {"run_key": run_key}, SCORE_COLUMNS))
    if not batches:
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in SCORE_COLUMNS})
    return pa.Table.from_batches(batches).to_pandas()


def compare_shadow(scoring: ScoringManifest, served: pd.DataFrame, shadow: pd.DataFrame,
                   labelled: pd.DataFrame) -> dict[str, Any]:
    """Champion vs shadow on the scored ids whose labels are in ``labelled`` (``id``, ``label``). Pure."""
    assert scoring.shadow is not None
    both = (served.rename(columns={"score": "champion"})[["id", "champion"]]
            .merge(shadow.rename(columns={"score": "shadow"})[["id", "shadow"]], on="id")
            .merge(labelled[["id", "label"]], on="id"))
    section: dict[str, Any] = {
        "run_key": scoring.run_key, "window": [scoring.window_start.isoformat(), scoring.as_of.isoformat()],
        "champion_version": scoring.served.version, "shadow_version": scoring.shadow.version,
        "scored_rows": scoring.rows, "matured_rows": len(both), "positives": int(both["label"].sum()),
    }
    positives = section["positives"]
    if len(both) < MIN_ROWS or min(positives, len(both) - positives) < MIN_CLASS:
        section["note"] = (f"{len(both)} of the {scoring.rows} scored rows have matured labels ({positives} "
                           f"positive); at least {MIN_ROWS} with {MIN_CLASS} of each class are needed to compare")
        return section
    y = both["label"].to_numpy(dtype=int)
    champion, challenger = both["champion"].to_numpy(float), both["shadow"].to_numpy(float)
    auc = delong_paired(y, challenger, champion)
    section.update(
        champion=compute_metrics(y, champion), shadow=compute_metrics(y, challenger),
        roc_auc_difference=auc.difference, roc_auc_ci=list(auc.ci()), roc_auc_p_value=auc.p_value,
    )
    return section


def labelled_ids(snapshot: pd.DataFrame, id_column: str, label_column: str) -> pd.DataFrame:
    """``id, label`` from a snapshot's columns."""
    return pd.DataFrame({"id": snapshot[id_column].to_numpy(np.int64), "label": snapshot[label_column].to_numpy()})
