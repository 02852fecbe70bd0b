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

Run it from the command line (``python -m ml_tasks check-scoring --model <name> --as-of <date>``)
after editing either query; ``tests/scoring/test_parity.py`` runs it on the demo spec. Written
here because no library compares two SQL queries' outputs feature by feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ml_tasks.core.spec import ModelSpec, query_path, scoring_query, scoring_section
from ml_tasks.io.warehouse import TargetType, stream_query

#: Relative tolerance of a numeric feature's two values (float noise, not a different formula).
RTOL = 1e-9
#: Ids shown per mismatching feature.
MAX_EXAMPLES = 3


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
                         as_of: datetime, *, engine: str = "auto") -> ParityReport:
    """Run the spec's training queries (every stream) and its scoring query over ``[window_start,
    as_of)`` and compare their features row by row (see the module). Raises ``ValueError`` naming
    the spec when it has no ``scoring`` section; a query error is raised as the driver raised it."""
    scoring_section(spec)  # a spec without one raises, naming it
    types = _column_types(spec)
    params = {"window_start": window_start, "as_of": as_of}
    training = pd.concat([_read(warehouse_url, query_path(spec, include_dir, name).read_text(), params, types, engine)
                          for name in spec.source.query_files], ignore_index=True)
    scoring = _read(warehouse_url, scoring_query(spec, include_dir), params, types, engine)
    key = spec.columns.id
    training = training.drop_duplicates(key).set_index(key)
    scoring = scoring.drop_duplicates(key).set_index(key)
    common = training.index.intersection(scoring.index)
    mismatches = [found for name in spec.features.numeric + spec.features.categorical
                  if (found := _compare(name, training.loc[common, name], scoring.loc[common, name],
                                        numeric=name in spec.features.numeric)) is not None]
    return ParityReport(window_start=window_start, as_of=as_of, training_rows=len(training),
                        scoring_rows=len(scoring), compared_rows=len(common),
                        missing_in_scoring=int((~training.index.isin(scoring.index)).sum()), mismatches=mismatches)


def _column_types(spec: ModelSpec) -> dict[str, TargetType]:
    types: dict[str, TargetType] = {spec.columns.id: "int64"}
    types |= dict.fromkeys(spec.features.numeric, "float64")
    types |= dict.fromkeys(spec.features.categorical, "string")
    return types


def _read(url: str, sql: str, params: dict[str, datetime], types: dict[str, TargetType], engine: str) -> pd.DataFrame:
    batches = list(stream_query(url, sql, params, types, engine=engine))
    return pa.Table.from_batches(batches).select(list(types)).to_pandas()


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
