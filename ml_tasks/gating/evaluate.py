"""The evaluate stage: score every candidate and the champion on the same test rows.

The challenger is the candidate (baseline included) with the best *validation* score — choosing on the test split
would bias the very estimate the gate relies on. Each model is loaded back from MLflow, so
what is evaluated is exactly what would be registered and served.

The candidates take this spec's features; the champion takes the columns of its own MLflow
signature, which differ when the spec's feature list changed since it was trained. The test rows
carry every column the spec's query selects (features or not), so a feature the spec dropped but
the query still selects reaches the champion. When the rows lack a column the champion needs, the
champion cannot be compared: the evaluation records why (``champion_error``, naming the columns)
instead of failing, and :func:`fail_unscored_champion` turns that into a failing gate check, so the
run ends in FAIL with a report and a notification, and the champion stays.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from ml_tasks.core.columns import CHAMPION_COLUMN, HIGHER_IS_BETTER, WEIGHT
from ml_tasks.core.manifests import (
    EvaluationManifest,
    GateCheck,
    GateManifest,
    ModelRef,
    ModelScores,
    RunPlan,
    SplitManifest,
    TrainResult,
)
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import FeaturesSpec, ModelSpec
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.io.store import ArtifactStore
from ml_tasks.models import feature_frame
from ml_tasks.registry.tracking import setup_experiment
from ml_tasks.registry.versions import ChampionInfo, get_champion

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


#: MLflow column types fed as numbers (float64) and as text (str or None), as :func:`feature_frame` does.
_NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
_TEXT_TYPES = frozenset({"string"})


def signature_columns(model: PyFuncModel) -> list[tuple[str, str, bool]] | None:
    """(name, MLflow type, required) of each input column of the model's signature; None for a
    model logged without named input columns."""
    schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]  # MLflow's own signature
    if schema is None or not schema.has_input_names():
        return None
    return [(str(col.name), str(getattr(col.type, "name", col.type)), bool(col.required)) for col in schema.inputs]


def signature_frame(rows: pd.DataFrame, columns: list[tuple[str, str, bool]]) -> pd.DataFrame:
    """``rows`` as a model with these signature columns takes them: its columns in its order,
    numbers as float64 and text as text or None (the dtypes training gave its signature). Optional
    columns the rows lack are left out; every required one must be in ``rows``."""
    present = [(name, kind) for name, kind, _ in columns if name in rows.columns]
    typed = FeaturesSpec.model_construct(numeric=[n for n, k in present if k in _NUMERIC_TYPES],
                                         categorical=[n for n, k in present if k in _TEXT_TYPES])
    frame = feature_frame(rows, typed)
    for name, kind in present:
        if kind not in _NUMERIC_TYPES | _TEXT_TYPES:
            frame[name] = rows[name]
    return frame[[name for name, _ in present]]


@dataclass
class ChampionScoring:
    """The champion on the test rows: its probabilities and serving costs, or why it has none."""

    columns: list[str]
    probabilities: npt.NDArray[np.float64] | None = None
    costs: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    error: str | None = None


def score_champion(champion: ChampionInfo, test: pd.DataFrame, features: FeaturesSpec) -> ChampionScoring:
    """Score the champion on the columns its own signature needs (this spec's features for a
    model logged without a signature). Required columns the rows lack make an error that names
    them, not an exception; any other failure raises :class:`EvaluationError`."""
    from ml_tasks.registry.pyfunc import positive_probability

    try:
        with downloaded_model(champion.model_uri) as (model, local):
            signature = signature_columns(model)
            if signature is None:
                signature = [(n, "double", True) for n in features.numeric]
                signature += [(n, "string", True) for n in features.categorical]
            columns = [name for name, _, _ in signature]
            missing = [name for name, _, required in signature if required and name not in test.columns]
            if missing:
                return ChampionScoring(columns=columns, missing=missing, error=(
                    f"champion v{champion.version} ({champion.model_uri}) cannot score the test rows: its signature "
                    f"needs column(s) {missing}, which this run's snapshot lacks (the spec's query no longer "
                    f"selects them)"))
            X = signature_frame(test, signature)
            return ChampionScoring(columns=list(X.columns), probabilities=positive_probability(model, X),
                                   costs=serving_costs(model, local, X))
    except Exception as exc:
        raise EvaluationError(f"champion {champion.model_uri} could not score the test rows: {exc}") from exc


def fail_unscored_champion(gate: GateManifest, evaluation: EvaluationManifest) -> GateManifest:
    """``gate`` with a failing ``champion:scoring`` check first and the verdict FAIL when the
    champion could not be scored (:attr:`EvaluationManifest.champion_error`); else ``gate`` itself.

    A champion that cannot be scored cannot be compared, so nothing may replace it: comparing the
    challenger with the baseline instead (the gate's rule without a champion) would promote over a
    champion no one has measured. A gate that already carries the check is returned unchanged.
    """
    if evaluation.champion_error is None or any(c.name == UNSCORED_CHAMPION_CHECK for c in gate.checks):
        return gate
    missing = evaluation.champion_missing_columns
    check = GateCheck(
        name=UNSCORED_CHAMPION_CHECK, metric="missing_columns", challenger=float(len(missing)), reference=None,
        difference=None, ci_low=None, ci_high=None, p_value=None, threshold=0.0, passed=False,
        reason=f"{evaluation.champion_error}: no challenger can be compared with it, so none replaces it "
               f"automatically (select the column(s) again, or promote by hand after review)")
    return gate.model_copy(update={"verdict": "FAIL", "checks": [check, *gate.checks]})


#: The gate check that fails a run whose champion could not be scored.
UNSCORED_CHAMPION_CHECK = "champion:scoring"


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
    scoring = score_champion(champion, test, spec.features) if champion is not None else None
    if champion is not None and scoring is not None and scoring.probabilities is not None:
        predictions[CHAMPION_COLUMN] = scoring.probabilities
        costs[CHAMPION_COLUMN] = scoring.costs
        champion_scores = ModelScores(name=f"champion v{champion.version}", metrics=compute_metrics(
            predictions.label, predictions[CHAMPION_COLUMN], predictions.weight))
    _log_test_scores(settings, spec, split, test, results, scores, champion, champion_scores)
    challenger = choose_challenger(results, spec.selection_metric)
    predictions_uri = plan.artifacts.predictions
    store.write_frame(predictions_uri, predictions)
    manifest = EvaluationManifest(
        challenger=challenger.candidate, candidates=scores, champion=champion_scores,
        champion_version=champion.version if champion else None, predictions_uri=predictions_uri,
        test_rows=len(test), uri=plan.artifacts.evaluation, serving_costs=costs,
        champion_note=champion_note,
        champion_columns=scoring.columns if scoring else [],
        champion_error=scoring.error if scoring else None,
        champion_missing_columns=scoring.missing if scoring else [],
        models={r.candidate: ModelRef(candidate=r.candidate, run_id=r.mlflow_run_id, model_uri=r.model_uri)
                for r in results},
    )
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest


def _log_test_scores(settings: Settings, spec: ModelSpec, split: SplitManifest, test: pd.DataFrame,
                     results: list[TrainResult], scores: list[ModelScores], champion: ChampionInfo | None,
                     champion_scores: ModelScores | None) -> None:
    """Each candidate's and the champion's test metrics on their LoggedModels, against this test
    split (:mod:`ml_tasks.registry.lineage`), so MLflow shows per model what it scored on what."""
    from ml_tasks.registry.lineage import log_test_scores, test_dataset
    from ml_tasks.registry.tracking import use_store

    client = use_store(settings)
    label = spec.columns.label
    columns = [*spec.features.numeric, *spec.features.categorical, label]
    dataset = test_dataset(test[columns], split.test.uri, f"{spec.name}-test", label)
    for result, score in zip(results, scores, strict=True):
        log_test_scores(client, result.mlflow_run_id, result.model_uri, score.metrics, dataset)
    if champion is not None and champion_scores is not None and champion.run_id:
        log_test_scores(client, champion.run_id, champion.source, champion_scores.metrics, dataset)
