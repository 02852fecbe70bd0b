"""The S3 filesystem under the store is set up from the same settings and variables as boto3."""

from __future__ import annotations

import pytest

from ml_tasks.io.filesystems import TIMEOUT_SECONDS, s3_filesystem

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")


def options(filesystem) -> dict:
    """The options a pyarrow S3 filesystem was made with (what it pickles)."""
    return filesystem.__reduce__()[1][0]


@pytest.fixture
def clean_environment(monkeypatch):
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_an_endpoint_url_is_taken_apart_into_scheme_and_host(clean_environment):
    made = options(s3_filesystem("refit", "http://127.0.0.1:9000/"))
    assert (made["scheme"], made["endpoint_override"]) == ("http", "127.0.0.1:9000")
    assert made["access_key"] is None and not made["anonymous"]  # the AWS SDK's default chain, as boto3's
    assert made["connect_timeout"] == made["request_timeout"] == TIMEOUT_SECONDS


def test_without_an_endpoint_the_variables_boto3_honours_are_used_and_the_region_too(clean_environment):
    clean_environment.setenv("AWS_ENDPOINT_URL", "https://minio.internal:9000")
    clean_environment.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    made = options(s3_filesystem("refit", None))
    assert (made["scheme"], made["endpoint_override"], made["region"]) == ("https", "minio.internal:9000", "eu-west-3")

    clean_environment.setenv("AWS_ENDPOINT_URL_S3", "http://s3.internal")  # the S3-specific one wins
    assert options(s3_filesystem("refit", None))["endpoint_override"] == "s3.internal"
    # The store's own setting (REFIT_S3_ENDPOINT_URL) wins over both.
    assert options(s3_filesystem("refit", "http://127.0.0.1:9"))["endpoint_override"] == "127.0.0.1:9"
