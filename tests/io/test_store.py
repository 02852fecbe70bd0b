"""The artifact store on a local folder: round trips, and no half-written files."""

from __future__ import annotations

import pandas as pd
import pytest

from ml_tasks.io.store import ArtifactStore, StoreError


def test_json_text_and_frame_round_trip(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    uri = store.uri("runs", "m", "plan.json")
    store.write_json(uri, {"rows": 3, "name": "x"})
    assert store.exists(uri) and store.read_json(uri) == {"rows": 3, "name": "x"}
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    frame_uri = store.uri("runs", "m", "data.parquet")
    store.write_frame(frame_uri, frame)
    pd.testing.assert_frame_equal(store.read_frame(frame_uri), frame)
    assert store.read_frame(frame_uri, columns=["a"]).columns.tolist() == ["a"]


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    uri = store.uri("snapshots", "m", "data.parquet")
    with pytest.raises(RuntimeError, match="disk full"), store.staged(uri) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")
    assert not store.exists(uri)
    assert list((tmp_path / "store" / "snapshots" / "m").iterdir()) == []


def test_overwrite_replaces_whole_file(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    uri = store.uri("a.txt")
    store.write_text(uri, "first version, longer")
    store.write_text(uri, "second")
    assert store.read_text(uri) == "second"


def test_missing_and_outside_uris_are_named(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    with pytest.raises(StoreError, match="does not exist"):
        store.read_json(store.uri("nope.json"))
    with pytest.raises(StoreError, match="outside the artifact store"):
        store.read_text(str(tmp_path / "elsewhere.txt"))


def test_s3_root_builds_s3_uris():
    store = ArtifactStore("s3://bucket/refit/", s3_endpoint_url="http://127.0.0.1:9")
    assert store.is_s3
    assert store.uri("runs", "m", "plan.json") == "s3://bucket/refit/runs/m/plan.json"


def test_list_finds_artifacts_under_a_prefix_but_not_staging_files(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    for name in ("a/manifest.json", "b/manifest.json", "b/data.parquet"):
        store.write_text(store.uri("snapshots", "m", name), "x")
    (tmp_path / "store" / "snapshots" / "m" / "a" / ".manifest.json.tmp-1234").write_text("half")
    assert store.list(store.uri("snapshots", "m"), suffix="manifest.json") == [
        store.uri("snapshots", "m", "a", "manifest.json"), store.uri("snapshots", "m", "b", "manifest.json")]
    assert store.list(store.uri("nothing")) == []


def test_connection_uris_become_sqlalchemy_urls():
    from ml_tasks.core.settings import sqlalchemy_url

    assert sqlalchemy_url("postgres://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert sqlalchemy_url("sqlite:////tmp/w.db") == "sqlite:////tmp/w.db"


def test_copy_within_the_store_writes_the_whole_object_and_names_a_missing_source(any_store):
    source, target = any_store.uri("staging", "m", "data.parquet"), any_store.uri("snapshots", "m", "data.parquet")
    frame = pd.DataFrame({"id": range(1_000), "x": [0.5] * 1_000})
    any_store.write_frame(source, frame)
    any_store.copy(source, target)
    pd.testing.assert_frame_equal(any_store.read_frame(target), frame)
    assert any_store.exists(source)  # the caller deletes staging once the manifest is written
    with pytest.raises(StoreError, match="does not exist"):
        any_store.copy(any_store.uri("staging", "m", "missing.parquet"), any_store.uri("elsewhere.parquet"))
    assert not any_store.exists(any_store.uri("elsewhere.parquet"))


def test_checksum_is_the_size_and_sha256_of_the_stored_bytes_streamed_from_either_store(any_store):
    import hashlib

    data = bytes(range(256)) * 9_000  # more than one chunk
    uri = any_store.uri("snapshots", "m", "abc", "data.parquet")
    any_store.write_bytes(uri, data)
    assert any_store.checksum(uri) == (len(data), hashlib.sha256(data).hexdigest())
    with pytest.raises(StoreError, match=r"missing.parquet does not exist"):
        any_store.checksum(any_store.uri("missing.parquet"))


def test_unreadable_json_and_parquet_raise_a_corrupt_artifact_error_naming_the_uri(any_store):
    from ml_tasks.io.store import CorruptArtifactError

    frame_uri = any_store.uri("runs", "m", "k", "sample.parquet")
    any_store.write_frame(frame_uri, pd.DataFrame({"a": range(100)}))
    whole = any_store.read_bytes(frame_uri)
    any_store.write_bytes(frame_uri, whole[: len(whole) // 2])
    json_uri = any_store.uri("runs", "m", "k", "plan.json")
    any_store.write_text(json_uri, '{"model": "m", "as_of": "2024-')
    binary_uri = any_store.uri("runs", "m", "k", "gate.json")
    any_store.write_bytes(binary_uri, b"\xff\xfe{")

    for read, uri, kind in [(any_store.read_frame, frame_uri, "a Parquet file"),
                            (any_store.read_json, json_uri, "a JSON document"),
                            (any_store.read_json, binary_uri, "UTF-8 text")]:
        with pytest.raises(CorruptArtifactError, match=rf"artifact {uri} is corrupt: expected {kind}, but .*; delete"):
            read(uri)
    with pytest.raises(CorruptArtifactError, match=rf"artifact {frame_uri} is corrupt"), \
            any_store.parquet_file(frame_uri):
        pass


def test_reading_columns_a_parquet_file_lacks_names_them_and_the_file(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    uri = store.uri("snapshots", "m", "abc", "data.parquet")
    store.write_frame(uri, pd.DataFrame({"income": [1.0], "age": [30]}))
    named = rf"artifact {uri} has no column\(s\) \['region'\]; it has \['income', 'age'\]"
    with pytest.raises(StoreError, match=named):
        store.read_frame(uri, columns=["income", "region"])
    with store.parquet_file(uri) as parquet:
        assert parquet.metadata.num_rows == 1
