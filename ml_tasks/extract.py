"""Extract the as-of window from the warehouse into a content-addressed Parquet snapshot.

The query (``include/sql/<model>.sql``) takes ``:window_start`` and ``:as_of`` as bound
parameters; it does the point-in-time joins and keeps only labels observed by the as-of date.
Rows stream from the database in chunks into a Parquet file, so memory does not grow with the
window. The snapshot id is a hash of the content, so extracting the same interval twice gives
the same id and the second run writes nothing.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import DateTime, bindparam, create_engine, text

from ml_tasks.manifests import RunPlan, SnapshotManifest
from ml_tasks.spec import ModelSpec, query_path
from ml_tasks.storage import ArtifactStore

CHUNK_ROWS = 50_000


class ExtractError(RuntimeError):
    """The warehouse returned something the spec does not allow; the message names it."""


def extract_snapshot(
    spec: ModelSpec,
    plan: RunPlan,
    store: ArtifactStore,
    warehouse_url: str,
    include_dir: Path,
    chunk_rows: int = CHUNK_ROWS,
) -> SnapshotManifest:
    """Run the spec's query for the plan's window and store the result as a snapshot."""
    sql_file = query_path(spec, include_dir)
    params = {"window_start": plan.window_start, "as_of": plan.as_of}
    statement = text(sql_file.read_text()).bindparams(
        bindparam("window_start", type_=DateTime()), bindparam("as_of", type_=DateTime())
    )
    with tempfile.TemporaryDirectory(prefix="refit-extract-") as folder:
        tmp = Path(folder) / "snapshot.parquet"
        stats = _stream_to_parquet(spec, warehouse_url, statement, params, tmp, chunk_rows)
        if stats.rows == 0:
            raise ExtractError(
                f"empty window: the query {spec.source.query_file} over tables {', '.join(spec.source.tables)} returned no "
                f"rows with mature labels for [{plan.window_start:%Y-%m-%d}, {plan.as_of:%Y-%m-%d}); "
                "expected at least one row"
            )
        snapshot_id = stats.digest
        data_uri = store.uri("snapshots", spec.name, snapshot_id, "data.parquet")
        manifest_uri = store.uri("snapshots", spec.name, snapshot_id, "manifest.json")
        reused = store.exists(manifest_uri)
        # Until validation passes, the data waits in staging: nothing unvalidated is ever
        # visible under the snapshot's final name.
        staging_uri = None if reused else store.uri("staging", spec.name, snapshot_id, "data.parquet")
        if staging_uri is not None:
            store.put_file(tmp, staging_uri)
    return SnapshotManifest(
        model=spec.name,
        snapshot_id=snapshot_id,
        uri=data_uri,
        manifest_uri=manifest_uri,
        rows=stats.rows,
        columns=stats.schema,
        label_counts={str(k): v for k, v in sorted(stats.label_counts.items())},
        time_min=stats.time_min,
        time_max=stats.time_max,
        as_of=plan.as_of,
        window_start=plan.window_start,
        query_file=spec.source.query_file,
        params={k: v.isoformat() for k, v in params.items()},
        reused=reused,
        staging_uri=staging_uri,
    )


def commit_snapshot(snapshot: SnapshotManifest, store: ArtifactStore) -> SnapshotManifest:
    """Move a validated snapshot from staging to its final name; the manifest is written last,
    so its presence marks a complete, validated snapshot."""
    if snapshot.staging_uri is None:
        return snapshot
    committed = snapshot.model_copy(update={"staging_uri": None})
    if not store.exists(snapshot.manifest_uri):
        with store.local_copy(snapshot.staging_uri) as path:
            store.put_file(path, snapshot.uri)
        store.write_json(snapshot.manifest_uri, committed.to_xcom())
    store.delete(snapshot.staging_uri)
    return committed


def data_location(snapshot: SnapshotManifest) -> str:
    """Where the snapshot's rows can be read now: staging until validated, then the final name."""
    return snapshot.staging_uri or snapshot.uri


class _StreamStats:
    def __init__(self) -> None:
        self.rows = 0
        self.label_counts: dict[int, int] = {}
        self.time_min = None
        self.time_max = None
        self.schema: dict[str, str] = {}
        self._hash = hashlib.sha256()

    def update(self, spec: ModelSpec, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        label = spec.columns.label
        if label in frame:
            for value, count in frame[label].value_counts().items():
                self.label_counts[int(value)] = self.label_counts.get(int(value), 0) + int(count)
        stamps = frame[spec.columns.timestamp] if spec.columns.timestamp in frame else None
        if stamps is not None and len(stamps):
            low, high = stamps.min().to_pydatetime(), stamps.max().to_pydatetime()
            self.time_min = low if self.time_min is None else min(self.time_min, low)
            self.time_max = high if self.time_max is None else max(self.time_max, high)
        # Per-row hashes concatenated in row order: the digest does not depend on chunking.
        self._hash.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())

    @property
    def digest(self) -> str:
        return hashlib.sha256(self._hash.digest() + repr(sorted(self.schema.items())).encode()).hexdigest()[:16]


def _stream_to_parquet(spec, warehouse_url, statement, params, path: Path, chunk_rows: int) -> _StreamStats:
    stats = _StreamStats()
    engine = create_engine(warehouse_url)
    writer: pq.ParquetWriter | None = None
    try:
        with engine.connect() as conn:
            result = _execute(conn, statement, params, spec, chunk_rows)
            columns = list(result.keys())
            for rows in result.partitions(chunk_rows):
                frame = coerce_types(spec, pd.DataFrame.from_records(rows, columns=columns))
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    schema = table.schema
                    stats.schema = {f.name: str(f.type) for f in schema}
                    writer = pq.ParquetWriter(path, schema)
                writer.write_table(table.cast(schema))
                stats.update(spec, frame)
    finally:
        if writer is not None:
            writer.close()
        engine.dispose()
    return stats


def _execute(conn, statement, params, spec: ModelSpec, chunk_rows: int):
    from sqlalchemy.exc import DBAPIError

    try:
        return conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(statement, params)
    except DBAPIError as exc:
        # The driver's message names the missing or renamed column; say which query and tables too.
        raise ExtractError(f"query {spec.source.query_file} over tables {', '.join(spec.source.tables)} failed: "
                           f"{str(exc.orig).strip()}") from exc


def coerce_types(spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Give each known column its spec type; fail naming the column when a value cannot fit.

    Drivers disagree on types (SQLite hands back timestamps as text, PostgreSQL as datetimes),
    so the snapshot's schema comes from the spec, not from the driver.
    """
    cols = spec.columns
    frame = frame.copy()
    for name in (cols.timestamp, cols.label_observed_at):
        if name in frame:
            frame[name] = _convert(frame, name, "a timestamp", lambda s: pd.to_datetime(s).astype("datetime64[us]"))
    for name in spec.features.numeric:
        if name in frame:
            frame[name] = _convert(frame, name, "a number", lambda s: pd.to_numeric(s).astype("float64"))
    for name in spec.features.categorical:
        if name in frame:
            frame[name] = frame[name].astype("string")
    for name in (cols.id, cols.label, cols.entity):
        if name and name in frame:
            frame[name] = _convert(frame, name, "an integer", lambda s: pd.to_numeric(s).astype("int64"))
    return frame


def _convert(frame: pd.DataFrame, column: str, expected: str, convert):
    try:
        return convert(frame[column])
    except (ValueError, TypeError) as exc:
        bad = frame[column].head(3).tolist()
        raise ExtractError(f"column {column!r}: expected {expected}, got values like {bad} ({exc})") from None
