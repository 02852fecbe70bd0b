"""The train stage: tune one candidate within the spec's budget, log it to MLflow.

Runs as ``python -m ml_tasks train --plan URI --split URI --candidate NAME`` in a local process
(embedded mode) or in the trainer container (deployed mode); the same function either way.

What one call does:

1. reads the training and validation splits (the validation split is later in time than
   the training split: early stopping and tuning never look at the future they predict);
2. with ``training.mode: warm_start``, loads the champion and continues from it when it is of
   the same family (otherwise it says why in the run's tags and trains from scratch);
3. spends the same tuning budget as every other candidate (:mod:`ml_tasks.training.tuning`);
4. fits the learning curve (a quarter, a half, all of the training rows);
5. logs parameters, trials, the curve, per-epoch history (networks), and the model with a
   signature and an input example; writes the result manifest to ``<run>/train/<candidate>.json``.

A retry that finds the manifest (and its MLflow run finished) reuses it instead of training
again; a network killed mid-run resumes from its last per-epoch checkpoint
(``<run>/train/<candidate>/checkpoints/``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ml_tasks.core.columns import HIGHER_IS_BETTER, WEIGHT
from ml_tasks.core.fault_points import reached
from ml_tasks.core.manifests import RunPlan, SnapshotManifest, SplitManifest, TrainResult
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import CandidateSpec, ModelSpec
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.io.store import ArtifactStore
from ml_tasks.models import Candidate, build_candidate, feature_frame
from ml_tasks.registry.tracking import model_requirements, setup_experiment, use_store
from ml_tasks.training.tuning import StepReporter, TuningResult, learning_curve, tune

if TYPE_CHECKING:
    from ml_tasks.models.calibrators import CalibratedCandidate

log = logging.getLogger(__name__)


@runtime_checkable
class Checkpointing(Protocol):
    """A candidate that checkpoints its training (the network): where to, and who hears of each."""

    checkpoint_dir: str | Path | None
    on_checkpoint: Callable[[Path], None] | None


class _Data:
    """The model inputs of the training and validation splits."""

    def __init__(self, spec: ModelSpec, train: pd.DataFrame, valid: pd.DataFrame) -> None:
        label = spec.columns.label
        self.X_train, self.X_valid = feature_frame(train, spec.features), feature_frame(valid, spec.features)
        self.y_train, self.y_valid = train[label].to_numpy(), valid[label].to_numpy()
        self.w_train, self.w_valid = train[WEIGHT].to_numpy(), valid[WEIGHT].to_numpy()
        self.t_valid = valid[spec.columns.timestamp].to_numpy()


def train_candidate(
    spec: ModelSpec, plan: RunPlan, split: SplitManifest, candidate_name: str, store: ArtifactStore, settings: Settings
) -> TrainResult:
    """Tune and train ``candidate_name`` on the split, log everything to MLflow; return the result."""
    candidate_spec = spec.candidate(candidate_name)
    previous = _finished_result(plan, candidate_name, store, settings)
    if previous is not None:
        return previous

    reached("train.inputs")  # the trainer is ready to read (bench/bench_cold_start.py times a process to here)
    data = _Data(spec, store.read_frame(split.train.uri), store.read_frame(split.validation.uri))
    champion, warm_note = _warm_start_source(spec, candidate_spec, settings)
    metric = spec.selection_metric
    started = time.perf_counter()
    with checkpoint_folder(store, plan, candidate_name) as checkpoints:
        def fit_and_score(params: dict, rows: np.ndarray | None = None, trial: int = 0,
                          on_step: StepReporter | None = None) -> tuple[Candidate, float]:
            model = build_candidate(candidate_spec.model_copy(update={"params": params}), spec.features,
                                    seed=spec.sampling.seed)
            if champion is not None:
                model.warm_start_from = champion
            if on_step is not None and model.reports_steps:
                model.on_step = on_step  # the tuner's pruning listens to the validation loss
            if isinstance(model, Checkpointing) and rows is None:
                model.checkpoint_dir = str(checkpoints.path / f"trial-{trial}")
                model.on_checkpoint = checkpoints.sync
            X, y, w = ((data.X_train, data.y_train, data.w_train) if rows is None else
                       (data.X_train.iloc[rows], data.y_train[rows], data.w_train[rows]))
            model.fit(X, y, w, data.X_valid, data.y_valid, data.w_valid)
            score = compute_metrics(data.y_valid, model.predict_proba(data.X_valid)[:, 1], data.w_valid)[metric]
            return model, score

        tuned = tune(candidate_spec,
                     lambda params, trial, on_step: fit_and_score(params, trial=trial, on_step=on_step),
                     trials=spec.training.trials, time_budget_seconds=spec.training.time_budget_seconds,
                     higher_is_better=HIGHER_IS_BETTER[metric], seed=spec.sampling.seed)
    fit_seconds = time.perf_counter() - started
    curve = (learning_curve(lambda rows: fit_and_score(tuned.params, rows)[1], len(data.y_train), spec.sampling.seed,
                            full_score=tuned.score) if spec.training.learning_curve else [])
    model, calibration, reliability_png = _calibrate(spec, tuned.model, data)
    p_valid = model.predict_proba(data.X_valid)[:, 1]
    metrics = compute_metrics(data.y_valid, p_valid, data.w_valid)
    reliability_uri = plan.artifacts.reliability_chart(candidate_name)
    store.write_bytes(reliability_uri, reliability_png)

    tags = {
        "refit.model": spec.name, "refit.candidate": candidate_name, "refit.family": candidate_spec.family,
        "refit.run_key": plan.run_key, "refit.dag_run_id": plan.dag_run_id, "refit.spec_hash": plan.spec_hash,
        "refit.as_of": plan.as_of.isoformat(), "refit.train_uri": split.train.uri,
        "refit.training_mode": spec.training.mode, "refit.warm_start": warm_note,
        # The recipe lets a later run retrain this model per backtest fold (like-for-like comparison).
        "refit.recipe": json.dumps({"family": candidate_spec.family, "params": _plain(tuned.params)}, sort_keys=True),
    }
    snapshot = (SnapshotManifest.model_validate(store.read_json(plan.artifacts.snapshot))
                if store.exists(plan.artifacts.snapshot) else None)  # absent when a stage runs on hand-made splits
    run, info = _log_to_mlflow(spec, settings, candidate_spec, plan, tags, data, model, tuned, curve, metrics,
                               fit_seconds, p_valid, calibration, reliability_png, snapshot)
    result = TrainResult(
        candidate=candidate_name, family=candidate_spec.family, mlflow_run_id=run.info.run_id,
        model_uri=info.model_uri, validation_metrics=metrics, train_rows=len(data.y_train),
        fit_seconds=round(fit_seconds, 3), reused=False, params=_plain(tuned.params),
        trials=len(tuned.trials), learning_curve=[[rows, score] for rows, score in curve],
        warm_start=warm_note, calibration={**calibration, "reliability_uri": reliability_uri},
    )
    store.write_json(plan.artifacts.train_result(candidate_name), result.to_xcom())
    return result


def _calibrate(spec: ModelSpec, model: Candidate, data: _Data) -> tuple[CalibratedCandidate, dict[str, Any], bytes]:
    """Calibrate on the validation window (later than training, earlier than test).

    Its earlier part fits each method, its later part picks the one with the lowest log loss,
    so the choice is made on rows the calibrator never saw. Returns the calibrated model (one
    object, so serving gets calibrated probabilities from one MLflow URI), a summary, and the
    reliability diagram before and after on the selection rows.
    """
    from ml_tasks.evaluation.charts import reliability_diagram_png
    from ml_tasks.models.calibrators import CalibratedCandidate
    from ml_tasks.training.calibration import fit_calibrator, split_calibration_window

    fit, select = split_calibration_window(data.t_valid, spec.calibration.selection_fraction)
    p = model.predict_proba(data.X_valid)[:, 1]
    y, w = data.y_valid, data.w_valid
    result = fit_calibrator(p[fit], y[fit], w[fit], p[select], y[select], w[select], spec.calibration)
    after = result.calibrator.transform(p[select])
    png = reliability_diagram_png({"before": (y[select], p[select], w[select]),
                                   f"after ({result.method})": (y[select], after, w[select])},
                                  bins=spec.calibration.ece_bins, title="Reliability on held-out calibration rows")
    summary = {"method": result.method, "select_metrics": result.select_metrics, "skipped": result.skipped,
               "fit_rows": result.fit_rows, "select_rows": result.select_rows}
    return CalibratedCandidate(model, result.calibrator), summary, png


def _log_to_mlflow(spec, settings, candidate_spec: CandidateSpec, plan, tags, data: _Data, model, tuned: TuningResult,
                   curve, metrics, fit_seconds, p_valid, calibration: dict, reliability_png: bytes,
                   snapshot: SnapshotManifest | None):
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from ml_tasks.registry.lineage import log_dataset_input, snapshot_dataset
    from ml_tasks.registry.pyfunc import log_served_model

    experiment_id = setup_experiment(settings, spec)
    close_abandoned_runs(settings, experiment_id, plan, candidate_spec.name)
    example = data.X_valid.head(5)
    metric = spec.selection_metric
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{candidate_spec.name}-{plan.run_key}",
                          tags={**tags, **_trainer_identity()}) as run:
        reached("train.run_started")
        mlflow.log_params({"family": candidate_spec.family, **_plain(tuned.params), "train_rows": len(data.y_train),
                           "validation_rows": len(data.y_valid), "tuning_trials": len(tuned.trials),
                           "tuning_pruned": sum(t.state == "pruned" for t in tuned.trials),
                           "tuning_stopped_by": tuned.stopped_by})
        mlflow.log_metrics({f"validation_{k}": v for k, v in metrics.items()} | {"fit_seconds": fit_seconds})
        for trial in tuned.trials:
            if trial.state == "complete":  # a pruned trial has no score
                mlflow.log_metric(f"trial_validation_{metric}", trial.score, step=trial.number)
        for rows, score in curve:
            mlflow.log_metric(f"learning_curve_validation_{metric}", score, step=rows)
        _log_network_history(getattr(model, "candidate", model))
        mlflow.set_tag("refit.calibration", calibration["method"])
        mlflow.log_metrics({f"calibration_{method}_{name}": value
                            for method, values in calibration["select_metrics"].items()
                            for name, value in values.items()})
        mlflow.log_dict(calibration, "calibration/calibration.json")
        _log_png(reliability_png, "calibration", "reliability.png")
        mlflow.log_dict({"trials": [vars(t) | {"params": _plain(t.params)} for t in tuned.trials],
                         "learning_curve": curve}, "tuning.json")
        dataset = from_pandas(data.X_train.assign(**{spec.columns.label: data.y_train}),
                                          source=tags["refit.train_uri"], name=f"{spec.name}-train",
                                          targets=spec.columns.label)
        client = mlflow.MlflowClient()
        log_dataset_input(client, run.info.run_id, dataset, "training")
        if snapshot is not None:
            log_dataset_input(client, run.info.run_id,
                              snapshot_dataset(snapshot.uri, snapshot.data_sha256, f"{spec.name}-snapshot"), "training")
        info = log_served_model(model, input_example=example, example_probability=p_valid[:5],
                                pip_requirements=model_requirements(candidate_spec.family))
    return run, info


def _log_png(png: bytes, artifact_path: str, name: str) -> None:
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="refit-png-") as folder:
        path = Path(folder) / name
        path.write_bytes(png)
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def _log_network_history(model) -> None:
    """Per-epoch losses and speed, device and peak memory of families that train in epochs."""
    import mlflow

    for entry in getattr(model, "history_", None) or []:
        step = int(entry["epoch"])
        mlflow.log_metrics({f"epoch_{k}": float(v) for k, v in entry.items()
                            if k != "epoch" and isinstance(v, (int, float)) and np.isfinite(v)}, step=step)
    if getattr(model, "device_", None):
        mlflow.set_tag("refit.device", model.device_)
    if getattr(model, "peak_memory_bytes_", None):
        mlflow.log_metric("peak_memory_mb", model.peak_memory_bytes_ / 2**20)
    if getattr(model, "resumed_from_epoch_", None) is not None:
        mlflow.set_tag("refit.resumed_from_epoch", str(model.resumed_from_epoch_))


def _warm_start_source(spec: ModelSpec, candidate: CandidateSpec, settings: Settings) -> tuple[Candidate | None, str]:
    """The champion's fitted model when this candidate can continue from it, and a note saying what happened."""
    if spec.training.mode != "warm_start":
        return None, "stateless"
    from ml_tasks.registry.versions import get_champion

    champion = get_champion(settings, spec.registry_name)
    if champion is None:
        return None, "no champion yet: trained from scratch"
    from ml_tasks.registry.pyfunc import fitted_candidate

    fitted = fitted_candidate(champion.model_uri)
    fitted = getattr(fitted, "candidate", fitted)  # continue the model under its calibrator
    probe = build_candidate(candidate, spec.features, seed=spec.sampling.seed)
    reason = probe.can_warm_start_from(fitted)
    if reason is not None:
        return None, f"{reason}: trained from scratch"
    return fitted, f"continued from champion v{champion.version}"


@dataclass(frozen=True)
class CheckpointFolder:
    """Where a trainer writes per-epoch checkpoints, and how each one reaches the artifact store.

    ``path`` is a local folder; ``sync`` (None on a local store, which ``path`` already is) uploads
    a checkpoint the model has just saved under ``path`` to the same place under the store.
    """

    path: Path
    sync: Callable[[Path], None] | None = None


@contextmanager
def checkpoint_folder(store: ArtifactStore, plan: RunPlan, candidate: str) -> Iterator[CheckpointFolder]:
    """Per-epoch checkpoints in the artifact store, so a killed trainer resumes when retried.

    On a local store the checkpoints are written straight into the store's folder. On S3 the
    trainer writes to a local folder and every saved checkpoint is uploaded to the run's prefix;
    a retried trainer (another container, maybe another host) first downloads what is there.
    Each upload is one whole object, so a trainer killed mid-upload leaves the previous epoch's;
    an upload that fails is logged and training goes on. Only families that checkpoint (the
    network) use the folder.
    """
    uri = plan.artifacts.checkpoints(candidate)
    if not store.is_s3:
        path = Path(uri)
        path.mkdir(parents=True, exist_ok=True)
        yield CheckpointFolder(path)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="refit-checkpoints-") as folder:
        root = Path(folder)
        for saved in store.list(uri):
            local = root / saved.removeprefix(f"{uri}/")
            local.parent.mkdir(parents=True, exist_ok=True)
            store.download(saved, local)

        def upload(path: Path) -> None:
            target = f"{uri}/{path.relative_to(root).as_posix()}"
            try:
                store.put_file(path, target)
            except Exception as exc:  # a checkpoint only saves time on a retry: never fail training for it
                log.warning("checkpoint %s not uploaded to %s (%s); a retry would start from the last one "
                            "that was", path.name, target, exc)

        yield CheckpointFolder(root, upload)


