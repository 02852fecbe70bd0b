"""The artifact store: files addressed by URI, in a local folder or on S3.

Every stage reads its inputs and writes its outputs here, so a task can be retried and a later
task re-run alone. Writes are staged: the file is written under a temporary name (or a local
temporary file for S3) and only becomes visible under its final name once complete, so a
crash never leaves a half-written snapshot where a reader would find it.

A file that is there but cannot be read (a JSON manifest cut short, a Parquet file without its
footer, from a full disk, a manual copy or a store outside Refit's control) raises
:class:`CorruptArtifactError` naming its URI, never a bare decoder error. :meth:`ArtifactStore.checksum`
gives the size and SHA-256 that snapshots record and verify before they are reused.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from ml_tasks.core.artifacts import StoreLayout, join
from ml_tasks.core.settings import Settings


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

    @property
    def s3(self) -> Any:
        """The boto3 S3 client (boto3 has no type information)."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self._endpoint)
        return self._client

    # -- primitives -------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        if not self.is_s3:
            return self._local(uri).is_file()
        from botocore.exceptions import ClientError

        bucket, key = self._bucket_key(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if _not_found(exc):
                return False
            raise

    def list(self, prefix_uri: str, suffix: str = "") -> list[str]:
        """URIs of every artifact under ``prefix_uri`` whose name ends with ``suffix``, sorted."""
        if not self.is_s3:
            folder = self._local(prefix_uri)
            if not folder.is_dir():
                return []
            return sorted(str(p) for p in folder.rglob(f"*{suffix}") if p.is_file() and not p.name.startswith("."))
        bucket, key = self._bucket_key(prefix_uri.rstrip("/") + "/")
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            found += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []) if o["Key"].endswith(suffix)]
        return sorted(found)

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
        if self.is_s3:
            bucket, key = self._bucket_key(uri)
            self.s3.delete_object(Bucket=bucket, Key=key)
        else:
            self._local(uri).unlink(missing_ok=True)

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
        with self.local_copy(uri) as path:
            return path.read_bytes()

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
    def read_frame(self, uri: str, columns: builtins.list[str] | None = None) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self.local_copy(uri) as path:
            try:
                names = pq.read_schema(path).names
            except (pa.ArrowInvalid, OSError) as exc:
                raise CorruptArtifactError(uri, "a Parquet file", exc) from None
            missing = [c for c in columns or [] if c not in names]
            if missing:
                raise StoreError(f"artifact {uri} has no column(s) {missing}; it has {names}")
            try:
                return pd.read_parquet(path, columns=columns)
            except (pa.ArrowInvalid, OSError) as exc:  # a damaged page behind an intact footer
                raise CorruptArtifactError(uri, "a Parquet file", exc) from None

    @contextmanager
    def parquet_file(self, uri: str, **options: Any) -> Iterator[Any]:
        """Yield ``uri`` opened as a :class:`pyarrow.parquet.ParquetFile` (``options`` go to it);
        a file that is not Parquet, or has lost its footer, raises :class:`CorruptArtifactError`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self.local_copy(uri) as path:
            try:
                parquet = pq.ParquetFile(path, **options)
            except (pa.ArrowInvalid, OSError) as exc:
                raise CorruptArtifactError(uri, "a Parquet file", exc) from None
            with parquet:
                yield parquet


def store_from_settings(settings: Settings) -> ArtifactStore:
    """The artifact store configured by :class:`ml_tasks.core.settings.Settings`."""
    return ArtifactStore(settings.artifact_root, settings.s3_endpoint_url)


def _not_found(error: Any) -> bool:
    """Whether a botocore ``ClientError`` says the object (or bucket) does not exist."""
    return error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}
