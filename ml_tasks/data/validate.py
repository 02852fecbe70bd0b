"""Validate a snapshot before anything trains on it.

Every check returns a :class:`CheckResult`; a failed check stops the run with a message that
names the column and what was expected. Softer findings become warnings that travel in the
manifest to the gating report.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks.core.columns import STREAM
from ml_tasks.core.manifests import (
    CheckResult,
    RunPlan,
    SnapshotManifest,
    ValidationManifest,
)
from ml_tasks.core.spec import ModelSpec
from ml_tasks.data.extract import commit_snapshot, data_location
from ml_tasks.io.store import ArtifactStore, CorruptArtifactError, MissingArtifactError, StoreError, read_failure


class DataValidationError(ValueError):
    """The snapshot breaks the spec; the message lists every failed check."""


#: Rows per batch when a stored snapshot is profiled: memory stays flat whatever its size.
BATCH_ROWS = 262_144


@dataclass
class SnapshotProfile:
    """Everything the checks need to know about a snapshot, gathered one batch at a time.

    Counts add up across batches; the only state that grows with the data is the id column
    (8 bytes a row), kept to count duplicates exactly.
    """

    columns: list[str]
    kinds: dict[str, set[str]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    nulls: Counter[str] = field(default_factory=Counter)
    infs: Counter[str] = field(default_factory=Counter)
    labels: Counter[int] = field(default_factory=Counter)
    future: int = 0
    immature: int = 0
    before_event: int = 0
    bad_weights: int = 0
    first_value: dict[str, float] = field(default_factory=dict)
    varying: set[str] = field(default_factory=set)
    ids: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def kind(self, name: str) -> str:
        # An integer column with nulls in some batch reads as float there, as it would whole.
        seen = self.kinds.get(name, set())
        return "number" if seen == {"integer", "number"} else next(iter(seen), "text")

    def duplicated_ids(self) -> int:
        duplicated = 0
        for parts in self.ids.values():
            ids = np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype="int64")
            duplicated += int((ids[1:] == ids[:-1]).sum())
        return duplicated


def _typed_columns(spec: ModelSpec) -> dict[str, str]:
    cols = spec.columns
    return {cols.timestamp: "timestamp", cols.label_observed_at: "timestamp", cols.id: "integer",
            cols.label: "integer", **({cols.entity: "integer"} if cols.entity else {}),
            **dict.fromkeys(spec.features.numeric, "number"), **dict.fromkeys(spec.features.categorical, "text")}


def _required_columns(spec: ModelSpec) -> list[str]:
    cols = spec.columns
    importance = spec.sampling.importance_weight
    return [cols.id, cols.label, cols.timestamp, cols.label_observed_at, *([cols.entity] if cols.entity else []),
            *spec.features.all, *([importance] if importance and importance not in spec.features.all else [])]


def _note_types(profile: SnapshotProfile, spec: ModelSpec, batch: pd.DataFrame) -> None:
    for name in _typed_columns(spec):
        profile.kinds.setdefault(name, set()).add(_kind(batch[name]))
        profile.dtypes[name] = str(batch[name].dtype)


def _add_batch(profile: SnapshotProfile, spec: ModelSpec, batch: pd.DataFrame, as_of: pd.Timestamp) -> None:
    """Fold one batch into ``profile``. Assumes the columns and types already checked out."""
    cols = spec.columns
    profile.rows += len(batch)
    for name in (cols.id, cols.label, cols.timestamp, cols.label_observed_at, *spec.features.all):
        profile.nulls[name] += int(batch[name].isna().sum())
    for name in spec.features.numeric:
        values = batch[name].to_numpy(dtype="float64", na_value=np.nan)
        profile.infs[name] += int(np.isinf(values).sum())
        if name in profile.varying:
            continue
        present = values[~np.isnan(values)]
        if len(present):
            first = profile.first_value.setdefault(name, float(present[0]))
            if (present != first).any():
                profile.varying.add(name)
    profile.labels.update(batch[cols.label].value_counts(dropna=True).to_dict())
    profile.future += int((batch[cols.timestamp] >= as_of).sum())
    profile.immature += int((batch[cols.label_observed_at] > as_of).sum())
    profile.before_event += int((batch[cols.label_observed_at] < batch[cols.timestamp]).sum())
    # Streams may overlap (a curated set can repeat recent rows); within one stream ids are unique.
    ids = batch[cols.id]
    streams = batch[STREAM] if STREAM in batch.columns else pd.Series("", index=batch.index)
    for stream, part in ids.groupby(streams.astype(str), sort=False):
        profile.ids.setdefault(stream, []).append(part.dropna().to_numpy(dtype="int64"))
    importance = spec.sampling.importance_weight
    if importance:
        weights = batch[importance].to_numpy(dtype="float64", na_value=np.nan)
        profile.bad_weights += int((~np.isfinite(weights) | (weights <= 0)).sum())


def profile_snapshot(spec: ModelSpec, batches: Iterable[pd.DataFrame], as_of: datetime) -> SnapshotProfile:
    """Profile the batches of one snapshot (an empty frame still counts: it names the columns).

    When the first batch lacks a required column only the columns are recorded, since the checks
    stop at the missing column; no batch at all profiles as a snapshot without columns.
    """
    as_of = pd.Timestamp(as_of)
    profile: SnapshotProfile | None = None
    for batch in batches:
        if profile is None:
            profile = SnapshotProfile(columns=list(batch.columns))
            if any(c not in batch.columns for c in _required_columns(spec)):
                return profile
        _note_types(profile, spec, batch)
        if all(profile.kind(n) == kind or (kind == "number" and profile.kind(n) == "integer")
               for n, kind in _typed_columns(spec).items()):
            _add_batch(profile, spec, batch, as_of)
    return profile if profile is not None else SnapshotProfile(columns=[])


def check_snapshot(spec: ModelSpec, frame: pd.DataFrame, as_of: datetime, source: str,
                   previous_rows: int | None = None) -> tuple[list[CheckResult], list[str]]:
    """Run every check on ``frame``; return (checks, warnings). Pure: no I/O.

    ``previous_rows`` is the row count of the model's previous snapshot, if any: a window far
    smaller or larger than the last one usually means a broken upstream load, not a real change.
    """
    return check_profile(spec, profile_snapshot(spec, [frame], as_of), as_of, source, previous_rows)


def check_profile(spec: ModelSpec, profile: SnapshotProfile, as_of: datetime, source: str,
                  previous_rows: int | None = None) -> tuple[list[CheckResult], list[str]]:
    """The checks and warnings of a profiled snapshot (see :func:`check_snapshot`). Pure."""
    cols = spec.columns
    importance = spec.sampling.importance_weight
    required = _required_columns(spec)
    missing = [c for c in required if c not in profile.columns]
    checks = [_check("required_columns", not missing, _missing_detail(source, missing, required, profile.columns))]
    if missing:
        return checks, []  # the other checks would only repeat the same cause
    checks.extend(_type_checks(spec, profile, source))
    if not all(c.passed for c in checks):
        return checks, []
    rows = profile.rows
    checks.append(_check("min_rows", rows >= spec.validation.min_rows,
                         f"{source}: {rows} rows in the window; expected at least {spec.validation.min_rows}"))
    outside = sorted(set(profile.labels) - set(spec.columns.label_values))
    checks.append(_check("label_values", not outside,
                         f"column {cols.label!r}: values {outside} outside the spec's {spec.columns.label_values}"))
    classes = len(profile.labels)
    checks.append(_check("two_classes", classes >= 2,
                         f"column {cols.label!r}: {classes} distinct value(s) {sorted(profile.labels)}; "
                         "expected both classes"))
    checks.extend(_null_checks(spec, profile))
    checks.append(_finite_check(spec, profile))
    as_of = pd.Timestamp(as_of)
    checks.append(_check("no_future_rows", profile.future == 0,
                         f"column {cols.timestamp!r}: {profile.future} rows at or after the as-of date {as_of}"))
    checks.append(_check("labels_mature", profile.immature == 0,
                         f"column {cols.label_observed_at!r}: {profile.immature} labels observed after the as-of "
                         f"date {as_of} (time leakage)"))
    checks.append(_check("label_after_event", profile.before_event == 0,
                         f"column {cols.label_observed_at!r}: {profile.before_event} labels observed before their "
                         f"{cols.timestamp!r}; expected observation after the event"))
    duplicated = profile.duplicated_ids()
    checks.append(_check("unique_ids", duplicated == 0, f"column {cols.id!r}: {duplicated} duplicated ids"))
    if importance:
        checks.append(_check("importance_weights", profile.bad_weights == 0,
                             f"column {importance!r} (sampling.importance_weight): {profile.bad_weights} values not "
                             "positive and finite; expected every importance weight > 0"))
    bounds = spec.validation.row_count_ratio
    if bounds is not None and previous_rows:
        ratio = rows / previous_rows
        checks.append(_check("row_count_vs_previous", bounds.min <= ratio <= bounds.max,
                             f"{source}: {rows} rows is {ratio:.2f}x the previous snapshot's {previous_rows}; "
                             f"expected between {bounds.min}x and {bounds.max}x (validation.row_count_ratio)"))
    return checks, _warnings(spec, profile)


def _missing_detail(source: str, missing: list[str], required: list[str], present: list[str]) -> str:
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


def _type_checks(spec: ModelSpec, profile: SnapshotProfile, source: str) -> list[CheckResult]:
    results = []
    for name, kind in _typed_columns(spec).items():
        actual = profile.kind(name)
        ok = actual == kind or (kind == "number" and actual == "integer")
        results.append(_check(f"type:{name}", ok, f"{source}: column {name!r} holds {_EXPECTED_KIND[actual]} "
                                                  f"({profile.dtypes.get(name)}); expected {_EXPECTED_KIND[kind]}"))
    return results


def _check(name: str, passed: bool, detail: str) -> CheckResult:
    return CheckResult(name=name, passed=bool(passed), detail="ok" if passed else detail)


def _null_checks(spec: ModelSpec, profile: SnapshotProfile) -> list[CheckResult]:
    cols = spec.columns
    results = []
    for name in (cols.id, cols.label, cols.timestamp, cols.label_observed_at):
        nulls = profile.nulls[name]
        results.append(_check(f"no_nulls:{name}", nulls == 0, f"column {name!r}: {nulls} nulls; expected none"))
    for name in spec.features.all:
        limit = spec.validation.null_rate.get(name, spec.validation.max_null_rate)
        rate = profile.nulls[name] / profile.rows if profile.rows else 0.0
        results.append(_check(f"null_rate:{name}", rate <= limit,
                              f"column {name!r}: null rate {rate:.3f} above the spec's limit {limit}"))
    return results


def _finite_check(spec: ModelSpec, profile: SnapshotProfile) -> CheckResult:
    bad = {name: profile.infs[name] for name in spec.features.numeric
           if name not in spec.validation.allow_nonfinite and profile.infs[name]}
    return _check("finite_numerics", not bad, f"numeric columns with inf values (expected finite): {bad}")


def _warnings(spec: ModelSpec, profile: SnapshotProfile) -> list[str]:
    warnings = []
    labelled = sum(profile.labels.values())
    if labelled and min(profile.labels.values()) / labelled < spec.validation.warn_min_class_share:
        share = min(profile.labels.values()) / labelled
        warnings.append(f"column {spec.columns.label!r}: minority class share {share:.4f} is below "
                        f"{spec.validation.warn_min_class_share}")
    for name in spec.features.numeric:
        if name not in profile.varying:
            warnings.append(f"column {name!r}: constant in this window")
    return warnings


def previous_snapshot_rows(store: ArtifactStore, snapshot: SnapshotManifest) -> tuple[int | None, list[str]]:
    """Rows of the model's latest snapshot taken before this one's as-of date, if any, and a
    warning for each committed manifest that cannot be read (it is left out of the comparison;
    the warning says how to repair it)."""
    earlier, unreadable = [], []
    # Only committed (validated) snapshots count: their manifests sit under snapshots/.
    for uri in store.list(store.layout.snapshots(snapshot.model), suffix="manifest.json"):
        if uri == snapshot.manifest_uri:
            continue  # this snapshot itself: extraction verified it, or replaces it
        try:
            other = SnapshotManifest.model_validate(store.read_json(uri))
        except (StoreError, ValueError) as exc:  # ValueError: pydantic's ValidationError
            problem = f"corrupt: {exc.detail}" if isinstance(exc, CorruptArtifactError) else str(exc).splitlines()[0]
            unreadable.append(f"snapshot manifest {uri} cannot be read ({problem}), so that snapshot is left out of "
                              "the row-count comparison; to repair it, re-run its interval (extract re-extracts "
                              "it under the same id) or delete its folder")
            continue
        if other.snapshot_id != snapshot.snapshot_id and other.as_of < snapshot.as_of:
            earlier.append(other)
    return (max(earlier, key=lambda m: m.as_of).rows if earlier else None), unreadable


def _batches(parquet: pq.ParquetFile, uri: str) -> Iterator[pd.DataFrame]:
    """The snapshot's rows as pandas batches; an empty file still yields its (empty) schema.
    A page that cannot be decoded raises :class:`CorruptArtifactError` naming ``uri``; on S3 the pages
    are ranged reads, so a failed transfer is raised as it is, to be retried, not as corruption."""
    if parquet.metadata.num_rows == 0:
        yield parquet.schema_arrow.empty_table().to_pandas()
        return
    batches = parquet.iter_batches(batch_size=BATCH_ROWS)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as exc:
            raise read_failure(uri, exc) from None
        yield batch.to_pandas()


def run_validation(spec: ModelSpec, plan: RunPlan, snapshot: SnapshotManifest,
                   store: ArtifactStore) -> ValidationManifest:
    """Validate the stored snapshot; write the report; raise if any check failed.

    A snapshot that fails is rejected: its staged copy is removed (validation.json keeps the
    checks), and a retry of this stage raises the same error again.
    """
    if snapshot.staging_uri is not None and not store.exists(snapshot.staging_uri):
        snapshot = _committed_meanwhile(store, plan, snapshot)
    try:
        profile = _profile(spec, plan, store, data_location(snapshot))
    except MissingArtifactError:
        if snapshot.staging_uri is None:
            raise
        # The staged copy went between the look-up and the read: the same hand-over as above.
        snapshot = _committed_meanwhile(store, plan, snapshot)
        profile = _profile(spec, plan, store, data_location(snapshot))
    source = f"query {', '.join(spec.source.query_files)} (tables {', '.join(spec.source.tables)})"
    previous_rows, unreadable = previous_snapshot_rows(store, snapshot)
    checks, warnings = check_profile(spec, profile, plan.as_of, source, previous_rows)
    if snapshot.replaces_corrupt:
        warnings.insert(0, f"snapshot {snapshot.snapshot_id} was re-extracted under the same id because the "
                           f"stored copy could not be reused: {snapshot.replaces_corrupt}")
    warnings += unreadable
    failed = [c.detail for c in checks if not c.passed]
    report = {"snapshot_id": snapshot.snapshot_id, "rows": profile.rows, "checks": [c.to_xcom() for c in checks],
              "warnings": warnings}
    store.write_json(plan.artifacts.validation, report)
    if failed:
        if snapshot.staging_uri is not None:
            store.delete(snapshot.staging_uri)
        raise DataValidationError(_failure(snapshot.snapshot_id, failed))
    manifest = ValidationManifest(snapshot_id=snapshot.snapshot_id, snapshot=commit_snapshot(snapshot, store),
                                  rows=profile.rows, checks=checks, warnings=warnings,
                                  uri=plan.artifacts.validation)
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest


def _failure(snapshot_id: str, failed: list[str]) -> str:
    return f"snapshot {snapshot_id} failed {len(failed)} check(s): " + "; ".join(failed)


def _profile(spec: ModelSpec, plan: RunPlan, store: ArtifactStore, location: str) -> SnapshotProfile:
    with store.parquet_file(location) as parquet:
        return profile_snapshot(spec, _batches(parquet, location), plan.as_of)


def _committed_meanwhile(store: ArtifactStore, plan: RunPlan, snapshot: SnapshotManifest) -> SnapshotManifest:
    """The snapshot to validate when its staged copy is gone.

    Another run of this interval (a manual run beside the scheduled one, the CLI) staged the same
    rows under the same id (their content hash), validated them first, committed them and
    removed the staged copy both had written: validate the committed one. Otherwise the staged
    copy was removed by a failed validation, or never written.
    """
    if not store.exists(snapshot.manifest_uri):
        _rejected_before(store, plan, snapshot)
    return snapshot.model_copy(update={"staging_uri": None})


def _rejected_before(store: ArtifactStore, plan: RunPlan, snapshot: SnapshotManifest) -> NoReturn:
    """The staged copy is gone: raise the error of the validation that rejected (and removed) it,
    or say how to stage it again."""
    uri = plan.artifacts.validation
    report = store.read_json(uri) if store.exists(uri) else {}
    failed = [c["detail"] for c in report.get("checks", []) if not c["passed"]]
    if report.get("snapshot_id") == snapshot.snapshot_id and failed:
        raise DataValidationError(_failure(snapshot.snapshot_id, failed)
                                  + f" (the staged copy was removed when it failed; see {uri})")
    raise StoreError(f"staged snapshot {snapshot.staging_uri} does not exist: it was removed or never written; "
                     "expected the extract stage of this run to have staged it: re-run extract")
