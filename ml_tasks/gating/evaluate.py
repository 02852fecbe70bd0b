"""The evaluate stage: score every candidate and the champion on the same test rows.

The challenger is the candidate (baseline included) with the best *validation* score — choosing on the test split
would bias the very estimate the gate relies on. Each model is loaded back from MLflow, so
what is evaluated is exactly what would be registered and served.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ml_tasks.core.columns import CHAMPION_COLUMN, HIGHER_IS_BETTER, WEIGHT
from ml_tasks.core.manifests import (
    EvaluationManifest,
    ModelRef,
    ModelScores,
    RunPlan,
    SplitManifest,
    TrainResult,
)
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import ModelSpec
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.io.store import ArtifactStore
from ml_tasks.models import feature_frame
from ml_tasks.registry.tracking import setup_experiment
from ml_tasks.registry.versions import get_champion

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel


class EvaluationError(RuntimeError):
    """A model could not be scored; the message names it."""


def choose_challenger(results: list[TrainResult], metric: str) -> TrainResult:
    """The candidate with the best validation score; a tie goes to the one listed first (simpler)."""
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    return max(results, key=lambda r: sign * r.validation_metrics[metric])


#: Rows per latency measurement: the guardrail is stated per 1,000 rows.
LATENCY_ROWS = 1_000


def serving_costs(model: PyFuncModel, local_model_dir: Path, X: pd.DataFrame, repeats: int = 5) -> dict[str, float]:
    """Prediction latency per 1,000 rows (best of ``repeats``, after a warm-up) and model size on disk."""
    import time

    batch = X.iloc[:LATENCY_ROWS]
    if len(batch) < LATENCY_ROWS:  # a small test split: repeat rows so the batch has the stated size
        batch = batch.iloc[np.resize(np.arange(len(batch)), LATENCY_ROWS)]
    model.predict(batch)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(batch)
        best = min(best, time.perf_counter() - started)
    size = sum(f.stat().st_size for f in Path(local_model_dir).rglob("*") if f.is_file())
    return {"latency_ms_per_1k": best * 1000.0, "size_mb": size / 2**20}


@contextmanager
def downloaded_model(model_uri: str) -> Iterator[tuple[PyFuncModel, Path]]:
    """The pyfunc model at ``model_uri`` and its local folder: fetched once, for scoring and sizing."""
    import mlflow

    from ml_tasks.registry.pyfunc import load_pyfunc

    with tempfile.TemporaryDirectory(prefix="refit-model-") as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        yield load_pyfunc(str(local)), local


def evaluate_candidates(
    spec: ModelSpec, plan: RunPlan, split: SplitManifest, results: list[TrainResult], store: ArtifactStore,
    settings: Settings,
) -> EvaluationManifest:
    from ml_tasks.registry.pyfunc import positive_probability

    if not results:
        raise EvaluationError("no trained candidates reached the evaluate stage; expected at least the baseline")
    setup_experiment(settings, spec)
    test = store.read_frame(split.test.uri)
    label, X = spec.columns.label, feature_frame(test, spec.features)
    predictions = pd.DataFrame({
        spec.columns.id: test[spec.columns.id].to_numpy(), "label": test[label].to_numpy(),
        "weight": test[WEIGHT].to_numpy(), spec.columns.timestamp: test[spec.columns.timestamp].to_numpy(),
    })
    for segment in dict.fromkeys([*spec.sampling.segments, *spec.acceptance.slices.columns]):
        predictions[segment] = test[segment].to_numpy()
    scores, costs = [], {}
    for result in results:
        with downloaded_model(result.model_uri) as (model, local):
            predictions[f"p_{result.candidate}"] = positive_probability(model, X)
            costs[result.candidate] = serving_costs(model, local, X)
        scores.append(ModelScores(name=result.candidate, metrics=compute_metrics(
            predictions.label, predictions[f"p_{result.candidate}"], predictions.weight)))
    champion = get_champion(settings, spec.registry_name)
    champion_scores, champion_note = None, None
    if champion is not None and champion.run_id in {r.mlflow_run_id for r in results}:
        # A re-run of the interval that produced the champion: the champion is one of these very
        # models, so comparing with it would test a model against itself. The gate decides as the
        # first run did (against the baseline), and registration finds the existing version.
        champion_note = f"champion v{champion.version} was trained by this run (a re-run of its interval)"
        champion = None
    if champion is not None:
        try:
            with downloaded_model(champion.model_uri) as (model, local):
                predictions[CHAMPION_COLUMN] = positive_probability(model, X)
                costs[CHAMPION_COLUMN] = serving_costs(model, local, X)
        except Exception as exc:
            raise EvaluationError(f"champion {champion.model_uri} could not score the test rows: {exc}") from exc
        champion_scores = ModelScores(name=f"champion v{champion.version}", metrics=compute_metrics(
            predictions.label, predictions[CHAMPION_COLUMN], predictions.weight))
    challenger = choose_challenger(results, spec.selection_metric)
    predictions_uri = plan.artifacts.predictions
    store.write_frame(predictions_uri, predictions)
    manifest = EvaluationManifest(
        challenger=challenger.candidate, candidates=scores, champion=champion_scores,
        champion_version=champion.version if champion else None, predictions_uri=predictions_uri,
        test_rows=len(test), uri=plan.artifacts.evaluation, serving_costs=costs,
        champion_note=champion_note,
        models={r.candidate: ModelRef(candidate=r.candidate, run_id=r.mlflow_run_id, model_uri=r.model_uri)
                for r in results},
    )
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest
