"""Extract the as-of window from the warehouse into a content-addressed Parquet snapshot.

Each source stream's query (``include/sql/*.sql``) takes ``:window_start`` and ``:as_of`` as
bound parameters; it does the point-in-time joins and keeps only labels observed by the as-of
date. Rows stream from the database as Arrow record batches (:mod:`ml_tasks.io.warehouse`
picks the fastest bounded-memory reader: binary ``COPY`` through ADBC on PostgreSQL, a chunked
cursor elsewhere) straight into a Parquet file, so memory does not grow with the window.

The snapshot id is a hash of the content, computed column by column over canonical bytes, so
it does not depend on how the rows were batched: extracting the same interval twice gives the
same id and the second run writes nothing. With several streams, each row carries its stream's
name in ``_stream`` and the manifest records each stream's rows.

The manifest also records the size and SHA-256 of the Parquet file. Before a committed snapshot
is reused, its manifest must read and agree with the fresh extraction, and its file must still
have that checksum (:func:`verified_snapshot`); a snapshot that fails is re-extracted under the
same id, which a correct extraction reproduces, and replaced when the new copy is validated.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.core.columns import STREAM
from ml_tasks.core.manifests import (
    RunPlan,
    SnapshotManifest,
    StrataCounts,
    StreamExtract,
)
from ml_tasks.core.redact import leaks, redact, url_secrets
from ml_tasks.core.spec import ModelSpec, StreamSpec, query_path
from ml_tasks.io.store import (
    ArtifactStore,
    CorruptArtifactError,
    MissingArtifactError,
    StoreError,
    file_checksum,
)
from ml_tasks.io.warehouse import (
    ExtractTypeError,
    TargetType,
    available_engines,
    stream_query,
)

CHUNK_ROWS = 131_072
log = logging.getLogger(__name__)
#: Temporary folders of extractions: ``refit-extract-<pid>-<random>`` under the temp directory.
_TMP_PREFIX = "refit-extract-"


class ExtractError(RuntimeError):
    """The warehouse returned something the spec does not allow; the message names it."""


def column_types(spec: ModelSpec) -> dict[str, TargetType]:
    """The Arrow type every role and feature column must have in a snapshot.

    Drivers disagree on types (SQLite hands back timestamps as text, PostgreSQL as datetimes),
    so the snapshot's schema comes from the spec, not from the driver.
    """
    cols = spec.columns
    types: dict[str, TargetType] = {cols.timestamp: "timestamp", cols.label_observed_at: "timestamp"}
    types |= feature_types(spec)
    types |= {name: "int64" for name in (cols.id, cols.label, cols.entity) if name}
    if spec.sampling.importance_weight:
        types[spec.sampling.importance_weight] = "float64"
    return types


def feature_types(spec: ModelSpec) -> dict[str, TargetType]:
    """The Arrow type of every feature: float64 for the numeric ones, string for the categorical."""
    types: dict[str, TargetType] = dict.fromkeys(spec.features.numeric, "float64")
    return types | dict.fromkeys(spec.features.categorical, "string")


def strata_columns(spec: ModelSpec) -> list[str]:
    """Columns whose combinations are the sampler's strata (stream, label, segments)."""
    return [*([STREAM] if spec.source.streams else []), spec.columns.label, *spec.sampling.segments]


