"""Reads through pyarrow's filesystems: on S3 only the bytes asked for travel, and a local folder
and S3 give the same frames.

The S3 side is moto's server in its own process behind a traffic meter
(``tests/io/s3_counting.py``), which counts the response bytes the server sends, whatever client
made the requests: reading a few columns, the row groups a filter keeps, or a Parquet file's
row count must move a fraction of the object, where downloading the object first moves it all.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.io.store import ArtifactStore, CorruptArtifactError, MissingArtifactError, StoreError, read_failure
from tests.io.s3_counting import TEST_CREDENTIALS, counting_s3_server, read_traffic

ROWS = 200_000
ROW_GROUP_ROWS = 50_000
FLOAT_COLUMNS = [f"x{i}" for i in range(10)]


@pytest.fixture(scope="module")
def s3_endpoint():
    """The metered moto server's endpoint, one server for the module (each test takes a bucket of its own)."""
    with counting_s3_server() as server:
        yield server.endpoint


@pytest.fixture
def stores(s3_endpoint, tmp_path, monkeypatch):
    """(local store, S3 store on the metered server)."""
    import boto3

    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = f"refit-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return ArtifactStore(str(tmp_path / "artifacts")), ArtifactStore(f"s3://{bucket}/refit", s3_endpoint)


def snapshot_frame(rows: int = ROWS) -> pd.DataFrame:
    """Ten incompressible float columns, a sorted id, a timestamp and a string with nulls."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"id": np.arange(rows, dtype="int64"),
                          **{name: rng.normal(size=rows) for name in FLOAT_COLUMNS}})
    frame["as_of"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(frame["id"] // 1_000, unit="D")
    frame["region"] = pd.Series(rng.choice(["north", "south", "east"], rows)).where(frame["id"] % 7 != 0)
    return frame


def write_snapshot(store: ArtifactStore, frame: pd.DataFrame) -> str:
    """``frame`` as a Parquet file of several row groups (what the extractor writes); its URI."""
    uri = store.uri("snapshots", "m", "abc", "data.parquet")
    with store.staged(uri) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, row_group_size=ROW_GROUP_ROWS)
    return uri


def bytes_sent(endpoint: str, read):
    """``read()`` and the response bytes the S3 server sent meanwhile."""
    before = read_traffic(endpoint)
    result = read()
    return result, (read_traffic(endpoint) - before).bytes_sent


def test_reading_some_columns_from_s3_fetches_only_those_column_chunks(stores, s3_endpoint):
    local, s3 = stores
    frame = snapshot_frame()
    uri = write_snapshot(s3, frame)
    size = s3.checksum(uri)[0]

    columns = ["id", "x3"]  # 2 of 13 columns: about a sixth of the bytes
    read, sent = bytes_sent(s3_endpoint, lambda: s3.read_frame(uri, columns=columns))

    pd.testing.assert_frame_equal(read, frame[columns])
    assert sent < size / 4, f"{sent:,} of {size:,} bytes sent for {columns}: the whole object was fetched"
    pd.testing.assert_frame_equal(read, local.read_frame(write_snapshot(local, frame), columns=columns))


def test_a_row_filter_on_s3_skips_the_row_groups_its_statistics_rule_out(stores, s3_endpoint):
    local, s3 = stores
    frame = snapshot_frame()
    uri = write_snapshot(s3, frame)
    size = s3.checksum(uri)[0]
    keep = [("id", ">=", ROWS - ROW_GROUP_ROWS // 2)]  # half of the last of 4 row groups

    read, sent = bytes_sent(s3_endpoint, lambda: s3.read_frame(uri, filters=keep))

    expected = frame[frame["id"] >= ROWS - ROW_GROUP_ROWS // 2].reset_index(drop=True)
    pd.testing.assert_frame_equal(read, expected)
    assert sent < size / 3, f"{sent:,} of {size:,} bytes sent for one row group of four"
    pd.testing.assert_frame_equal(read, local.read_frame(write_snapshot(local, frame), filters=keep))


def test_a_parquet_files_row_count_on_s3_reads_its_footer_alone(stores, s3_endpoint):
    _, s3 = stores
    uri = write_snapshot(s3, snapshot_frame())

    def row_count() -> int:
        with s3.parquet_file(uri) as parquet:
            return parquet.metadata.num_rows

    rows, sent = bytes_sent(s3_endpoint, row_count)
    assert rows == ROWS
    assert sent <= 256 * 1024, f"{sent:,} bytes sent for a row count"


def test_a_read_from_s3_makes_no_request_beyond_what_reading_the_object_takes(stores, s3_endpoint):
    """The footer is read once: the checks that name a missing column run only when a read fails."""
    _, s3 = stores
    uri = write_snapshot(s3, snapshot_frame())
    columns, keep = ["id", "x3"], [("id", ">=", ROWS // 2)]

    def plain_read() -> pd.DataFrame:  # pandas on the store's own file handle: the least a read takes
        with s3._open(uri) as handle:
            return pd.read_parquet(handle, columns=columns, filters=keep)

    before = read_traffic(s3_endpoint)
    expected = plain_read()
    between = read_traffic(s3_endpoint)
    read = s3.read_frame(uri, columns=columns, filters=keep)
    after = read_traffic(s3_endpoint)

    pd.testing.assert_frame_equal(read, expected)
    assert (after - between).requests == (between - before).requests


@pytest.mark.parametrize(("columns", "filters"), [
    (None, None),
    (["region", "as_of"], None),
    (None, [("region", "==", "north"), ("id", "<", 120_000)]),
    (["x0"], [[("id", "<", 10)], [("id", ">=", ROWS - 10)]]),
    (["id", "region"], [("id", "<", 0)]),  # nothing passes: an empty frame with the same columns and types
], ids=["everything", "two columns", "filtered rows", "either filter", "no row passes"])
def test_a_local_folder_and_s3_read_the_same_frames(stores, columns, filters):
    local, s3 = stores
    frame = snapshot_frame(60_000)
    from_local = local.read_frame(write_snapshot(local, frame), columns=columns, filters=filters)
    from_s3 = s3.read_frame(write_snapshot(s3, frame), columns=columns, filters=filters)
    pd.testing.assert_frame_equal(from_s3, from_local)
    assert from_local.columns.tolist() == (columns or frame.columns.tolist())


def test_a_filter_on_a_column_the_file_lacks_names_it_and_the_file(stores):
    for store in stores:
        uri = write_snapshot(store, snapshot_frame(100))
        with pytest.raises(StoreError, match=rf"artifact {uri} has no column\(s\) \['segment'\]"):
            store.read_frame(uri, columns=["id"], filters=[("segment", "==", "a")])


def test_look_ups_lists_and_deletes_behave_alike_on_both_stores(stores):
    for store in stores:
        for name in ("snapshots/m/a/manifest.json", "snapshots/m/b/manifest.json", "snapshots/m/b/data.parquet",
                     "snapshots/m-other/c/manifest.json"):
            store.write_text(store.uri(*name.split("/")), "{}")
        prefix = store.uri("snapshots", "m")
        assert store.list(prefix, suffix="manifest.json") == [store.uri("snapshots", "m", "a", "manifest.json"),
                                                               store.uri("snapshots", "m", "b", "manifest.json")]
        assert store.list(store.uri("snapshots", "m", "a", "manifest.json")) == []  # a file is no folder
        assert store.list(store.uri("nothing")) == []
        assert store.exists(store.uri("snapshots", "m", "a", "manifest.json"))
        assert not store.exists(prefix)  # a folder (a prefix on S3) is no artifact
        store.delete(store.uri("snapshots", "m", "a", "manifest.json"))
        store.delete(store.uri("snapshots", "m", "a", "manifest.json"))  # gone already: nothing to do
        assert store.list(prefix, suffix="manifest.json") == [store.uri("snapshots", "m", "b", "manifest.json")]
        with pytest.raises(MissingArtifactError, match=r"snapshots/m/a/manifest.json does not exist"):
            store.read_json(store.uri("snapshots", "m", "a", "manifest.json"))


def test_an_object_removed_while_it_is_read_is_missing_not_corrupt(stores):
    _, s3 = stores
    uri = write_snapshot(s3, snapshot_frame())
    with s3.parquet_file(uri) as parquet:
        s3.s3.delete_object(Bucket=uri.split("/")[2], Key=uri.split("/", 3)[3])
        with pytest.raises(OSError) as raised:
            parquet.read_row_group(2)
    assert isinstance(read_failure(uri, raised.value), MissingArtifactError)
    assert isinstance(read_failure(uri, pa.ArrowInvalid("Parquet magic bytes not found")), CorruptArtifactError)


def test_a_transfer_that_fails_mid_read_is_raised_as_it_is_not_as_a_corrupt_file(tmp_path, monkeypatch):
    """The S3 API goes away between the footer and the rows: that is for a retry to mend, and the
    snapshot must not be taken for damaged (which would have it re-extracted)."""
    import boto3

    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with counting_s3_server() as server:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="refit-gone")
        store = ArtifactStore("s3://refit-gone/refit", server.endpoint)
        uri = write_snapshot(store, snapshot_frame())
        with store.parquet_file(uri) as parquet:
            server.process.terminate()
            server.process.wait(timeout=30)
            with pytest.raises(OSError) as raised:
                parquet.read_row_group(3)
    failure = read_failure(uri, raised.value)
    assert failure is raised.value and "AWS Error" in str(failure)
