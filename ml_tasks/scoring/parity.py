"""Training/serving skew in the SQL: does the scoring query compute every feature as the training query does?

A spec names two queries over one warehouse: the training query (``source``) computes the
features of labelled rows, the scoring query (``scoring``) those of the rows the champion
scores. They are written twice, so they can drift apart: a feature expression edited in one
and not the other, a join that differs. The model then serves on inputs it never saw, and
nothing fails. :func:`check_feature_parity` runs both over one window in which labels exist,
matches rows by ``columns.id`` and compares every feature of the spec on every row.

* A numeric feature matches when both values are missing or both agree to ``rtol``
  (:data:`RTOL`: the two queries may reach the same number along different arithmetic);
  a categorical one when both are missing or the strings are equal.
* A labelled id of the window that the scoring query does not return is counted
  (``missing_in_scoring``): rows of the kind the model learned from would never be scored.
  Ids only the scoring query returns are expected (rows without a label yet).

Scoring checks first (:func:`check_before_scoring`, unless ``scoring.check_features`` is
false), on the champion's own training window (up to :data:`MAX_ROWS` of the rows it learned
from), and refuses to score when a feature differs: scores computed on other inputs than the
model learned from are worse than none, and the failed task tells the person on call. A check
that found no differing feature is kept in the store under :func:`check_key` (champion
version, both queries: what decides its outcome), so it runs once per champion and query edit,
not on every scoring run, even where the scoring query deliberately leaves rows out. Run it from the command
line too (``python -m ml_tasks check-scoring --model <name> --as-of <date>``) after editing
either query; ``tests/scoring/test_parity.py`` runs it on the demo spec. Written here because
no library compares two SQL queries' outputs feature by feature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.core.spec import ModelSpec, query_path, scoring_query, scoring_section
from ml_tasks.data.extract import feature_types
from ml_tasks.io.warehouse import TargetType, stream_query

#: Relative tolerance of a numeric feature's two values (float noise, not a different formula).
RTOL = 1e-9
#: Training rows compared at most: the check's memory stays bounded whatever the window holds.
MAX_ROWS = 200_000
#: Ids shown per mismatching feature.
MAX_EXAMPLES = 3


class FeatureSkewError(RuntimeError):
    """The scoring query computes a feature differently from the training query (the message names it)."""


@dataclass(frozen=True)
class FeatureMismatch:
    """A feature the two queries compute differently: on how many rows, and a few examples."""

    feature: str
    rows: int
    #: ``(id, training value, scoring value)``
    examples: list[tuple[int, Any, Any]]

    def describe(self) -> str:
        shown = "; ".join(f"id {i}: {a!r} in training, {b!r} in scoring" for i, a, b in self.examples)
        return f"feature {self.feature!r} differs on {self.rows} row(s), e.g. {shown}"


@dataclass(frozen=True)
class ParityReport:
    """What :func:`check_feature_parity` found over ``[window_start, as_of)``."""

    window_start: datetime
    as_of: datetime
    training_rows: int
    scoring_rows: int
    #: Rows both queries returned (matched by id), on which every feature was compared.
    compared_rows: int
    missing_in_scoring: int
    mismatches: list[FeatureMismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.compared_rows > 0 and not self.mismatches and self.missing_in_scoring == 0

    def problems(self) -> list[str]:
        found = [m.describe() for m in self.mismatches]
        if self.missing_in_scoring:
            found.append(f"{self.missing_in_scoring} labelled row(s) of the window are not returned by the scoring "
                         "query: rows like the ones the model learned from would never be scored")
        if self.compared_rows == 0:
            found.append("no row of the window is returned by both queries: nothing could be compared "
                         "(choose an as-of whose window holds labelled rows)")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "window_start": self.window_start.isoformat(), "as_of": self.as_of.isoformat(),
                "training_rows": self.training_rows, "scoring_rows": self.scoring_rows,
                "compared_rows": self.compared_rows, "missing_in_scoring": self.missing_in_scoring,
                "problems": self.problems()}


def check_feature_parity(spec: ModelSpec, include_dir: Path, warehouse_url: str, window_start: datetime,
                         as_of: datetime, *, max_rows: int | None = MAX_ROWS, engine: str = "auto") -> ParityReport:
    """Run the spec's training queries (every stream) and its scoring query over ``[window_start,
    as_of)`` and compare their features row by row (see the module).

    Memory is bounded by ``max_rows`` (None: every row): the training queries are read until
    that many rows (shared among the streams) and then stopped, and of the scoring query's
    rows only those with one of these ids are kept. Raises ``ValueError`` naming the spec when it
    has no ``scoring`` section; a query error is raised as the driver raised it."""
    scoring_section(spec)  # a spec without one raises, naming it
    types = _column_types(spec)
    params = {"window_start": window_start, "as_of": as_of}
    key = spec.columns.id
    names = spec.source.query_files
    per_stream = None if max_rows is None else max(1, max_rows // len(names))
    training = pd.concat([_read(warehouse_url, query_path(spec, include_dir, name).read_text(), params, types, engine,
                                limit=per_stream) for name in names], ignore_index=True)
    training = training.drop_duplicates(key).set_index(key)
    scoring, scoring_rows = _read_ids(warehouse_url, scoring_query(spec, include_dir), params, types, engine,
                                      key=key, ids=training.index)
    scoring = scoring.drop_duplicates(key).set_index(key)
    common = training.index.intersection(scoring.index)
    mismatches = [found for name in spec.features.numeric + spec.features.categorical
                  if (found := _compare(name, training.loc[common, name], scoring.loc[common, name],
                                        numeric=name in spec.features.numeric)) is not None]
    return ParityReport(window_start=window_start, as_of=as_of, training_rows=len(training),
                        scoring_rows=scoring_rows, compared_rows=len(common),
                        missing_in_scoring=int((~training.index.isin(scoring.index)).sum()), mismatches=mismatches)


def check_before_scoring(spec: ModelSpec, include_dir: Path, warehouse_url: str, champion_as_of: datetime | None,
                         *, engine: str = "auto") -> dict[str, Any]:
    """The check a scoring run makes first, on the champion's own training window
    (``source.window_days`` before its as-of: the rows it learned from, labelled by then; at most
    :data:`MAX_ROWS` of them). Returns what it compared (for the run's manifest); raises
    :class:`FeatureSkewError` naming each feature that differs. Nothing to compare (a champion
    without an as-of, a window without labelled rows) is recorded, not an error; nor are
    labelled rows the scoring query leaves out, which are counted (its rows are scored right)."""
    if champion_as_of is None:
        return {"ok": None, "skipped": "the champion version has no refit.as_of tag: its training window is unknown"}
    report = check_feature_parity(spec, include_dir, warehouse_url,
                                  champion_as_of - timedelta(days=spec.source.window_days), champion_as_of,
                                  engine=engine)
    if report.mismatches:
        raise FeatureSkewError(
            f"scoring query of spec {spec.name!r} computes features differently from its training query on the "
            f"labelled rows of [{report.window_start:%Y-%m-%d}, {report.as_of:%Y-%m-%d}): "
            f"{'; '.join(m.describe() for m in report.mismatches)}; expected the same values (fix either query, or "
            f"set scoring.check_features: false to score anyway)")
    return report.to_dict()


def check_key(spec: ModelSpec, include_dir: Path, champion_version: str) -> str:
    """What a passed check holds for: the champion version, both queries' text and the features.
    A later scoring run with the same key need not check again (``pipeline.score`` keeps it)."""
    texts = [query_path(spec, include_dir, name).read_text() for name in spec.source.query_files]
    texts += [scoring_query(spec, include_dir), spec.columns.id, *spec.features.numeric, *spec.features.categorical]
    return f"v{champion_version}-{hashlib.sha256(chr(0).join(texts).encode()).hexdigest()[:16]}"


def _column_types(spec: ModelSpec) -> dict[str, TargetType]:
    """The id and the features, typed as a snapshot types them."""
    return {spec.columns.id: "int64", **feature_types(spec)}


def _read(url: str, sql: str, params: dict[str, datetime], types: dict[str, TargetType], engine: str,
          limit: int | None) -> pd.DataFrame:
    """The query's ``types`` columns, its first ``limit`` rows (None: all); the query is stopped
    once they are read (closing the stream aborts it)."""
    kept, rows = [], 0
    batches = stream_query(url, sql, params, types, engine=engine)
    try:
        for batch in batches:
            kept.append(batch.select(list(types)))
            rows += batch.num_rows
            if limit is not None and rows >= limit:
                break
    finally:
        if isinstance(batches, Generator):  # stops the read-ahead thread and aborts the query
            batches.close()
    return pa.Table.from_batches(kept).slice(0, limit).to_pandas()


def _read_ids(url: str, sql: str, params: dict[str, datetime], types: dict[str, TargetType], engine: str, *,
              key: str, ids: pd.Index) -> tuple[pd.DataFrame, int]:
    """The query's rows whose ``key`` is among ``ids`` (all of it is read, little is kept), and
    how many rows it returned in all."""
    wanted = pa.array(np.asarray(ids, dtype=np.int64))
    kept, rows = [], 0
    for batch in stream_query(url, sql, params, types, engine=engine):
        rows += batch.num_rows
        kept.append(batch.select(list(types)).filter(pc.is_in(batch.column(key), value_set=wanted)))
    return pa.Table.from_batches(kept).to_pandas(), rows


def _compare(name: str, training: pd.Series, scoring: pd.Series, *, numeric: bool) -> FeatureMismatch | None:
    both_missing = training.isna().to_numpy() & scoring.isna().to_numpy()
    if numeric:
        a, b = training.to_numpy(dtype=float), scoring.to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            same = both_missing | np.isclose(a, b, rtol=RTOL, atol=0.0)
    else:
        same = both_missing | (training.to_numpy(dtype=object) == scoring.to_numpy(dtype=object))
    differing = np.flatnonzero(~same)
    if len(differing) == 0:
        return None
    examples = [(int(training.index[i]), _plain(training.iloc[i]), _plain(scoring.iloc[i]))
                for i in differing[:MAX_EXAMPLES]]
    return FeatureMismatch(feature=name, rows=len(differing), examples=examples)


def _plain(value: Any) -> Any:
    """A value as JSON and a message show it: None for a missing one, a Python number or string."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value.item() if isinstance(value, np.generic) else value