def extract_snapshot(
    spec: ModelSpec,
    plan: RunPlan,
    store: ArtifactStore,
    warehouse_url: str,
    include_dir: Path,
    chunk_rows: int = CHUNK_ROWS,
    engine: str = "auto",
) -> SnapshotManifest:
    """Run every stream's query for the plan's window and stage the result as a snapshot.

    The data goes to ``staging/`` until validation commits it (:func:`commit_snapshot`), so
    nothing unvalidated is ever visible under the snapshot's final name. A snapshot already
    committed under the same id is reused only after :func:`verified_snapshot` finds it intact;
    otherwise this extraction is staged to replace it (``replaces_corrupt`` says why).

    The rows pass through a temporary folder (``refit-extract-<pid>-*``) that is removed when
    this returns or raises, and on SIGTERM too (how Airflow stops a task); folders left by a
    process killed outright are removed by the next extraction on the host.
    """
    _remove_orphaned_folders()
    # The handler first, then the folder: a SIGTERM in between must find the folder's removal armed.
    with _terminate_unwinds(), \
            tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{os.getpid()}-", ignore_cleanup_errors=True) as folder:
        return _extract(spec, plan, store, warehouse_url, include_dir, chunk_rows, engine, Path(folder))


def _extract(spec: ModelSpec, plan: RunPlan, store: ArtifactStore, warehouse_url: str, include_dir: Path,
             chunk_rows: int, engine: str, folder: Path) -> SnapshotManifest:
    stats = _SnapshotStats(spec)
    streams: list[StreamExtract] = []
    engine_used = _engine_name(warehouse_url, engine)
    tmp = folder / "snapshot.parquet"
    with _SnapshotWriter(tmp, tag_streams=bool(spec.source.streams)) as writer:
        for stream in spec.source.stream_list:
            params = stream_params(spec, plan, stream)
            before = stats.rows
            for batch in stream_batches(spec, stream, params, warehouse_url, include_dir, chunk_rows, engine):
                batch = writer.write(batch, stream.name)
                stats.update(batch)
            streams.append(StreamExtract(name=stream.name, query_file=stream.query_file, weight=stream.weight,
                                         params={k: v.isoformat() for k, v in params.items()},
                                         rows=stats.rows - before))
            if stats.rows == before:
                raise ExtractError(
                    f"empty window: the query {stream.query_file} over tables {', '.join(spec.source.tables)} "
                    f"returned no rows with mature labels for [{params['window_start']:%Y-%m-%d}, "
                    f"{params['as_of']:%Y-%m-%d}); expected at least one row")
    snapshot_id = stats.digest(writer.schema)
    layout = store.layout
    data_bytes, data_sha256 = file_checksum(tmp)
    first = streams[0]
    extracted = SnapshotManifest(
        model=spec.name,
        snapshot_id=snapshot_id,
        uri=layout.snapshot_data(spec.name, snapshot_id),
        manifest_uri=layout.snapshot_manifest(spec.name, snapshot_id),
        rows=stats.rows,
        columns={f.name: str(f.type) for f in writer.schema or []},
        label_counts={str(k): v for k, v in sorted(stats.label_counts.items())},
        # None only when every timestamp is null: the manifest's own validation rejects it by name.
        time_min=cast(datetime, stats.time_min),
        time_max=cast(datetime, stats.time_max),
        as_of=plan.as_of,
        window_start=plan.window_start,
        query_file=first.query_file,
        params=first.params,
        reused=False,
        streams=streams,
        engine=engine_used,
        strata=StrataCounts(columns=stats.strata_columns,
                            counts=[[*key, n] for key, n in stats.strata_counts.items()]),
        data_bytes=data_bytes,
        data_sha256=data_sha256,
    )
    problem = None
    if store.exists(extracted.manifest_uri):
        stored = verified_snapshot(store, extracted)
        if isinstance(stored, SnapshotManifest):
            return extracted.model_copy(update={"reused": True, "data_bytes": stored.data_bytes,
                                                "data_sha256": stored.data_sha256})
        problem = stored
        log.warning("snapshot %s is re-extracted under the same id: %s", snapshot_id, problem)
    staging_uri = layout.staging_data(spec.name, snapshot_id)
    store.put_file(tmp, staging_uri)
    return extracted.model_copy(update={"staging_uri": staging_uri, "replaces_corrupt": problem})


#: What a committed manifest must agree on with a fresh extraction of the same content.
_CONTENT_FIELDS = ("snapshot_id", "rows", "columns", "label_counts", "time_min", "time_max")


def verified_snapshot(store: ArtifactStore, extracted: SnapshotManifest) -> SnapshotManifest | str:
    """The manifest committed under ``extracted``'s id if that snapshot can be reused, else why not
    (a sentence that names the file at fault).

    The committed manifest must read, describe the same content as ``extracted`` (a fresh
    extraction: same id, rows, columns, labels and time range), and the data file must have the
    size and SHA-256 the manifest recorded. A manifest from before snapshots carried a checksum
    is checked the old way: the data file's Parquet footer must read and hold its row count.
    On S3 the check streams the object once (nothing is written to disk).
    """
    manifest_uri, data_uri = extracted.manifest_uri, extracted.uri
    try:
        stored = SnapshotManifest.model_validate(store.read_json(manifest_uri))
    except CorruptArtifactError as exc:
        return f"manifest {manifest_uri} is corrupt ({exc.detail})"
    except ValueError as exc:  # pydantic's ValidationError
        return f"manifest {manifest_uri} does not describe a snapshot ({str(exc).splitlines()[0]})"
    differs = [name for name in _CONTENT_FIELDS if getattr(stored, name) != getattr(extracted, name)]
    if differs:
        return (f"manifest {manifest_uri} disagrees with the rows extracted for its id on {', '.join(differs)} "
                f"(e.g. {differs[0]}={getattr(stored, differs[0])!r}, expected {getattr(extracted, differs[0])!r})")
    try:
        if stored.data_sha256 is None:
            with store.parquet_file(data_uri) as parquet:
                rows = parquet.metadata.num_rows
            return stored if rows == stored.rows else \
                f"data file {data_uri} holds {rows} rows; its manifest {manifest_uri} says {stored.rows}"
        size, sha256 = store.checksum(data_uri)
    except CorruptArtifactError as exc:
        return f"data file {data_uri} is corrupt ({exc.detail})"
    except StoreError as exc:  # the file is missing
        return str(exc)
    if (size, sha256) != (stored.data_bytes, stored.data_sha256):
        return (f"data file {data_uri} is corrupt: {size} bytes with SHA-256 {sha256[:16]}..., but its manifest "
                f"{manifest_uri} recorded {stored.data_bytes} bytes with SHA-256 {stored.data_sha256[:16]}...")
    return stored


def commit_snapshot(snapshot: SnapshotManifest, store: ArtifactStore) -> SnapshotManifest:
    """Move a validated snapshot from staging to its final name; the manifest is written last,
    so its presence marks a complete, validated snapshot. A snapshot staged to replace a corrupt
    one (``replaces_corrupt``) loses the old manifest first, so no reader trusts the old one
    while the data is replaced."""
    if snapshot.staging_uri is None:
        return snapshot
    committed = snapshot.model_copy(update={"staging_uri": None})
    if snapshot.replaces_corrupt is not None:
        store.delete(snapshot.manifest_uri)
    if not store.exists(snapshot.manifest_uri):
        try:
            store.copy(snapshot.staging_uri, snapshot.uri)
        except MissingArtifactError:
            # A concurrent run of this interval committed the same rows and removed the staged copy.
            if not store.exists(snapshot.manifest_uri):
                raise
            return committed
        store.write_json(snapshot.manifest_uri, committed.to_xcom())
    store.delete(snapshot.staging_uri)
    return committed


def data_location(snapshot: SnapshotManifest) -> str:
    """Where the snapshot's rows can be read now: staging until validated, then the final name."""
    return snapshot.staging_uri or snapshot.uri


def stream_params(spec: ModelSpec, plan: RunPlan, stream: StreamSpec) -> dict[str, datetime]:
    """The bound parameters of one stream's query: its own window ending at the as-of date."""
    days = spec.source.stream_window_days(stream)
    return {"window_start": plan.as_of - timedelta(days=days), "as_of": plan.as_of}