def _plain(params: dict) -> dict:
    """Parameters as JSON scalars (numpy numbers from the search become Python numbers)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def _trainer_identity() -> dict[str, str]:
    """Where this trainer runs: a retry reads it to tell an abandoned MLflow run from a live one."""
    return {"refit.trainer_host": socket.gethostname(), "refit.trainer_pid": str(os.getpid())}


def close_abandoned_runs(settings: Settings, experiment_id: str, plan: RunPlan, candidate: str) -> list[str]:
    """Mark this candidate's MLflow runs of this run key that a killed trainer left RUNNING as FAILED.

    A run is abandoned when its trainer is gone: on this host, its process no longer exists; on
    another host (another container), it belonged to this same Airflow run, which only retries a
    task after the previous try ended. A run of another process that is alive (a concurrent CLI
    run of the same interval) is left alone. Returns the ids of the runs closed.
    """
    from mlflow.entities import RunStatus

    client = use_store(settings)
    found = client.search_runs(
        [experiment_id], max_results=1000,
        filter_string=(f"tags.`refit.run_key` = '{plan.run_key}' and tags.`refit.candidate` = '{candidate}' "
                       "and attributes.status = 'RUNNING'"))
    closed = []
    for run in found:
        if _abandoned(run.data.tags, plan):
            client.set_tag(run.info.run_id, "refit.closed_as", "abandoned by a killed trainer; retried")
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            closed.append(run.info.run_id)
            log.warning("MLflow run %s of %s was left RUNNING by a killed trainer: marked FAILED",
                        run.info.run_id, candidate)
    return closed


def _abandoned(tags: dict[str, str], plan: RunPlan) -> bool:
    host, pid = tags.get("refit.trainer_host"), tags.get("refit.trainer_pid")
    if host == socket.gethostname() and pid and pid.isdigit():
        return not _alive(int(pid))
    return plan.in_dag_run and tags.get("refit.dag_run_id") == plan.dag_run_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _finished_result(plan: RunPlan, candidate: str, store: ArtifactStore, settings: Settings) -> TrainResult | None:
    uri = plan.artifacts.train_result(candidate)
    if not store.exists(uri):
        return None
    result = TrainResult.model_validate(store.read_json(uri))
    try:
        status = use_store(settings).get_run(result.mlflow_run_id).info.status
    except Exception:
        return None  # the tracking store was reset: train again
    return result.model_copy(update={"reused": True}) if status == "FINISHED" else None
