"""What MLflow 3 shows per model: the data a model was trained and tested on, and its test scores,
on the model itself (its LoggedModel), not only on the run that trained it.

* :func:`snapshot_dataset` is the run's snapshot as an MLflow dataset: its URI as the source and
  the SHA-256 of its Parquet bytes (taken at extraction) as the digest, without reading the data,
  so two runs that trained on the same bytes show the same dataset.
* :func:`log_test_scores` logs a model's test-set metrics on its LoggedModel, linked to the test
  split's dataset (``log_metrics(model_id=…, dataset=…)``), and records that split as a
  ``testing`` input of the run that logged the model. The champion gets this run's scores too, so
  its LoggedModel keeps one entry per test split it was compared on.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.data.dataset import Dataset

#: The length of a digest MLflow shows; a snapshot's SHA-256 is cut to it.
DIGEST_CHARS = 16


def model_id_of(model_uri: str) -> str | None:
    """The LoggedModel id in an MLflow 3 model URI (``models:/m-…``); None for any other URI
    (``runs:/…``, or a registered ``models:/<name>/<version>``)."""
    tail = model_uri.removeprefix("models:/")
    return tail if tail != model_uri and tail.startswith("m-") and "/" not in tail else None


def snapshot_dataset(uri: str, sha256: str | None, name: str) -> Dataset:
    """The snapshot at ``uri`` as an MLflow dataset whose digest is its content hash."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    return MetaDataset(source=resolve_dataset_source(uri), name=name,  # type: ignore[abstract]  # profile is optional
                       digest=(sha256 or "unknown")[:DIGEST_CHARS])


def test_dataset(frame: pd.DataFrame, uri: str, name: str, label: str) -> Dataset:
    """The test split as an MLflow dataset (digest computed by MLflow from its rows)."""
    from mlflow.data.pandas_dataset import from_pandas

    return from_pandas(frame, source=uri, name=name, targets=label)


#: How often a dataset input is logged again after a concurrent insert of the same dataset.
DATASET_RETRIES = 3


def log_dataset_input(client: MlflowClient, run_id: str, dataset: Dataset, context: str) -> None:
    """Record ``dataset`` as an input of ``run_id``, in ``context`` (``training``, ``testing``).

    MLflow's store inserts a dataset it has not seen (experiment, name, digest) and links the
    existing one otherwise, but checks and inserts in two steps: runs that log the same dataset
    at the same moment (retries, or parallel runs of one interval, which train on the same
    snapshot) collide on its unique key. The loser's retry finds the dataset and links it.
    """
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
    for attempt in range(DATASET_RETRIES + 1):
        try:
            client.log_inputs(run_id, datasets=[entity])
            return
        except MlflowException as exc:
            text = str(exc)
            if attempt == DATASET_RETRIES or not ("UniqueViolation" in text or "UNIQUE constraint" in text
                                                  or "Duplicate entry" in text):
                raise
            time.sleep(0.2 * (attempt + 1))


def log_test_scores(client: MlflowClient, run_id: str, model_uri: str, metrics: dict[str, float],
                    dataset: Dataset) -> bool:
    """``test_<metric>`` on the LoggedModel behind ``model_uri`` (and its run), linked to
    ``dataset``; the dataset as a ``testing`` input of ``run_id``. False, logging nothing, when
    the URI names no LoggedModel (a model logged before MLflow 3)."""
    from mlflow.entities import Metric

    model_id = model_id_of(model_uri)
    if model_id is None:
        return False
    entity = dataset._to_mlflow_entity()
    log_dataset_input(client, run_id, dataset, "testing")
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[
        Metric(key=f"test_{name}", value=float(value), timestamp=now, step=0, model_id=model_id,
               dataset_name=entity.name, dataset_digest=entity.digest)
        for name, value in metrics.items()])
    return True
