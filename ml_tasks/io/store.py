"""The artifact store: files addressed by URI, in a local folder or on S3.

Every stage reads its inputs and writes its outputs here, so a task can be retried and a later
task re-run alone. Writes are staged: the file is written under a temporary name (or a local
temporary file for S3) and only becomes visible under its final name once complete, so a
crash never leaves a half-written snapshot where a reader would find it.

>>> store = ArtifactStore("/tmp/refit-doc")                       # doctest: +SKIP
>>> uri = store.uri("notes", "credit_default.json")               # doctest: +SKIP
>>> store.write_json(uri, {"rows": 3}); store.read_json(uri)      # doctest: +SKIP
{'rows': 3}
"""

from __future__ import annotations

import builtins
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
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
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
                raise StoreError(f"artifact {uri} does not exist")
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="refit-") as folder:
            path = Path(folder) / Path(uri).name
            self.download(uri, path)
            yield path

    def download(self, uri: str, path: Path) -> None:
        """Copy ``uri`` to the local file ``path`` (which the caller owns and keeps)."""
        if not self.exists(uri):
            raise StoreError(f"artifact {uri} does not exist")
        if self.is_s3:
            bucket, key = self._bucket_key(uri)
            self.s3.download_file(bucket, key, str(path))
        else:
            shutil.copyfile(self._local(uri), path)

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
                self.put_file(path, uri)
            return
        if not self.exists(source_uri):
            raise StoreError(f"artifact {source_uri} does not exist")
        source_bucket, source_key = self._bucket_key(source_uri)
        bucket, key = self._bucket_key(uri)
        self.s3.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key)

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
        return self.read_bytes(uri).decode()

    def write_json(self, uri: str, payload: Any) -> None:
        self.write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_text(uri))

    def write_frame(self, uri: str, frame: pd.DataFrame) -> None:
        with self.staged(uri) as tmp:
            frame.to_parquet(tmp, index=False)

    # builtins.list: inside this class ``list`` names the method above.
    def read_frame(self, uri: str, columns: builtins.list[str] | None = None) -> pd.DataFrame:
        with self.local_copy(uri) as path:
            return pd.read_parquet(path, columns=columns)


def store_from_settings(settings: Settings) -> ArtifactStore:
    """The artifact store configured by :class:`ml_tasks.core.settings.Settings`."""
    return ArtifactStore(settings.artifact_root, settings.s3_endpoint_url)
