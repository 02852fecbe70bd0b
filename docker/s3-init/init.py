"""The object store's set-up, run by the one-shot minio-init service on every ``docker compose up``.

A bucket per client, and on MinIO an access key per client that can read and write only its own
bucket. Refit (Airflow tasks, trainer containers) keeps snapshots, runs and reports in
REFIT_S3_BUCKET; the MLflow server keeps model artifacts in MLFLOW_S3_BUCKET and serves them to
its clients, which therefore need no key to it. Every step is idempotent, so .env stays the
source of the keys: a changed secret key is applied on the next run.

It talks to any S3 endpoint (S3_ENDPOINT_URL, http://minio:9000 by default) with the root
credentials (MINIO_ROOT_USER / MINIO_ROOT_PASSWORD as the access key and secret). Buckets are
made with boto3 everywhere; the per-client keys and their policies only where the endpoint is
MinIO (it says so in its ``Server`` header), through MinIO's admin API (the ``minio`` package):
other endpoints (moto, for one) have no such API, and that step is skipped with a message.

Runs in the refit-mlflow image (Python, boto3, minio):
``python /init.py`` with this file mounted read-only. Exit status 0 when everything is in place.
"""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

#: How long to wait for the endpoint to answer at all (seconds).
WAIT_S = float(os.environ.get("S3_INIT_WAIT_S", "60"))


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name) or default
    if not value:
        sys.exit(f"s3-init: {name} is not set")
    return value


def read_write_policy(bucket: str) -> dict:
    """Read, write and delete in ``bucket`` and nothing else (listing it included)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow",
             "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
             "Resource": [f"arn:aws:s3:::{bucket}"]},
            {"Effect": "Allow",
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                        "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
             "Resource": [f"arn:aws:s3:::{bucket}/*"]},
        ],
    }


def server_header(s3) -> str:
    """The endpoint's ``Server`` header, from a ListBuckets that also proves the root login works.
    Waits up to WAIT_S for the endpoint to accept connections."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            response = s3.list_buckets()
            return response["ResponseMetadata"]["HTTPHeaders"].get("server", "")
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def ensure_bucket(s3, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
        print(f"s3-init: bucket {bucket} exists")
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        s3.create_bucket(Bucket=bucket)
        print(f"s3-init: bucket {bucket} created")
    except ClientError as exc:
        # Another run made it in between.
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
        print(f"s3-init: bucket {bucket} exists")


def grant_bucket(admin, bucket: str, access_key: str, secret_key: str) -> None:
    """MinIO: the policy ``<bucket>-readwrite`` and the user ``access_key`` holding it."""
    from minio.error import MinioAdminException

    policy = f"{bucket}-readwrite"
    admin.policy_add(policy, policy=read_write_policy(bucket))
    # Adding an existing user sets its secret key, so a key changed in .env takes effect here.
    admin.user_add(access_key, secret_key)
    try:
        admin.attach_policy([policy], user=access_key)
    except MinioAdminException as exc:
        # MinIO refuses to attach a policy that is already attached: on a second run that
        # refusal is the state we want, anything else is an error.
        if "already" not in str(exc).lower():
            raise
    print(f"s3-init: key {access_key} may read and write bucket {bucket} only")


def main() -> int:
    endpoint = setting("S3_ENDPOINT_URL", "http://minio:9000")
    root_user = setting("MINIO_ROOT_USER")
    root_password = setting("MINIO_ROOT_PASSWORD")
    region = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    clients = [
        (setting("REFIT_S3_BUCKET", "refit"), "REFIT_S3_ACCESS_KEY", "REFIT_S3_SECRET_KEY"),
        (setting("MLFLOW_S3_BUCKET", "mlflow"), "MLFLOW_S3_ACCESS_KEY", "MLFLOW_S3_SECRET_KEY"),
    ]

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=root_user,
                      aws_secret_access_key=root_password,
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}))
    server = server_header(s3)
    for bucket, _, _ in clients:
        ensure_bucket(s3, bucket)

    if "minio" not in server.lower():
        print(f"s3-init: {endpoint} is not MinIO (Server: {server or 'not given'}); per-client access "
              "keys are MinIO's feature and were skipped: clients use the keys they are given as they are")
        return 0

    from minio import MinioAdmin
    from minio.credentials import StaticProvider

    url = urlsplit(endpoint)
    admin = MinioAdmin(endpoint=url.netloc, credentials=StaticProvider(root_user, root_password),
                       region=region, secure=url.scheme == "https")
    for bucket, access_name, secret_name in clients:
        grant_bucket(admin, bucket, setting(access_name), setting(secret_name))
    print(f"s3-init: buckets {' and '.join(bucket for bucket, _, _ in clients)} ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
