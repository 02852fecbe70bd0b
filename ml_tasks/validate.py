"""Validate a snapshot before anything trains on it.

Every check returns a :class:`CheckResult`; a failed check stops the run with a message that
names the column and what was expected. Softer findings become warnings that travel in the
manifest to the gating report.
"""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from ml_tasks.extract import STREAM, commit_snapshot, data_location
from ml_tasks.manifests import CheckResult, RunPlan, SnapshotManifest, ValidationManifest
from ml_tasks.spec import ModelSpec
from ml_tasks.storage import ArtifactStore


class DataValidationError(ValueError):
    """The snapshot breaks the spec; the message lists every failed check."""


def check_snapshot(spec: ModelSpec, frame: pd.DataFrame, as_of, source: str,
                   previous_rows: int | None = None) -> tuple[list[CheckResult], list[str]]:
    """Run every check on ``frame``; return (checks, warnings). Pure: no I/O.

    ``previous_rows`` is the row count of the model's previous snapshot, if any: a window far
    smaller or larger than the last one usually means a broken upstream load, not a real change.
    """
    cols = spec.columns
    importance = spec.sampling.importance_weight
    required = [cols.id, cols.label, cols.timestamp, cols.label_observed_at, *([cols.entity] if cols.entity else []),
                *spec.features.all, *([importance] if importance and importance not in spec.features.all else [])]
    missing = [c for c in required if c not in frame.columns]
    checks = [_check("required_columns", not missing, _missing_detail(source, missing, required, frame.columns))]
    if missing:
        return checks, []  # the other checks would only repeat the same cause
    checks.extend(_type_checks(spec, frame, source))
    if not all(c.passed for c in checks):
        return checks, []
    rows = len(frame)
    checks.append(_check("min_rows", rows >= spec.validation.min_rows,
                         f"{source}: {rows} rows in the window; expected at least {spec.validation.min_rows}"))
    label = frame[cols.label]
    outside = sorted(set(label.dropna().unique().tolist()) - set(spec.columns.label_values))
    checks.append(_check("label_values", not outside,
                         f"column {cols.label!r}: values {outside} outside the spec's {spec.columns.label_values}"))
    classes = label.nunique()
    checks.append(_check("two_classes", classes >= 2,
                         f"column {cols.label!r}: {classes} distinct value(s) {sorted(label.unique().tolist())}; "
                         "expected both classes"))
    checks.extend(_null_checks(spec, frame))
    checks.append(_finite_check(spec, frame))
    as_of = pd.Timestamp(as_of)
    future = int((frame[cols.timestamp] >= as_of).sum())
    checks.append(_check("no_future_rows", future == 0,
                         f"column {cols.timestamp!r}: {future} rows at or after the as-of date {as_of}"))
    immature = int((frame[cols.label_observed_at] > as_of).sum())
    checks.append(_check("labels_mature", immature == 0,
                         f"column {cols.label_observed_at!r}: {immature} labels observed after the as-of date {as_of} "
                         "(time leakage)"))
    before_event = int((frame[cols.label_observed_at] < frame[cols.timestamp]).sum())
    checks.append(_check("label_after_event", before_event == 0,
                         f"column {cols.label_observed_at!r}: {before_event} labels observed before their "
                         f"{cols.timestamp!r}; expected observation after the event"))
    # Streams may overlap (a curated set can repeat recent rows); within one stream ids are unique.
    duplicated = int(frame.duplicated([c for c in (STREAM, cols.id) if c in frame.columns]).sum())
    checks.append(_check("unique_ids", duplicated == 0, f"column {cols.id!r}: {duplicated} duplicated ids"))
    if importance:
        weights = frame[importance].to_numpy(dtype="float64")
        bad = int((~np.isfinite(weights) | (weights <= 0)).sum())
        checks.append(_check("importance_weights", bad == 0,
                             f"column {importance!r} (sampling.importance_weight): {bad} values not positive and "
                             "finite; expected every importance weight > 0"))
    bounds = spec.validation.row_count_ratio
    if bounds is not None and previous_rows:
        ratio = rows / previous_rows
        checks.append(_check("row_count_vs_previous", bounds.min <= ratio <= bounds.max,
                             f"{source}: {rows} rows is {ratio:.2f}x the previous snapshot's {previous_rows}; "
                             f"expected between {bounds.min}x and {bounds.max}x (validation.row_count_ratio)"))
    return checks, _warnings(spec, frame)


def _missing_detail(source: str, missing: list[str], required: list[str], present) -> str:
    if not missing:
        return "all present"
    extra = [c for c in present if c not in required]
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, extra, n=1, cutoff=0.6)
        hints.append(f"{name!r} (renamed to {close[0]!r}?)" if close else repr(name))
    return f"{source}: missing columns [{', '.join(hints)}]; the spec expects {required}"


