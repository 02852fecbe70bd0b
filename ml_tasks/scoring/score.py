"""Score one interval's rows with the champion (and the shadow model) in bounded memory.

The rows stream out of the warehouse as Arrow batches of ``scoring.chunk_rows``
(:func:`ml_tasks.io.warehouse.stream_query`, reading the next batch on a thread while this one
is scored); each batch becomes the frame a model's own MLflow signature asks for, is scored by
``predict`` of the plain pyfunc model, and its ids and scores are staged in the destination
(:mod:`ml_tasks.scoring.destination`). Nothing holds more than a few batches, whatever the
interval's size. The models are loaded from ``models:/<name>/<version>`` with ``mlflow.pyfunc``,
as any consumer of the registry loads them. Before any of it, the scoring query's features are
checked against the training query's (:mod:`ml_tasks.scoring.parity`): a feature computed
differently fails the run, naming it, and nothing is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from ml_tasks.core.manifests import ScoredTable, ScoringManifest, ScoringModel, ScoringPlan
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import ModelSpec, scoring_query, scoring_section
from ml_tasks.gating.evaluate import signature_columns, signature_frame
from ml_tasks.io.warehouse import ExtractTypeError, TargetType, available_engines, stream_query
from ml_tasks.registry.pyfunc import load_pyfunc, positive_probability
from ml_tasks.registry.tracking import use_store
from ml_tasks.scoring.destination import Stamp, score_writer
from ml_tasks.scoring.parity import check_before_scoring

if TYPE_CHECKING:
    from pathlib import Path

    from mlflow.pyfunc import PyFuncModel

log = logging.getLogger(__name__)

#: MLflow signature types read as numbers, and as text (what training logs for features).
_NUMERIC = frozenset({"double", "float", "long", "integer"})
_TEXT = frozenset({"string"})


class ScoringError(RuntimeError):
    """The rows to score are not what the models need; the message names the query and the column."""


@dataclass(frozen=True)
class _Scorer:
    """One model of the run and the table its scores go to."""

    table: str
    pinned: ScoringModel
    model: PyFuncModel
    #: (name, MLflow type, required) of each input column, from the model's signature.
    inputs: list[tuple[str, str, bool]]

    def scores(self, rows: pd.DataFrame) -> npt.NDArray[np.float64]:
        return positive_probability(self.model, signature_frame(rows, self.inputs))


def score_interval(spec: ModelSpec, plan: ScoringPlan, warehouse_url: str, include_dir: Path,
                   settings: Settings, engine: str = "auto",
                   passed_check: dict[str, Any] | None = None) -> ScoringManifest:
    """Score the rows of ``plan``'s interval and replace that interval's rows in the destination(s).

    ``passed_check``: the features check an earlier run passed for the same champion and queries
    (:func:`~ml_tasks.scoring.parity.check_key`); without it the check runs first."""
    started = time.perf_counter()
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    # Before any model loads or any row is written: a skewed feature fails the run, naming it.
    checked = passed_check or _checked_features(spec, plan, warehouse_url, include_dir, engine)
    scorers = _scorers(spec, plan, settings)
    rows = 0
    with score_writer(warehouse_url, [s.table for s in scorers]) as writer:
        for batch in _batches(spec, plan, warehouse_url, include_dir, scorers, engine):
            ids, frame = _ids(batch, spec.columns.id), batch.to_pandas()
            for scorer in scorers:
                writer.stage(scorer.table, ids, scorer.scores(frame))
            rows += batch.num_rows
        removed = writer.replace(plan.run_key, {s.table: Stamp(s.pinned.version, plan.run_key, scored_at)
                                                for s in scorers})
    if rows == 0:
        log.warning("scoring %s: the query selected no rows in [%s, %s)", spec.name, plan.window_start, plan.as_of)
    tables = [ScoredTable(table=s.table, version=s.pinned.version, rows=rows, replaced=removed[s.table])
              for s in scorers]
    return ScoringManifest(
        model=spec.name, run_key=plan.run_key, as_of=plan.as_of, window_start=plan.window_start, rows=rows,
        served=tables[0], shadow=tables[1] if len(tables) > 1 else None, shadow_note=plan.shadow_note,
        scored_at=scored_at, seconds=round(time.perf_counter() - started, 3),
        engine=available_engines(warehouse_url)[0] if engine == "auto" else engine, uri=plan.artifacts.manifest,
        feature_check=checked)


def _scorers(spec: ModelSpec, plan: ScoringPlan, settings: Settings) -> list[_Scorer]:
    """The champion first (served table), then the shadow model, if any (shadow table)."""
    use_store(settings)  # models:/ URIs resolve through the configured registry
    pinned = [(plan.destination, plan.champion)]
    if plan.shadow is not None and plan.shadow_destination is not None:
        pinned.append((plan.shadow_destination, plan.shadow))
    scorers = []
    for table, model_ref in pinned:
        model = load_pyfunc(model_ref.model_uri)
        scorers.append(_Scorer(table=table, pinned=model_ref, model=model, inputs=model_inputs(model, spec)))
    return scorers


def model_inputs(model: PyFuncModel, spec: ModelSpec) -> list[tuple[str, str, bool]]:
    """The model's input columns: its own signature's, or this spec's features for a model without one."""
    signature = signature_columns(model)
    if signature is not None:
        return signature
    return [*((n, "double", True) for n in spec.features.numeric), *((n, "string", True)
                                                                     for n in spec.features.categorical)]


