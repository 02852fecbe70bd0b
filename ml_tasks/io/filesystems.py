"""The pyarrow filesystems under the artifact store: the local disk, or S3 set up as boto3 is.

:func:`s3_filesystem` gives a :class:`pyarrow.fs.S3FileSystem` that reaches the same bucket with
the same identity as the boto3 client beside it (:class:`ml_tasks.io.store.ArtifactStore` uses
both, see its module):

- endpoint: the store's ``s3_endpoint_url`` (from ``REFIT_S3_ENDPOINT_URL`` or
  ``AWS_ENDPOINT_URL_S3``, :mod:`ml_tasks.core.settings`), else the ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL`` variables boto3 itself honours; none means AWS;
- credentials: the AWS SDK's default chain, which reads what boto3 reads (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the ``~/.aws`` files, web
  identity, container and instance roles) and refreshes temporary credentials as they expire;
- region: ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; on AWS itself the bucket's own region, looked
  up once (boto3 follows the redirect instead; pyarrow must be told);
- timeouts: boto3's (60 s to connect, 60 s without a byte read), not the AWS SDK's 1 s and 3 s.

fsspec's S3 filesystem (s3fs) is not used: its aiobotocore pins clash with the boto3 in the lock,
and pyarrow's own S3 filesystem reads byte ranges natively, which is all the store needs of it.
"""

from __future__ import annotations

import os
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

#: Seconds to connect, and seconds without a byte received before a request is given up (and
#: retried): boto3's defaults.
TIMEOUT_SECONDS = 60.0


def local_filesystem() -> Any:
    """The local disk as a :class:`pyarrow.fs.LocalFileSystem` (pyarrow has no type information)."""
    from pyarrow.fs import LocalFileSystem

    return LocalFileSystem()


def s3_endpoint(endpoint_url: str | None) -> str | None:
    """The S3 endpoint a boto3 client made with ``endpoint_url`` talks to (None: AWS)."""
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem(bucket: str, endpoint_url: str | None) -> Any:
    """A :class:`pyarrow.fs.S3FileSystem` for ``bucket`` at ``endpoint_url`` (None: AWS), with the
    credentials and region boto3 would use (see the module)."""
    from pyarrow.fs import S3FileSystem, resolve_s3_region

    # boto3's timeouts (60 s to connect, 60 s without a byte read) rather than the AWS SDK's 1 s and 3 s: a
    # busy server (a MinIO on a laptop, moto answering a range of a big object) may take seconds to answer.
    options: dict[str, Any] = {"connect_timeout": TIMEOUT_SECONDS, "request_timeout": TIMEOUT_SECONDS}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    endpoint = s3_endpoint(endpoint_url)
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme and parts.netloc:  # "http://minio:9000": pyarrow takes the scheme apart
            options["scheme"] = parts.scheme
            options["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        else:
            options["endpoint_override"] = endpoint
    else:
        with suppress(OSError, ValueError):  # no network or no such bucket: the first request will say so
            region = resolve_s3_region(bucket)
    if region is not None:
        options["region"] = region
    return S3FileSystem(**options)
