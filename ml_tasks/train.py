"""The train stage: fit one candidate on the training split, log it to MLflow.

Runs as ``python -m ml_tasks train --plan URI --split URI --candidate NAME`` in a local process
(embedded mode) or in the trainer container (deployed mode); the same function either way.
The result manifest is written to ``<run>/train/<candidate>.json``; a retry that finds it
(and its MLflow run finished) reuses it instead of training again.
"""

from __future__ import annotations

import time

from ml_tasks.manifests import RunPlan, SplitManifest, TrainResult
from ml_tasks.metrics import compute_metrics
from ml_tasks.models import build_candidate, feature_frame
from ml_tasks.sample import WEIGHT
from ml_tasks.settings import Settings
from ml_tasks.spec import ModelSpec
from ml_tasks.storage import ArtifactStore
from ml_tasks.tracking import MODEL_REQUIREMENTS, client, setup_experiment


def result_uri(plan: RunPlan, candidate: str) -> str:
    return f"{plan.run_prefix}/train/{candidate}.json"


def train_candidate(
    spec: ModelSpec, plan: RunPlan, split: SplitManifest, candidate_name: str, store: ArtifactStore, settings: Settings
) -> TrainResult:
    """Train ``candidate_name`` on the split, log params, metrics and model; return the result."""
    candidate_spec = spec.candidate(candidate_name)
    previous = _finished_result(plan, candidate_name, store, settings)
    if previous is not None:
        return previous
    import mlflow

    train = store.read_frame(split.train.uri)
    valid = store.read_frame(split.validation.uri)
    label = spec.columns.label
    X_train, X_valid = feature_frame(train, spec.features), feature_frame(valid, spec.features)
    model = build_candidate(candidate_spec, spec.features, seed=spec.sampling.seed)
    started = time.perf_counter()
    model.fit(X_train, train[label].to_numpy(), train[WEIGHT].to_numpy(),
              X_valid, valid[label].to_numpy(), valid[WEIGHT].to_numpy())
    fit_seconds = time.perf_counter() - started
    p_valid = model.predict_proba(X_valid)[:, 1]
    metrics = compute_metrics(valid[label], p_valid, valid[WEIGHT])

    experiment_id = setup_experiment(settings, spec)
    tags = {
        "refit.model": spec.name, "refit.candidate": candidate_name, "refit.family": candidate_spec.family,
        "refit.run_key": plan.run_key, "refit.dag_run_id": plan.dag_run_id, "refit.spec_hash": plan.spec_hash,
        "refit.as_of": plan.as_of.isoformat(), "refit.train_uri": split.train.uri,
    }
    from mlflow.models import infer_signature

    from ml_tasks.pyfunc import CandidateModel

    example = X_valid.head(5)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{candidate_name}-{plan.run_key}", tags=tags) as run:
        mlflow.log_params({"family": candidate_spec.family, **candidate_spec.params,
                           "train_rows": len(train), "validation_rows": len(valid)})
        mlflow.log_metrics({f"validation_{k}": v for k, v in metrics.items()} | {"fit_seconds": fit_seconds})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CandidateModel(model),
            signature=infer_signature(example, {"probability": p_valid[:5]}),
            input_example=example,
            pip_requirements=MODEL_REQUIREMENTS,
        )
    result = TrainResult(
        candidate=candidate_name, family=candidate_spec.family, mlflow_run_id=run.info.run_id,
        model_uri=info.model_uri, validation_metrics=metrics, train_rows=len(train),
        fit_seconds=round(fit_seconds, 3), reused=False,
    )
    store.write_json(result_uri(plan, candidate_name), result.to_xcom())
    return result


def _finished_result(plan: RunPlan, candidate: str, store: ArtifactStore, settings: Settings) -> TrainResult | None:
    uri = result_uri(plan, candidate)
    if not store.exists(uri):
        return None
    result = TrainResult.model_validate(store.read_json(uri))
    try:
        status = client(settings).get_run(result.mlflow_run_id).info.status
    except Exception:
        return None  # the tracking store was reset: train again
    return result.model_copy(update={"reused": True}) if status == "FINISHED" else None

