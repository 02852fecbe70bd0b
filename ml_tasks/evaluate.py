"""The evaluate stage: score every candidate and the champion on the same test rows.

The challenger is the candidate (baseline included) with the best *validation* score — choosing on the test split
would bias the very estimate the gate relies on. Each model is loaded back from MLflow, so
what is evaluated is exactly what would be registered and served.
"""

from __future__ import annotations

import pandas as pd

from ml_tasks.manifests import EvaluationManifest, ModelScores, RunPlan, SplitManifest, TrainResult
from ml_tasks.metrics import compute_metrics
from ml_tasks.models import feature_frame
from ml_tasks.registry import get_champion
from ml_tasks.sample import WEIGHT
from ml_tasks.settings import Settings
from ml_tasks.spec import HIGHER_IS_BETTER, ModelSpec
from ml_tasks.storage import ArtifactStore
from ml_tasks.tracking import setup_experiment

CHAMPION_COLUMN = "p_champion"


class EvaluationError(RuntimeError):
    """A model could not be scored; the message names it."""


def choose_challenger(results: list[TrainResult], metric: str) -> TrainResult:
    """The candidate with the best validation score; a tie goes to the one listed first (simpler)."""
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    return max(results, key=lambda r: sign * r.validation_metrics[metric])


def evaluate_candidates(
    spec: ModelSpec, plan: RunPlan, split: SplitManifest, results: list[TrainResult], store: ArtifactStore,
    settings: Settings,
) -> EvaluationManifest:
    import mlflow.pyfunc

    from ml_tasks.pyfunc import positive_probability

    if not results:
        raise EvaluationError("no trained candidates reached the evaluate stage; expected at least the baseline")
    setup_experiment(settings, spec)
    test = store.read_frame(split.test.uri)
    label, X = spec.columns.label, feature_frame(test, spec.features)
    predictions = pd.DataFrame({
        spec.columns.id: test[spec.columns.id].to_numpy(), "label": test[label].to_numpy(),
        "weight": test[WEIGHT].to_numpy(), spec.columns.timestamp: test[spec.columns.timestamp].to_numpy(),
    })
    for segment in spec.sampling.segments:
        predictions[segment] = test[segment].to_numpy()
    scores = []
    for result in results:
        predictions[f"p_{result.candidate}"] = positive_probability(mlflow.pyfunc.load_model(result.model_uri), X)
        scores.append(ModelScores(name=result.candidate,
                                  metrics=compute_metrics(predictions.label, predictions[f"p_{result.candidate}"], predictions.weight)))
    champion = get_champion(settings, spec.registry_name)
    champion_scores = None
    if champion is not None:
        try:
            model = mlflow.pyfunc.load_model(champion.model_uri)
            predictions[CHAMPION_COLUMN] = positive_probability(model, X)
        except Exception as exc:
            raise EvaluationError(f"champion {champion.model_uri} could not score the test rows: {exc}") from exc
        champion_scores = ModelScores(name=f"champion v{champion.version}",
                                      metrics=compute_metrics(predictions.label, predictions[CHAMPION_COLUMN], predictions.weight))
    challenger = choose_challenger(results, spec.selection_metric)
    predictions_uri = f"{plan.run_prefix}/predictions.parquet"
    store.write_frame(predictions_uri, predictions)
    manifest = EvaluationManifest(
        challenger=challenger.candidate, challenger_run_id=challenger.mlflow_run_id,
        challenger_model_uri=challenger.model_uri, candidates=scores, champion=champion_scores,
        champion_version=champion.version if champion else None, predictions_uri=predictions_uri,
        test_rows=len(test), uri=f"{plan.run_prefix}/evaluation.json",
    )
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest
