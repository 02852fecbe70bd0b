"""The artifact store: files addressed by URI, in a local folder or on S3.

Every stage reads its inputs and writes its outputs here, so a task can be retried and a later
task re-run alone. Writes are staged: the file is written under a temporary name (or a local
temporary file for S3) and only becomes visible under its final name once complete, so a
crash never leaves a half-written snapshot where a reader would find it.

A file that is there but cannot be read (a JSON manifest cut short, a Parquet file without its
footer, from a full disk, a manual copy or a store outside Refit's control) raises
:class:`CorruptArtifactError` naming its URI, never a bare decoder error. :meth:`ArtifactStore.checksum`
gives the size and SHA-256 that snapshots record and verify before they are reused.

Two libraries, each doing what it does well:

- **pyarrow's filesystems** (:mod:`ml_tasks.io.filesystems`: ``LocalFileSystem`` or
  ``S3FileSystem``) for every look-up and read, local and S3 through the same code: ``exists``,
  ``list``, ``delete``, bytes, text and JSON, and Parquet. A Parquet read fetches the footer and
  then only the column chunks of the columns and row groups asked for (ranged GETs, coalesced and
  issued concurrently), never the whole object: :meth:`ArtifactStore.read_frame` of 2 of the 20
  columns of a 1 GB snapshot moves 7.8x fewer bytes than the download it replaces
  (``bench/bench_store.py``), and its ``filters`` skip row groups by their statistics.
- **boto3** for the whole-object transfers on S3, where pyarrow has no equivalent: the upload of
  a staged file (a managed multipart upload that is aborted on failure; pyarrow's Python API
  cannot abort an upload, and its output stream completes the object with whatever it was given
  when it is closed or dropped after an error, which would break staged writes), the download
  of a whole object to a local file (parallel ranged GETs) and the checksum's single streamed
  GET (pyarrow's input stream issues one ranged GET per read call), and the server-side copy (a
  managed multipart copy; pyarrow's ``copy_file`` is one ``CopyObject``, capped at 5 GiB, and
  snapshots can be bigger). Both clients take the endpoint from the settings and the credentials
  from the same environment and files (:func:`ml_tasks.io.filesystems.s3_filesystem`).

>>> store = ArtifactStore("/tmp/refit-doc")                       # doctest: +SKIP
>>> uri = store.uri("notes", "credit_default.json")               # doctest: +SKIP
>>> store.write_json(uri, {"rows": 3}); store.read_json(uri)      # doctest: +SKIP
{'rows': 3}
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pandas as pd

from ml_tasks.core.artifacts import StoreLayout, join
from ml_tasks.core.settings import Settings
from ml_tasks.io.filesystems import local_filesystem, s3_filesystem

#: A row filter in pyarrow's disjunctive normal form: ``[("age", ">=", 18)]`` (all must hold), or
#: ``[[...], [...]]`` (any inner list must hold).
Filters = builtins.list[tuple[str, str, Any]] | builtins.list[builtins.list[tuple[str, str, Any]]]


class StoreError(RuntimeError):
    """An artifact is missing or cannot be written; the message names the URI."""


class MissingArtifactError(StoreError):
    """An artifact is not there (never written, or removed meanwhile); the message names the URI."""


class CorruptArtifactError(StoreError):
    """An artifact is there but cannot be read as what it should be; the message names the URI."""

    def __init__(self, uri: str, kind: str, reason: object,
                 remedy: str = "delete it and re-run the stage that writes it") -> None:
        #: What is wrong, without the remedy: "expected <kind>, but <reason>".
        self.detail = f"expected {kind}, but {str(reason).rstrip('. ')}"
        self.uri = uri
        super().__init__(f"artifact {uri} is corrupt: {self.detail}; {remedy}")


#: Bytes read at a time when a file is hashed.
_CHUNK_BYTES = 1 << 20


def file_checksum(path: Path) -> tuple[int, str]:
    """Size in bytes and SHA-256 (hex) of the local file ``path``, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class ArtifactStore:
    """Read and write artifacts under ``root`` (a folder path or ``s3://bucket/prefix``).

    Parameters
    ----------
    root : where artifacts live. A plain path means a local folder.
    s3_endpoint_url : S3 API endpoint for MinIO or a test server; None means AWS.
    """

    def __init__(self, root: str, s3_endpoint_url: str | None = None) -> None:
        self.root = root.rstrip("/")
        self.is_s3 = self.root.startswith("s3://")
        self._endpoint = s3_endpoint_url
        self._client: Any = None  # a boto3 S3 client, made on first use
        self._fs: Any = None  # a pyarrow filesystem, made on first use
        if not self.is_s3:
            self.root = str(Path(self.root.removeprefix("file://")).resolve())

    # -- addressing -------------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        """The URI of ``parts`` under the root."""
        return join(self.root, *parts)

    @property
    def layout(self) -> StoreLayout:
        """Where runs, snapshots and reports live under this store's root."""
        return StoreLayout(self.root)

    def _local(self, uri: str) -> Path:
        path = Path(uri.removeprefix("file://")).resolve()
        if not str(path).startswith(self.root):
            raise StoreError(f"{uri} is outside the artifact store root {self.root}")
        return path

    def _bucket_key(self, uri: str) -> tuple[str, str]:
        if not uri.startswith("s3://"):
            raise StoreError(f"{uri} is not an s3:// URI but the store root is {self.root}")
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bucket, key

    def _path(self, uri: str) -> str:
        """``uri`` as a path of :attr:`fs`: an absolute local path, or ``bucket/key``."""
        if self.is_s3:
            bucket, key = self._bucket_key(uri)
            return f"{bucket}/{key}"
        return str(self._local(uri))

    def _uri_of(self, path: str) -> str:
        """The URI of the :attr:`fs` path ``path`` (the inverse of :meth:`_path`)."""
        return f"s3://{path}" if self.is_s3 else path

    @property
    def s3(self) -> Any:
        """The boto3 S3 client, for whole-object transfers (boto3 has no type information)."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self._endpoint)
        return self._client

    @property
    def fs(self) -> Any:
        """The :class:`pyarrow.fs.FileSystem` every look-up and read goes through: the local disk,
        or S3 with the endpoint, credentials and region boto3 uses (pyarrow has no type information)."""
        if self._fs is None:
            self._fs = s3_filesystem(self._bucket_key(self.root)[0], self._endpoint) if self.is_s3 \
                else local_filesystem()
        return self._fs

    # -- primitives -------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        from pyarrow.fs import FileType

        return bool(self.fs.get_file_info(self._path(uri)).type == FileType.File)

    def list(self, prefix_uri: str, suffix: str = "") -> list[str]:
        """URIs of every artifact under ``prefix_uri`` whose name ends with ``suffix``, sorted.
        Names starting with a dot (a local staged write in progress) are left out."""
        from pyarrow.fs import FileSelector, FileType

        selector = FileSelector(self._path(prefix_uri).rstrip("/"), recursive=True, allow_not_found=True)
        try:
            found = self.fs.get_file_info(selector)
        except NotADirectoryError:  # a file, not a folder, has that name
            return []
        return sorted(self._uri_of(info.path) for info in found if info.type == FileType.File
                      and info.path.endswith(suffix) and not info.base_name.startswith("."))

    @contextmanager
    def _open(self, uri: str) -> Iterator[Any]:
        """Yield ``uri`` opened for random access (a :class:`pyarrow.NativeFile`): on S3 each read
        is a ranged GET of just the bytes asked for."""
        try:
            handle = self.fs.open_input_file(self._path(uri))
        except (FileNotFoundError, IsADirectoryError):
            raise MissingArtifactError(f"artifact {uri} does not exist") from None
        with handle:
            yield handle

    @contextmanager
    def staged(self, uri: str) -> Iterator[Path]:
        """Yield a local path to write; on success it becomes ``uri`` in one step.

        Locally the temporary file sits next to the target and is renamed (atomic on POSIX);
        on S3 the object only appears once the upload completes. On error nothing is left.
        """
        if self.is_s3:
            handle, name = tempfile.mkstemp(prefix="refit-", suffix=Path(uri).suffix)
            os.close(handle)
            tmp = Path(name)
        else:
            final = self._local(uri)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            yield tmp
            if self.is_s3:
                bucket, key = self._bucket_key(uri)
                self.s3.upload_file(str(tmp), bucket, key)
            else:
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """Yield a local path with the content of ``uri`` (downloaded for S3)."""
        if not self.is_s3:
            path = self._local(uri)
            if not path.is_file():
                raise MissingArtifactError(f"artifact {uri} does not exist")
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="refit-") as folder:
            path = Path(folder) / Path(uri).name
            self.download(uri, path)
            yield path

    def download(self, uri: str, path: Path) -> None:
        """Copy ``uri`` to the local file ``path`` (which the caller owns and keeps)."""
        if not self.exists(uri):
            raise MissingArtifactError(f"artifact {uri} does not exist")
        if self.is_s3:
            from botocore.exceptions import ClientError

            bucket, key = self._bucket_key(uri)
            try:
                self.s3.download_file(bucket, key, str(path))
            except ClientError as exc:  # removed between the look-up and the download
                if not _not_found(exc):
                    raise
                raise MissingArtifactError(f"artifact {uri} does not exist") from None
        else:
            try:
                shutil.copyfile(self._local(uri), path)
            except FileNotFoundError:
                raise MissingArtifactError(f"artifact {uri} does not exist") from None

    def checksum(self, uri: str) -> tuple[int, str]:
        """Size in bytes and SHA-256 (hex) of ``uri``'s content, streamed (S3 objects are not
        written to disk)."""
        if not self.is_s3:
            path = self._local(uri)
            if not path.is_file():
                raise StoreError(f"artifact {uri} does not exist")
            return file_checksum(path)
        from botocore.exceptions import ClientError

        bucket, key = self._bucket_key(uri)
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if _not_found(exc):
                raise StoreError(f"artifact {uri} does not exist") from None
            raise
        digest, size = hashlib.sha256(), 0
        for chunk in body.iter_chunks(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def delete(self, uri: str) -> None:
        """Remove ``uri`` if it exists."""
        with suppress(FileNotFoundError):
            self.fs.delete_file(self._path(uri))

    def put_file(self, local_path: Path, uri: str) -> None:
        with self.staged(uri) as tmp:
            shutil.copyfile(local_path, tmp)

    def copy(self, source_uri: str, uri: str) -> None:
        """Copy ``source_uri`` to ``uri`` within the store; ``uri`` appears only when complete.

        On S3 the copy is server-side (a managed, multipart copy for big objects): the bytes never
        travel through this host, which matters for snapshots of many gigabytes.
        """
        if not self.is_s3:
            with self.local_copy(source_uri) as path:
                try:
                    self.put_file(path, uri)
                except FileNotFoundError:  # removed while being copied
                    raise MissingArtifactError(f"artifact {source_uri} does not exist") from None
            return
        if not self.exists(source_uri):
            raise MissingArtifactError(f"artifact {source_uri} does not exist")
        from botocore.exceptions import ClientError

        source_bucket, source_key = self._bucket_key(source_uri)
        bucket, key = self._bucket_key(uri)
        try:
            self.s3.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key)
        except ClientError as exc:  # removed between the look-up and the copy
            if not _not_found(exc):
                raise
            raise MissingArtifactError(f"artifact {source_uri} does not exist") from None

    # -- typed helpers ----------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.staged(uri) as tmp:
            tmp.write_bytes(data)

    def read_bytes(self, uri: str) -> bytes:
        with self._open(uri) as handle:  # on S3 one GET: the size is known once it is open
            return bytes(handle.read())

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode())

    def read_text(self, uri: str) -> str:
        try:
            return self.read_bytes(uri).decode()
        except UnicodeDecodeError as exc:
            raise CorruptArtifactError(uri, "UTF-8 text", exc) from None

    def write_json(self, uri: str, payload: Any) -> None:
        self.write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, uri: str) -> Any:
        text = self.read_text(uri)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CorruptArtifactError(uri, "a JSON document", f"{exc} ({len(text)} characters in all)") from None

    def write_frame(self, uri: str, frame: pd.DataFrame) -> None:
        with self.staged(uri) as tmp:
            frame.to_parquet(tmp, index=False)

    # builtins.list: inside this class ``list`` names the method above.
    def read_frame(self, uri: str, columns: builtins.list[str] | None = None,
                   filters: Filters | None = None) -> pd.DataFrame:
        """The Parquet file ``uri`` as a frame: all its columns, or ``columns``; all its rows, or
        those that pass ``filters`` (pyarrow's form, e.g. ``[("as_of", ">=", day)]``), whose row
        groups are skipped unread where their statistics rule them out.

        Only the footer and the column chunks asked for are read, so on S3 a few columns of a
        big snapshot cost a few ranged GETs, not the whole object. A column that is not there
        raises :class:`StoreError` naming the file, the columns and those it has.
        """
        import pyarrow as pa

        with self._open(uri) as handle:
            try:
                return pd.read_parquet(handle, columns=columns, filters=filters)
            except (pa.ArrowInvalid, OSError) as exc:
                failure: Exception = exc
            # Only now the footer again, to say why: a column the file lacks, a damaged file (one
            # without a footer raises here) or a failed transfer. A read that works reads it once.
            with self._parquet(uri, handle) as parquet:
                names = parquet.schema_arrow.names
            asked = [*(columns or []), *_filter_columns(filters)]
            missing = [c for c in dict.fromkeys(asked) if c not in names]
            if missing:
                raise StoreError(f"artifact {uri} has no column(s) {missing}; it has {names}") from None
            raise read_failure(uri, failure) from None  # a damaged page behind an intact footer

    @contextmanager
    def parquet_file(self, uri: str, **options: Any) -> Iterator[Any]:
        """Yield ``uri`` opened as a :class:`pyarrow.parquet.ParquetFile` (``options`` go to it);
        a file that is not Parquet, or has lost its footer, raises :class:`CorruptArtifactError`.

        Nothing but the footer is read until asked: on S3 ``metadata`` costs one ranged GET, and
        ``iter_batches(columns=..., row_groups=...)`` fetches only those column chunks. A read
        that fails may be passed to :func:`read_failure` to tell a damaged file from a failed
        transfer."""
        with self._open(uri) as handle, self._parquet(uri, handle, **options) as parquet:
            yield parquet

    @staticmethod
    @contextmanager
    def _parquet(uri: str, handle: Any, **options: Any) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(handle, **options)
        except (pa.ArrowInvalid, OSError) as exc:
            raise read_failure(uri, exc) from None
        with parquet:
            yield parquet


def store_from_settings(settings: Settings) -> ArtifactStore:
    """The artifact store configured by :class:`ml_tasks.core.settings.Settings`."""
    return ArtifactStore(settings.artifact_root, settings.s3_endpoint_url)


#: The AWS SDK's names for "no such object" (which one depends on the server and the request).
_S3_NOT_FOUND = ("NO_SUCH_KEY", "RESOURCE_NOT_FOUND")


def read_failure(uri: str, error: Exception, kind: str = "a Parquet file") -> Exception:
    """What to raise for ``error``, met while reading ``uri`` as ``kind``.

    Reads from S3 are ranged GETs made while the file is parsed, so a decoder error and a failed
    transfer surface in the same place: a transfer that failed (the S3 API unreachable, throttled,
    denied) is raised as it is, to be retried; the object removed meanwhile is a
    :class:`MissingArtifactError`; anything else is a :class:`CorruptArtifactError` naming ``uri``.
    """
    message = str(error)  # pyarrow's S3 errors read "...AWS Error <CODE> during <operation> operation: ..."
    if isinstance(error, FileNotFoundError) or any(f"AWS Error {code} " in message for code in _S3_NOT_FOUND):
        return MissingArtifactError(f"artifact {uri} does not exist")
    if "AWS Error " in message:
        return error
    return CorruptArtifactError(uri, kind, error)


def _filter_columns(filters: Filters | None) -> builtins.list[str]:
    """The columns a row filter in disjunctive normal form refers to."""
    names: builtins.list[str] = []
    for term in filters or []:
        names += [term[0]] if isinstance(term, tuple) else [inner[0] for inner in term]
    return names


def _not_found(error: Any) -> bool:
    """Whether a botocore ``ClientError`` says the object (or bucket) does not exist."""
    return error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}
