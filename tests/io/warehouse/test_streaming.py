"""Streaming: batches never exceed batch_rows, stopping early aborts the query, memory stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from sqlalchemy import create_engine, text

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.io.warehouse import stream_query
from tests.io.warehouse.queries import PG_ENGINES


def test_batches_never_exceed_batch_rows(postgres_url, sqlite_url):
    pg_sql = "SELECT i AS id, i * 0.5 AS half FROM generate_series(1, 10000) AS i ORDER BY i"
    lite_sql = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10000) "
                "SELECT i AS id, i * 0.5 AS half FROM s")
    for url, sql, engines in ((postgres_url, pg_sql, PG_ENGINES), (sqlite_url, lite_sql, ["sqlalchemy"])):
        for engine in engines:
            sizes, ids = [], []
            for batch in stream_query(url, sql, {}, {"id": "int64", "half": "float64"}, batch_rows=999, engine=engine):
                sizes.append(batch.num_rows)
                ids.extend(batch["id"].to_pylist())
            assert max(sizes) <= 999 and sum(sizes) == 10000, (engine, sizes)
            assert ids == list(range(1, 10001)), engine


def test_stopping_early_closes_the_query(postgres_url):
    sql = "SELECT i, repeat('x', 100) AS pad FROM generate_series(1, 2000000) AS i"
    admin = create_engine(postgres_url)
    for engine in PG_ENGINES:
        batches = stream_query(postgres_url, sql, {}, {"i": "int64"}, batch_rows=1000, engine=engine)
        assert next(batches).num_rows == 1000
        batches.close()
        # The server notices the closed connection on its next write; give it a moment.
        for _ in range(50):
            with admin.connect() as conn:
                running = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                            "AND pid <> pg_backend_pid() AND state = 'active'")).scalar()
            if running == 0:
                break
            time.sleep(0.1)
        assert running == 0, engine
    admin.dispose()


MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    import pyarrow as pa
    from ml_tasks.io.warehouse import stream_query
    url, sql, engine, mode = sys.argv[1:5]
    types = {"id": "int64", "x": "float64", "t": "timestamp", "s": "string"}

    def peak_kib():
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child of a big pytest
        # process would start at the parent's peak and never seem to grow.
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    # Warm-up: load the driver and its libraries, so the baseline already counts them.
    for _ in stream_query(url, sql.replace("1000000", "10"), {}, types, engine=engine):
        pass
    base = peak_kib()
    kept, total = [], 0
    for batch in stream_query(url, sql, {}, types, batch_rows=5_000, engine=engine):
        total += batch.nbytes
        if mode == "keep":  # the control: what holding the whole result costs
            kept.append(batch)
    growth = peak_kib() - base
    print(json.dumps({"growth": growth * 1024, "total": total}), flush=True)
    # The figure is out: skip interpreter teardown, where a native driver thread still winding
    # down can abort the process under load ("terminate called without an active exception").
    import os
    os._exit(0)
""")


def peak_growth(url: str, sql: str, engine: str, mode: str = "stream") -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, url, sql, engine, mode], capture_output=True,
                          text=True, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["growth"], result["total"]


def test_memory_stays_bounded_for_a_million_rows(postgres_url, sqlite_url):
    pg_sql = ("SELECT i AS id, i * 1.5 AS x, TIMESTAMP '2024-01-01' + i * INTERVAL '1 second' AS t, "
              "repeat('x', 200) || i AS s FROM generate_series(1, 1000000) AS i")
    # About 230 MB of Arrow data; the stream must hold a small, fixed part of it.
    for engine in PG_ENGINES:
        growth, total = peak_growth(postgres_url, pg_sql, engine)
        assert total > 200e6, (engine, total)
        assert growth < total / 5, f"{engine}: peak RSS grew {growth / 1e6:.0f} MB for {total / 1e6:.0f} MB of rows"
    # The probe can see the difference: keeping the batches costs about the whole result.
    growth, total = peak_growth(postgres_url, pg_sql, "adbc", mode="keep")
    assert growth > total / 2, (growth, total)

    lite_sql = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000000) "
                "SELECT i AS id, i * 1.5 AS x, '2024-01-01 00:00:00.000000' AS t, "
                "printf('%.200c', 'x') || i AS s FROM s")
    growth, total = peak_growth(sqlite_url, lite_sql, "sqlalchemy")
    assert total > 200e6, total
    assert growth < total / 5, f"sqlite: peak RSS grew {growth / 1e6:.0f} MB for {total / 1e6:.0f} MB of rows"