def _column_types(spec: ModelSpec, scorers: list[_Scorer]) -> dict[str, TargetType]:
    """The Arrow type of every column the models read, and of the id: the query must return them all."""
    types: dict[str, TargetType] = {spec.columns.id: "int64"}
    for scorer in scorers:
        for name, kind, required in scorer.inputs:
            if required and kind in _NUMERIC:
                types[name] = "float64"
            elif required and kind in _TEXT:
                types[name] = "string"
    return types


def _batches(spec: ModelSpec, plan: ScoringPlan, url: str, include_dir: Path, scorers: list[_Scorer],
             engine: str) -> Iterator[pa.RecordBatch]:
    """The interval's rows in batches of ``chunk_rows``; a missing column or parameter names the query."""
    params = {"window_start": plan.window_start, "as_of": plan.as_of}
    with _query_errors_named(spec):
        # Closing this generator closes the stream too (yield from): its thread stops, its connection closes.
        yield from stream_query(url, scoring_query(spec, include_dir), params, _column_types(spec, scorers),
                                batch_rows=scoring_section(spec).chunk_rows, engine=engine)


def _checked_features(spec: ModelSpec, plan: ScoringPlan, url: str, include_dir: Path,
                      engine: str) -> dict[str, Any] | None:
    """The features check before scoring (:func:`~ml_tasks.scoring.parity.check_before_scoring`),
    unless the spec turns it off; a skewed feature raises ``FeatureSkewError``."""
    if not scoring_section(spec).check_features:
        return None
    with _query_errors_named(spec):
        return check_before_scoring(spec, include_dir, url, plan.champion.trained_as_of, engine=engine)


@contextmanager
def _query_errors_named(spec: ModelSpec) -> Iterator[None]:
    """A missing column or parameter in the scoring query, raised as a :class:`ScoringError` naming it."""
    scoring = scoring_section(spec)
    where = f"scoring.query_file {scoring.query_file!r}" if scoring.query_file else "scoring.query"
    try:
        yield
    except ExtractTypeError as exc:  # a column the models need is missing or of the wrong kind
        raise ScoringError(f"{where} of spec {spec.name!r}: {exc}") from exc
    except ValueError as exc:  # at call time: a placeholder other than :window_start and :as_of
        raise ScoringError(f"{where} of spec {spec.name!r}: {exc}; the scoring query may use only :window_start "
                           f"and :as_of") from exc


def _ids(batch: pa.RecordBatch, column: str) -> npt.NDArray[np.int64]:
    ids = batch.column(column)
    if ids.null_count:
        raise ScoringError(f"the scoring query returned {ids.null_count} row(s) without an id (columns.id "
                           f"{column!r}); expected every row to have one")
    return ids.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