def _engine_name(url: str, engine: str) -> str:
    try:
        return available_engines(url)[0] if engine == "auto" else engine
    except ValueError as exc:  # an unparsable URL, shown with its password hidden
        raise ExtractError(str(exc)) from None


@contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM removes this process's extraction folders
    (``refit-extract-<pid>-*``, however far their creation got) and raises SystemExit in the main thread,
    so ``finally`` blocks and context managers (a staged upload, the connection) clean up too.

    Airflow stops a task with SIGTERM (then SIGKILL if it lingers), and the default action ends
    the process at once, leaving the temporary folder behind. The folder goes first, in the
    handler itself: unwinding may wait for the reading thread to leave the driver, and a SIGKILL
    in that wait must find nothing left to remove. A handler installed before (Airflow's task
    runner calls the operator's ``on_kill``) runs next; an ignored SIGTERM stays ignored. Off the
    main thread, where Python cannot install handlers, nothing changes.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        for folder in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}{os.getpid()}-*"):
            shutil.rmtree(folder, ignore_errors=True)
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_orphaned_folders() -> None:
    """Remove the temporary folders of extractions whose process is gone (killed by SIGKILL)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        pid = folder.name.removeprefix(_TMP_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stream_batches(spec: ModelSpec, stream: StreamSpec, params: dict[str, datetime], url: str, include_dir: Path,
                    chunk_rows: int, engine: str) -> Iterator[pa.RecordBatch]:
    """Record batches of one stream with the spec's types; every failure names the query."""
    sql = query_path(spec, include_dir, stream.query_file).read_text()
    source = f"query {stream.query_file} over tables {', '.join(spec.source.tables)}"
    try:
        yield from stream_query(url, sql, params, column_types(spec), batch_rows=chunk_rows, engine=engine)
    except ExtractTypeError as exc:
        raise ExtractError(f"{source}: {exc}") from exc
    except ExtractError:
        raise
    except Exception as exc:
        # The driver's message names the missing or renamed column; say which query and tables too.
        # It may also quote the warehouse URL, or a piece of it, so its password is hidden, and
        # the driver's own exception is chained only when its traceback shows no secret.
        secrets = url_secrets(url)
        message = redact(str(getattr(exc, "orig", None) or exc).strip(), secrets)
        cause = None if leaks(exc, secrets) else exc
        raise ExtractError(f"{source} failed: {type(exc).__name__}: {message}") from cause


class _SnapshotWriter:
    """Parquet writer that fixes the schema from the first batch and tags rows with their stream."""

    def __init__(self, path: Path, tag_streams: bool) -> None:
        self.path = path
        self.tag_streams = tag_streams
        self.schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> _SnapshotWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self._writer.close()

    def write(self, batch: pa.RecordBatch, stream: str) -> pa.RecordBatch:
        """Write one batch; return it as written (stream column added, types conformed)."""
        if self.tag_streams:
            batch = batch.append_column(STREAM, pa.repeat(pa.scalar(stream, pa.large_string()), batch.num_rows))
        if self._writer is None:
            self.schema = batch.schema
            self._writer = pq.ParquetWriter(self.path, self.schema)
        elif batch.schema != self.schema:
            batch = _conform(batch, self.schema, stream)
        if batch.num_rows:
            self._writer.write_batch(batch)
        return batch


def _conform(batch: pa.RecordBatch, schema: pa.Schema, stream: str) -> pa.RecordBatch:
    """Cast a later stream's batch to the first stream's schema (same columns, compatible types)."""
    if batch.schema.names != schema.names:
        raise ExtractError(f"stream {stream!r}: columns {batch.schema.names} differ from the first stream's "
                           f"{schema.names}; every stream's query must return the same columns")
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ExtractError(f"stream {stream!r}: column types differ from the first stream's: {exc}") from None


class _SnapshotStats:
    """Row count, label balance, time range, strata counts and content hash, batch by batch."""

    def __init__(self, spec: ModelSpec) -> None:
        self.label = spec.columns.label
        self.timestamp = spec.columns.timestamp
        self.strata_columns = strata_columns(spec)
        self.rows = 0
        self.label_counts: dict[int, int] = {}
        self.strata_counts: dict[tuple[Any, ...], int] = {}
        self.time_min: datetime | None = None
        self.time_max: datetime | None = None
        self._columns: dict[str, _ColumnHash] = {}

    def update(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.rows += batch.num_rows
        for item in pc.value_counts(batch.column(self.label)).to_pylist():
            value = item["values"]
            self.label_counts[value] = self.label_counts.get(value, 0) + item["counts"]
        low, high = pc.min_max(batch.column(self.timestamp)).values()
        if low.is_valid:
            self.time_min = low.as_py() if self.time_min is None else min(self.time_min, low.as_py())
            self.time_max = high.as_py() if self.time_max is None else max(self.time_max, high.as_py())
        self._count_strata(batch)
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            self._columns.setdefault(name, _ColumnHash()).update(column)

    def _count_strata(self, batch: pa.RecordBatch) -> None:
        present = [c for c in self.strata_columns if c in batch.schema.names]
        if present != self.strata_columns:
            return  # a missing column: validation names it
        grouped = pa.Table.from_batches([batch.select(present)]).group_by(present).aggregate([([], "count_all")])
        for row in grouped.to_pylist():
            key = tuple(row[c] for c in present)
            self.strata_counts[key] = self.strata_counts.get(key, 0) + row["count_all"]

    def digest(self, schema: pa.Schema | None) -> str:
        whole = hashlib.sha256(repr([(f.name, str(f.type)) for f in schema or []]).encode())
        for name in sorted(self._columns):
            whole.update(name.encode() + self._columns[name].digest())
        return whole.hexdigest()[:16]


class _ColumnHash:
    """Hash of a column's values that is the same however the rows were split into batches.

    It feeds canonical bytes (validity as one byte a row, fixed-width values with nulls zeroed,
    string lengths and bytes) to running hashes, so the boundaries between batches vanish.
    """

    def __init__(self) -> None:
        self._validity = hashlib.sha256()
        self._values = hashlib.sha256()
        self._lengths = hashlib.sha256()

    def update(self, column: pa.Array) -> None:
        if isinstance(column, pa.ChunkedArray):
            for chunk in column.chunks:
                self.update(chunk)
            return
        self._validity.update(np.asarray(column.is_valid(), dtype=np.uint8).tobytes())
        kind = column.type
        if pa.types.is_dictionary(kind):
            column, kind = column.dictionary_decode(), kind.value_type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
                or pa.types.is_large_binary(kind):
            filled = column.fill_null("")
            self._lengths.update(np.asarray(pc.binary_length(filled), dtype=np.int64).tobytes())
            self._values.update(_string_bytes(filled))
        elif pa.types.is_primitive(kind):
            filled = column.fill_null(pa.scalar(0).cast(kind)) if column.null_count else column
            self._values.update(np.ascontiguousarray(filled.to_numpy(zero_copy_only=False)).tobytes())
        else:  # decimals, lists, ...: rare in snapshots, so their text form is good enough
            self._values.update(repr(column.to_pylist()).encode())

    def digest(self) -> bytes:
        return self._validity.digest() + self._values.digest() + self._lengths.digest()


def _string_bytes(column: pa.Array) -> memoryview:
    """The concatenated bytes of a string column's values (no offsets, no padding)."""
    offsets_buffer, data = column.buffers()[1], column.buffers()[2]
    large = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if large else np.int32,
                            count=len(column) + 1, offset=column.offset * (8 if large else 4))
    if data is None or len(column) == 0:
        return memoryview(b"")
    return memoryview(data)[int(offsets[0]):int(offsets[-1])]
