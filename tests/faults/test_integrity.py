"""Corrupt artifacts are never trusted: a damaged snapshot or manifest is named, checked against
the checksum its manifest recorded before it is reused, and re-extracted under the same id.

Real stores (a local folder, and S3 through moto's server), damaged the way a full disk, a
killed copy or a hand edit damages them: cut short, one byte changed, deleted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from ml_tasks.core.plan import make_plan
from ml_tasks.data.extract import extract_snapshot
from ml_tasks.data.validate import run_validation
from ml_tasks.io.store import CorruptArtifactError
from tests.conftest import DEMO_SPEC


def validated(spec, store, url, include_dir, as_of="2024-03-01"):
    """Extract and validate one interval (the snapshot is committed when it passes)."""
    plan = make_plan(spec, DEMO_SPEC, include_dir, store.layout, as_of)
    return run_validation(spec, plan, extract_snapshot(spec, plan, store, url, include_dir), store)


def cut_short(store, uri: str) -> None:
    data = store.read_bytes(uri)
    store.write_bytes(uri, data[: len(data) // 2])


def flip_a_byte(store, uri: str) -> None:
    data = bytearray(store.read_bytes(uri))
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(uri, bytes(data))


def test_a_truncated_snapshot_manifest_is_named_and_the_next_run_repairs_it_under_the_same_id(
        demo_spec, refit_home, tiny_warehouse_url, any_store):
    include = refit_home.include_dir
    first = validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot
    cut_short(any_store, first.manifest_uri)
    with pytest.raises(CorruptArtifactError, match=rf"{first.manifest_uri} is corrupt: expected a JSON document"):
        any_store.read_json(first.manifest_uri)

    again = validated(demo_spec, any_store, tiny_warehouse_url, include)

    assert again.snapshot_id == first.snapshot_id and not again.snapshot.reused
    assert first.manifest_uri in again.snapshot.replaces_corrupt
    assert any("re-extracted under the same id" in w and first.manifest_uri in w for w in again.warnings)
    stored = any_store.read_json(first.manifest_uri)
    assert stored["snapshot_id"] == first.snapshot_id and stored["data_sha256"] == first.data_sha256
    assert validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot.reused
    assert any_store.list(any_store.uri("staging")) == []


@pytest.mark.parametrize("damage", [cut_short, flip_a_byte, lambda store, uri: store.delete(uri)],
                         ids=["cut short", "one byte changed", "deleted"])
def test_a_damaged_snapshot_file_is_never_reused_but_re_extracted_under_the_same_id(
        demo_spec, refit_home, tiny_warehouse_url, any_store, damage):
    include = refit_home.include_dir
    first = validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot
    rows = any_store.read_frame(first.uri)
    damage(any_store, first.uri)

    again = validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot

    assert again.snapshot_id == first.snapshot_id and not again.reused
    assert any_store.read_frame(first.uri).equals(rows)
    assert first.uri in again.replaces_corrupt
    assert any_store.checksum(first.uri) == (again.data_bytes, again.data_sha256)
    assert validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot.reused


def test_a_manifest_written_before_checksums_is_still_reused_and_checked_by_its_parquet_footer(
        demo_spec, refit_home, tiny_warehouse_url, any_store):
    include = refit_home.include_dir
    first = validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot
    older = {k: v for k, v in any_store.read_json(first.manifest_uri).items()
             if k not in {"data_bytes", "data_sha256", "replaces_corrupt"}}
    any_store.write_json(first.manifest_uri, older)

    reused = validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot
    assert reused.reused and reused.snapshot_id == first.snapshot_id

    cut_short(any_store, first.uri)
    repaired = validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot
    assert not repaired.reused and "corrupt" in repaired.replaces_corrupt
    assert any_store.read_json(first.manifest_uri)["data_sha256"] == repaired.data_sha256


def test_a_corrupt_manifest_of_another_snapshot_is_a_warning_naming_it_not_a_failed_run(
        demo_spec, refit_home, tiny_warehouse_url, any_store):
    include = refit_home.include_dir
    earlier = validated(demo_spec, any_store, tiny_warehouse_url, include).snapshot
    cut_short(any_store, earlier.manifest_uri)

    later = validated(demo_spec, any_store, tiny_warehouse_url, include, as_of="2024-06-01")

    assert later.snapshot_id != earlier.snapshot_id
    assert any(earlier.manifest_uri in w and "corrupt" in w for w in later.warnings)


def test_a_process_killed_mid_write_leaves_nothing_under_the_final_name(any_store, tmp_path):
    uri = any_store.uri("snapshots", "m", "abc", "data.parquet")
    writer = f"""
import sys, time
from ml_tasks.io.store import ArtifactStore
store = ArtifactStore({any_store.root!r}, {any_store._endpoint!r})
with store.staged({uri!r}) as tmp:
    tmp.write_bytes(b"PAR1" + b"x" * 100_000)
    print("half written", flush=True)
    time.sleep(120)
"""
    # Its own temporary folder: on S3 the killed writer's local file stays there (SIGKILL cannot be handled).
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "half written"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    assert not any_store.exists(uri)
    assert any_store.list(any_store.uri("snapshots")) == []


def test_a_corrupt_artifact_read_by_a_stage_names_its_uri(any_store):
    manifest = any_store.uri("runs", "m", "k", "gate.json")
    any_store.write_text(manifest, json.dumps({"verdict": "PASS", "checks": []})[:20])
    with pytest.raises(CorruptArtifactError, match=rf"artifact {manifest} is corrupt: expected a JSON document"):
        any_store.read_json(manifest)