_EXPECTED_KIND = {"timestamp": "a timestamp", "number": "a number", "integer": "an integer", "text": "text"}


def _kind(series: pd.Series) -> str:
    if pd.api.types.is_datetime64_any_dtype(series):
        return "timestamp"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return "number"
    return "text"


def _type_checks(spec: ModelSpec, frame: pd.DataFrame, source: str) -> list[CheckResult]:
    cols = spec.columns
    expected = {cols.timestamp: "timestamp", cols.label_observed_at: "timestamp", cols.id: "integer",
                cols.label: "integer", **({cols.entity: "integer"} if cols.entity else {}),
                **{n: "number" for n in spec.features.numeric}, **{n: "text" for n in spec.features.categorical}}
    results = []
    for name, kind in expected.items():
        actual = _kind(frame[name])
        ok = actual == kind or (kind == "number" and actual == "integer")
        results.append(_check(f"type:{name}", ok, f"{source}: column {name!r} holds {_EXPECTED_KIND[actual]} "
                                                  f"({frame[name].dtype}); expected {_EXPECTED_KIND[kind]}"))
    return results


def _check(name: str, passed: bool, detail: str) -> CheckResult:
    return CheckResult(name=name, passed=bool(passed), detail="ok" if passed else detail)


def _null_checks(spec: ModelSpec, frame: pd.DataFrame) -> list[CheckResult]:
    cols = spec.columns
    results = []
    for name in (cols.id, cols.label, cols.timestamp, cols.label_observed_at):
        nulls = int(frame[name].isna().sum())
        results.append(_check(f"no_nulls:{name}", nulls == 0, f"column {name!r}: {nulls} nulls; expected none"))
    for name in spec.features.all:
        limit = spec.validation.null_rate.get(name, spec.validation.max_null_rate)
        rate = float(frame[name].isna().mean()) if len(frame) else 0.0
        results.append(_check(f"null_rate:{name}", rate <= limit,
                              f"column {name!r}: null rate {rate:.3f} above the spec's limit {limit}"))
    return results


def _finite_check(spec: ModelSpec, frame: pd.DataFrame) -> CheckResult:
    bad = {}
    for name in spec.features.numeric:
        if name in spec.validation.allow_nonfinite:
            continue
        values = frame[name].to_numpy(dtype="float64", na_value=np.nan)
        count = int(np.isinf(values).sum())
        if count:
            bad[name] = count
    return _check("finite_numerics", not bad, f"numeric columns with inf values (expected finite): {bad}")


def _warnings(spec: ModelSpec, frame: pd.DataFrame) -> list[str]:
    warnings = []
    share = frame[spec.columns.label].value_counts(normalize=True)
    if len(share) and share.min() < spec.validation.warn_min_class_share:
        warnings.append(f"column {spec.columns.label!r}: minority class share {share.min():.4f} is below "
                        f"{spec.validation.warn_min_class_share}")
    for name in spec.features.numeric:
        if frame[name].nunique(dropna=True) <= 1:
            warnings.append(f"column {name!r}: constant in this window")
    return warnings


def previous_snapshot_rows(store: ArtifactStore, snapshot: SnapshotManifest) -> int | None:
    """Rows of the model's latest snapshot taken before this one's as-of date, if any."""
    earlier = []
    # Only committed (validated) snapshots count: their manifests sit under snapshots/.
    for uri in store.list(store.uri("snapshots", snapshot.model), suffix="manifest.json"):
        other = SnapshotManifest.model_validate(store.read_json(uri))
        if other.snapshot_id != snapshot.snapshot_id and other.as_of < snapshot.as_of:
            earlier.append(other)
    return max(earlier, key=lambda m: m.as_of).rows if earlier else None


def run_validation(spec: ModelSpec, plan: RunPlan, snapshot: SnapshotManifest, store: ArtifactStore) -> ValidationManifest:
    """Validate the stored snapshot; write the report; raise if any check failed."""
    frame = store.read_frame(data_location(snapshot))
    source = f"query {', '.join(spec.source.query_files)} (tables {', '.join(spec.source.tables)})"
    checks, warnings = check_snapshot(spec, frame, plan.as_of, source, previous_snapshot_rows(store, snapshot))
    failed = [c.detail for c in checks if not c.passed]
    report = {"snapshot_id": snapshot.snapshot_id, "rows": len(frame), "checks": [c.to_xcom() for c in checks],
              "warnings": warnings}
    store.write_json(f"{plan.run_prefix}/validation.json", report)
    if failed:
        raise DataValidationError(f"snapshot {snapshot.snapshot_id} failed {len(failed)} check(s): " + "; ".join(failed))
    manifest = ValidationManifest(snapshot_id=snapshot.snapshot_id, snapshot=commit_snapshot(snapshot, store),
                                  rows=len(frame), checks=checks, warnings=warnings,
                                  uri=f"{plan.run_prefix}/validation.json")
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest
