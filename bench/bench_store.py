"""Benchmark: reading 2 of 20 columns of a ~1 GB Parquet snapshot from S3, before and after.

One command:

    .venv/bin/python bench/bench_store.py [--rows 8000000] [--rounds 3] [--workdir /tmp/refit-bench-store]

It writes a synthetic snapshot once (cached in ``--workdir``): a sorted id, 15 float columns, two
integer columns and two low-cardinality strings, 20 columns in 1M-row row groups, about 1 GB
for 8M rows. It starts moto's S3 server in its own process behind the traffic meter of
``tests/io/s3_counting.py`` (which counts the response bytes the server sends and the requests
it answers), uploads the snapshot, then reads two float columns of it, each read in a fresh
process, the methods interleaved over ``--rounds`` rounds (the best round counts):

``before``
    The store's read before issue 21, kept here as the reference: ``head_object``, boto3's
    ``download_file`` of the whole object to a temporary folder, ``read_schema``, then
    ``pandas.read_parquet(columns=...)`` of the local copy.
``after``
    ``ArtifactStore.read_frame(uri, columns=...)``: pyarrow's S3 filesystem reads the footer and
    the two columns' chunks (ranged GETs, coalesced and concurrent).

Both must give the same frame (compared by a hash of its values). Goals, printed PASS/MISS:
at least 5x fewer bytes sent by the server, and faster (best rounds). moto serves every GET,
ranged or not, by reading the whole object into memory first, so on this server a request costs
about the same whatever it returns; the probe line prints that cost, and the wall times here
reflect request counts more than bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.io.s3_counting import TEST_CREDENTIALS, counting_s3_server  # noqa: E402  (the repository's test helper)

COLUMNS = ["x03", "x11"]
ROW_GROUP_ROWS = 1_000_000
BUCKET = "refit-bench"
KEY = "refit/snapshots/bench/data.parquet"
GOAL_BYTES_RATIO = 5.0


# -- the snapshot ---------------------------------------------------------------------------
def snapshot_path(workdir: Path, rows: int) -> Path:
    return workdir / f"snapshot-{rows}.parquet"


def ensure_snapshot(workdir: Path, rows: int) -> Path:
    """A 20-column Parquet file of ``rows`` rows in 1M-row row groups, written once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = snapshot_path(workdir, rows)
    if path.exists():
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(21)
    regions, channels = np.array(["north", "south", "east", "west"]), np.array(["web", "branch", "partner"])
    partial = path.with_suffix(".partial")
    writer = None
    for start in range(0, rows, ROW_GROUP_ROWS):
        n = min(ROW_GROUP_ROWS, rows - start)
        table = pa.table({
            "id": np.arange(start, start + n, dtype="int64"),
            **{f"x{i:02d}": rng.normal(size=n) for i in range(15)},
            "term_months": rng.integers(6, 72, n),
            "label": rng.integers(0, 2, n),
            "region": regions[rng.integers(0, len(regions), n)],
            "channel": channels[rng.integers(0, len(channels), n)],
        })
        if writer is None:
            writer = pq.ParquetWriter(partial, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    assert writer is not None
    writer.close()
    partial.rename(path)
    return path


# -- the two reads, each in its own process -------------------------------------------------
def read_before(endpoint: str, uri: str, columns: list[str]) -> object:
    """The store's read before issue 21 (``ArtifactStore.read_frame`` at commit 99ece42): the
    whole object downloaded with boto3, then the columns read from the local copy."""
    import tempfile

    import boto3
    import pandas as pd
    import pyarrow.parquet as pq

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.head_object(Bucket=bucket, Key=key)  # exists()
    with tempfile.TemporaryDirectory(prefix="refit-") as folder:
        path = Path(folder) / Path(key).name
        s3.download_file(bucket, key, str(path))
        names = pq.read_schema(path).names
        assert all(c in names for c in columns)
        return pd.read_parquet(path, columns=columns)


def read_after(endpoint: str, uri: str, columns: list[str]) -> object:
    """The store's read now."""
    from ml_tasks.io.store import ArtifactStore

    return ArtifactStore(f"s3://{BUCKET}/refit", endpoint).read_frame(uri, columns=columns)


METHODS = {"before": read_before, "after": read_after}


def child(method: str, endpoint: str, uri: str) -> dict:
    import pandas as pd

    started = time.perf_counter()
    frame = METHODS[method](endpoint, uri, COLUMNS)
    seconds = time.perf_counter() - started
    assert isinstance(frame, pd.DataFrame)
    return {"seconds": seconds, "rows": len(frame), "columns": frame.columns.tolist(),
            "hash": int(pd.util.hash_pandas_object(frame, index=False).sum())}


def run_child(method: str, server, uri: str) -> dict:
    before = server.traffic()
    done = subprocess.run([sys.executable, __file__, "--child", method, "--endpoint", server.endpoint, "--uri", uri],
                          capture_output=True, text=True, env={**os.environ, **TEST_CREDENTIALS})
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    traffic = server.traffic() - before
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "bytes": traffic.bytes_sent,
            "requests": sum(traffic.requests.values()), "by_method": traffic.requests}


def probe_request_seconds(endpoint: str, key: str, repeats: int = 3) -> float:
    """Seconds moto takes to answer a 1-byte ranged GET of the object (the best of ``repeats``)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-0")["Body"].read()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refit-bench-store"))
    parser.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.endpoint, args.uri)))
        return

    import boto3
    import pyarrow
    import pyarrow.parquet as pq

    os.environ.update(TEST_CREDENTIALS)
    started = time.perf_counter()
    path = ensure_snapshot(args.workdir, args.rows)
    metadata = pq.ParquetFile(path).metadata
    size = path.stat().st_size
    print(f"snapshot {path}: {size / 1e9:.2f} GB, {metadata.num_rows:,} rows, {metadata.num_columns} columns, "
          f"{metadata.num_row_groups} row groups ({time.perf_counter() - started:.0f} s); reading {COLUMNS}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start; Python "
          f"{platform.python_version()}, pyarrow {pyarrow.__version__}, boto3 {boto3.__version__}")

    with counting_s3_server() as server:
        s3 = boto3.client("s3", endpoint_url=server.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        s3.upload_file(str(path), BUCKET, KEY)
        print(f"uploaded to moto's S3 server at {server.endpoint} in {time.perf_counter() - started:.0f} s")
        probe = probe_request_seconds(server.endpoint, KEY)
        print(f"probe: moto answers a 1-byte ranged GET of this object in {probe:.2f} s (it reads the whole object "
              "for every GET)")
        uri = f"s3://{BUCKET}/{KEY}"
        results: dict[str, list[dict]] = {method: [] for method in METHODS}
        for round_ in range(args.rounds):
            order = list(METHODS) if round_ % 2 == 0 else list(reversed(METHODS))
            for method in order:
                result = run_child(method, server, uri)
                results[method].append(result)
                print(f"  round {round_ + 1} {method:<7}{result['seconds']:>8.2f} s{result['bytes']:>16,} bytes"
                      f"{result['requests']:>6} requests {result['by_method']}", flush=True)

    hashes = {r["hash"] for rs in results.values() for r in rs}
    assert len(hashes) == 1, f"the methods read different frames: {hashes}"
    print(f"\n{'method':<9}{'best s':>9}{'median s':>10}{'bytes sent':>16}{'requests':>10}")
    best = {}
    for method, rounds in results.items():
        best[method] = min(rounds, key=lambda r: r["seconds"])
        print(f"{method:<9}{best[method]['seconds']:>9.2f}{statistics.median(r['seconds'] for r in rounds):>10.2f}"
              f"{best[method]['bytes']:>16,}{best[method]['requests']:>10}")
    bytes_ratio = best["before"]["bytes"] / best["after"]["bytes"]
    speedup = best["before"]["seconds"] / best["after"]["seconds"]
    print(f"\nsame frame from both ({best['after']['rows']:,} rows x {len(COLUMNS)} columns); "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print("goals:")
    print(f"  [{'PASS' if bytes_ratio >= GOAL_BYTES_RATIO else 'MISS'}] >= {GOAL_BYTES_RATIO:.0f}x less data "
          f"transferred: {bytes_ratio:.1f}x ({best['after']['bytes'] / 1e6:,.0f} MB against "
          f"{best['before']['bytes'] / 1e6:,.0f} MB)")
    print(f"  [{'PASS' if speedup > 1 else 'MISS'}] faster: {speedup:.2f}x ({best['after']['seconds']:.2f} s against "
          f"{best['before']['seconds']:.2f} s, best rounds)")


if __name__ == "__main__":
    main()
