"""Extraction benchmark: ml_tasks.io.warehouse.stream_query against the usual ways out of PostgreSQL.

    .venv/bin/python bench/bench_extract.py [--rows 5000000] [--rounds 3] [--batch-rows 131072]

Setup, cached between runs: a throwaway database ``refit_bench`` on the local server (same
user and host as the tests) holding ``bench_rows``, the demo warehouse generated at ``--rows``
applications and flattened into one table of 20 columns (ids, timestamps, floats, ints, text).
The point-in-time subqueries of the real extraction query are precomputed, so the benchmark
measures transfer and parsing, not the query plan. The table is rebuilt only when ``--rows``
or the layout changes (``--rebuild`` forces it).

Every method reads the same rows, ``SELECT * FROM bench_rows WHERE applied_at >= :window_start
AND applied_at < :as_of`` with a window that covers the whole table. Each run is a fresh
subprocess, so peak RSS (``VmHWM``) is per method and includes the interpreter and its
imports (the ``idle`` line shows that floor). The timer starts after imports and stops when
the last row has been consumed. Rounds interleave the methods, so a noisy neighbour slows
all of them alike. A method's time is its best round; the median is shown beside it.

Methods:
  pandas.read_sql        pandas over SQLAlchemy + psycopg with bound parameters (the usual pipeline)
  connectorx             connectorx.read_sql(..., return_type="arrow"): whole table in memory
  adbc                   adbc_driver_postgresql.dbapi, cursor.fetch_arrow_table(): whole table in memory
  stream_query           the project's stream_query (engine="auto"), batches consumed one by one
  stream_query>parquet   the same, written to a Parquet file batch by batch (what extraction does)
  stream_query[copy_csv] the CSV engine ``auto`` passes over, for the record
  extract_snapshot       the whole extract stage: stream_query, Parquet, content hash, label
                         balance, time range and strata counts, staged in a local artifact store
  raw COPY binary / csv  psycopg COPY (query) TO STDOUT streamed to /dev/null: the speed limit
  idle                   imports only: the RSS floor every method starts from

ConnectorX and ADBC cannot bind parameters in a form that keeps memory bounded, so they get
the query with literal values, quoted by psycopg. ``--methods`` runs a subset.
``stream_query[sqlalchemy]`` (the generic engine other dialects use) is available on
request, and it is slow.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ADMIN_URL = os.environ.get("REFIT_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "refit_bench"
LAYOUT_VERSION = 1
SEED = 42

QUERY = "SELECT * FROM bench_rows WHERE applied_at >= :window_start AND applied_at < :as_of"
PARAMS = {"window_start": datetime(2000, 1, 1), "as_of": datetime(2100, 1, 1)}
# What the credit_default spec asks for (ids/label int64, timestamps, numeric features float64,
# categoricals string); the three derived columns keep the engine's type.
COLUMN_TYPES = {
    "application_id": "int64", "customer_id": "int64", "defaulted": "int64",
    "applied_at": "timestamp", "observed_at": "timestamp", "signup_date": "timestamp",
    "age": "float64", "income": "float64", "employment_years": "float64", "amount": "float64",
    "term_months": "float64", "credit_score": "float64", "existing_debt": "float64",
    "prior_applications": "float64",
    "region": "string", "purpose": "string", "channel": "string",
}

FLATTEN_SQL = """
CREATE TABLE bench_rows AS
SELECT a.application_id::bigint AS application_id,
       a.customer_id::bigint    AS customer_id,
       a.applied_at,
       o.observed_at,
       o.defaulted,
       c.signup_date,
       c.region,
       c.age,
       c.income,
       c.employment_years,
       a.amount,
       a.term_months,
       a.purpose,
       a.channel,
       a.credit_score,
       a.existing_debt,
       (a.existing_debt + a.amount) / c.income                      AS debt_to_income,
       (a.applied_at::date - c.signup_date::date)                   AS tenure_days,
       COUNT(*) OVER (PARTITION BY a.customer_id ORDER BY a.applied_at, a.application_id
                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prior_applications,
       (EXTRACT(EPOCH FROM o.observed_at - a.applied_at) / 86400.0)::float8 AS label_delay_days
  FROM applications a
  JOIN customers c ON c.customer_id = a.customer_id
  JOIN outcomes o ON o.application_id = a.application_id
 ORDER BY a.applied_at, a.application_id
"""

METHODS = ("idle", "pandas.read_sql", "connectorx", "adbc", "stream_query", "stream_query>parquet",
           "extract_snapshot", "stream_query[copy_csv]", "raw COPY binary", "raw COPY csv")
OPTIONAL_METHODS = ("stream_query[sqlalchemy]",)
PROJECT = "stream_query"


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


def bench_url(admin_url: str = ADMIN_URL) -> str:
    from sqlalchemy import make_url

    return make_url(admin_url).set(database=BENCH_DB).render_as_string(hide_password=False)


def ensure_table(rows: int, admin_url: str = ADMIN_URL, rebuild: bool = False) -> str:
    """Create ``refit_bench.bench_rows`` with ``rows`` rows unless it is already there."""
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": BENCH_DB}).scalar():
            conn.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    admin.dispose()
    url = bench_url(admin_url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            cached = None
            if conn.execute(text("SELECT to_regclass('bench_meta') IS NOT NULL")).scalar():
                cached = conn.execute(text("SELECT rows, layout FROM bench_meta")).first()
        if not rebuild and cached is not None and tuple(cached) == (rows, LAYOUT_VERSION):
            return url
        from ml_tasks.data.demo_warehouse import build_demo_warehouse

        started = time.perf_counter()
        print(f"setup: generating {rows:,} demo applications into database {BENCH_DB} ...", flush=True)
        build_demo_warehouse(url, rows=rows, seed=SEED)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS bench_rows, bench_meta"))
            conn.execute(text(FLATTEN_SQL))
            conn.execute(text("DROP TABLE applications, customers, outcomes"))
            conn.execute(text("CREATE TABLE bench_meta (rows bigint, layout int)"))
            conn.execute(text("INSERT INTO bench_meta VALUES (:r, :l)"), {"r": rows, "l": LAYOUT_VERSION})
        # Frozen and analysed: no run pays for setting hint bits or for stale statistics.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (FREEZE, ANALYZE) bench_rows"))
        print(f"setup: done in {time.perf_counter() - started:.0f} s", flush=True)
        return url
    finally:
        engine.dispose()


def describe_table(url: str) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        info = {
            "rows": conn.execute(text("SELECT count(*) FROM bench_rows")).scalar(),  # also warms the OS cache
            "columns": conn.execute(text("SELECT count(*) FROM information_schema.columns "
                                         "WHERE table_name = 'bench_rows'")).scalar(),
            "size": conn.execute(text("SELECT pg_size_pretty(pg_table_size('bench_rows'))")).scalar(),
            "server": conn.execute(text("SHOW server_version")).scalar(),
        }
    engine.dispose()
    return info


# ---------------------------------------------------------------------------------------------
# One method, in its own process
# ---------------------------------------------------------------------------------------------


def literal_query(url: str) -> str:
    """QUERY with its parameters quoted by psycopg, for the readers that cannot bind them."""
    from ml_tasks.io.warehouse.postgres import psycopg_connect, with_literals

    with psycopg_connect(url) as conn:
        return with_literals(conn, QUERY, PARAMS)


def libpq_uri(url: str) -> str:
    from ml_tasks.io.warehouse.postgres import adbc_uri

    return adbc_uri(url)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    VmHWM rather than getrusage's ru_maxrss: Linux carries ru_maxrss over an exec, so a child
    started by a parent that once held a big table would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_method(method: str, url: str, batch_rows: int) -> dict:
    """Run one method and return rows, seconds and peak RSS. Called in a fresh subprocess."""
    # Imports happen before the timer, so they count in the RSS floor and not in the time.
    import pyarrow as pa  # noqa: F401
    import pyarrow.parquet as pq

    from ml_tasks.io.warehouse import stream_query

    idle_mb = peak_rss_mb()
    rows = 0
    if method == "pandas.read_sql":
        import pandas as pd
        from sqlalchemy import DateTime, bindparam, create_engine, text

        engine = create_engine(url)
        statement = text(QUERY).bindparams(*(bindparam(k, type_=DateTime()) for k in PARAMS))
        started = time.perf_counter()
        with engine.connect() as conn:
            frame = pd.read_sql(statement, conn, params=PARAMS)
        rows = len(frame)
    elif method == "connectorx":
        import connectorx as cx

        # ConnectorX parses the URI itself and rejects libpq's client_encoding (it always reads UTF-8).
        sql, uri = literal_query(url), libpq_uri(url).replace("?client_encoding=UTF8", "")
        started = time.perf_counter()
        rows = cx.read_sql(uri, sql, return_type="arrow").num_rows
    elif method == "adbc":
        import adbc_driver_postgresql.dbapi as adbc

        sql, uri = literal_query(url), libpq_uri(url)
        started = time.perf_counter()
        with adbc.connect(uri) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            rows = cursor.fetch_arrow_table().num_rows
    elif method.startswith("stream_query"):
        engine_name = method.split("[")[1].rstrip("]") if "[" in method else "auto"
        started = time.perf_counter()
        batches = stream_query(url, QUERY, PARAMS, COLUMN_TYPES, batch_rows=batch_rows, engine=engine_name)
        if method.endswith(">parquet"):
            with tempfile.TemporaryDirectory(prefix="refit-bench-") as folder:
                first = next(batches)
                with pq.ParquetWriter(Path(folder) / "snapshot.parquet", first.schema) as writer:
                    for batch in itertools.chain([first], batches):
                        writer.write_batch(batch)
                        rows += batch.num_rows
        else:
            for batch in batches:
                rows += batch.num_rows
    elif method == "extract_snapshot":
        with tempfile.TemporaryDirectory(prefix="refit-bench-") as folder:
            spec, plan, store, include = bench_spec(url, Path(folder))
            from ml_tasks.data.extract import extract_snapshot

            started = time.perf_counter()
            rows = extract_snapshot(spec, plan, store, url, include, chunk_rows=batch_rows).rows
            seconds = time.perf_counter() - started
    elif method.startswith("raw COPY"):
        fmt = method.split()[-1]
        sql = literal_query(url)
        from ml_tasks.io.warehouse.postgres import copy_target, psycopg_connect

        started = time.perf_counter()
        with psycopg_connect(url) as conn, open(os.devnull, "wb") as sink, \
                conn.cursor().copy(f"COPY {copy_target(sql)} TO STDOUT WITH (FORMAT {fmt})") as copy:
            for data in copy:
                sink.write(data)
        rows = None  # COPY to /dev/null counts no rows; the table's count is used
    elif method == "idle":
        started = time.perf_counter()
    else:
        raise SystemExit(f"unknown method {method!r}")
    if method != "extract_snapshot":
        seconds = time.perf_counter() - started
    return {"method": method, "rows": rows, "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(), "idle_rss_mb": idle_mb}


def bench_spec(url: str, folder: Path):
    """A model spec, run plan and artifact store for ``bench_rows``, as the extract task gets them."""
    from sqlalchemy import create_engine, text

    from ml_tasks.core.plan import make_plan
    from ml_tasks.core.spec import ModelSpec
    from ml_tasks.io.store import ArtifactStore

    engine = create_engine(url)
    with engine.connect() as conn:
        newest = conn.execute(text("SELECT max(applied_at) FROM bench_rows")).scalar()
    engine.dispose()
    include = folder / "include"
    (include / "sql").mkdir(parents=True)
    (include / "sql" / "bench.sql").write_text(QUERY)
    spec = ModelSpec.model_validate({
        "name": "bench", "registry_name": "bench", "schedule": "@daily",
        "source": {"query_file": "sql/bench.sql", "tables": ["bench_rows"], "window_days": 3650},
        "columns": {"id": "application_id", "label": "defaulted", "timestamp": "applied_at",
                    "label_observed_at": "observed_at", "entity": "customer_id"},
        "features": {"numeric": [c for c, t in COLUMN_TYPES.items() if t == "float64"],
                     "categorical": [c for c, t in COLUMN_TYPES.items() if t == "string"]},
        "sampling": {"size": 1000, "segments": ["channel"]},
        "split": {"validation_fraction": 0.15, "test_fraction": 0.25},
        "candidates": [{"name": "prior", "family": "prior"}],
    })
    store = ArtifactStore(str(folder / "artifacts"))
    as_of = newest.replace(microsecond=0) + timedelta(days=1)
    plan = make_plan(spec, include / "bench.yaml", include, store.layout, as_of)
    return spec, plan, store, include


def spawn(method: str, url: str, batch_rows: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", method, "--url", url, "--batch-rows", str(batch_rows)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows in bench_rows (default 5,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per method, interleaved (default 3)")
    parser.add_argument("--pandas-rounds", type=int, default=1,
                        help="runs of pandas.read_sql, the slow baseline (default 1)")
    parser.add_argument("--batch-rows", type=int, default=131_072)
    parser.add_argument("--methods", nargs="+", choices=METHODS + OPTIONAL_METHODS, default=list(METHODS))
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the table even if it is cached")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_method(args.child, args.url, args.batch_rows)))
        return 0

    from ml_tasks.io.warehouse import available_engines

    url = ensure_table(args.rows, args.admin_url, args.rebuild)
    info = describe_table(url)
    engines = available_engines(url)
    print(f"bench_rows: {info['rows']:,} rows x {info['columns']} columns, {info['size']} on disk; "
          f"PostgreSQL {info['server']}; {os.cpu_count()} CPUs shared with the server; batch_rows={args.batch_rows:,}")
    print(f"stream_query engine='auto' -> {engines[0]!r} (available: {engines})")

    methods = list(dict.fromkeys(args.methods))
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for round_no in range(1, args.rounds + 1):
        for method in methods:
            if method == "pandas.read_sql" and round_no > args.pandas_rounds:
                continue
            result = spawn(method, url, args.batch_rows)
            if result["rows"] is None:
                result["rows"] = info["rows"]
            elif method != "idle" and result["rows"] != info["rows"]:
                raise SystemExit(f"{method} read {result['rows']} rows, expected {info['rows']}")
            results[method].append(result)
            print(f"  round {round_no}: {method:<24} {result['seconds']:7.2f} s  "
                  f"peak RSS {result['peak_rss_mb']:6.0f} MB", flush=True)

    summary = {}
    for method, runs in results.items():
        if not runs:
            continue
        times = [r["seconds"] for r in runs]
        best = min(times)
        summary[method] = {"best": best, "median": statistics.median(times), "runs": len(times),
                           "rows_per_s": info["rows"] / best if best > 0 else float("nan"),
                           "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}

    print()
    print(f"{'method':<26}{'best s':>8}{'median s':>10}{'rows/s':>14}{'peak RSS':>11}"
          f"{'stream_query vs it':>20}{'>parquet vs it':>16}")
    project = summary.get(PROJECT)
    parquet = summary.get(PROJECT + ">parquet")
    for method, s in summary.items():
        if method == "idle":
            print(f"{'idle (imports only)':<26}{'':>8}{'':>10}{'':>14}{s['peak_rss_mb']:>8.0f} MB")
            continue
        ratio = f"{project['rows_per_s'] / s['rows_per_s']:.2f}x" if project else "-"
        ratio_pq = f"{parquet['rows_per_s'] / s['rows_per_s']:.2f}x" if parquet else "-"
        print(f"{method:<26}{s['best']:>8.2f}{s['median']:>10.2f}{s['rows_per_s']:>14,.0f}{s['peak_rss_mb']:>8.0f} MB"
              f"{ratio:>20}{ratio_pq:>16}")

    if project:
        print()
        print("goals (stream_query, batches consumed):")

        def goal(label: str, ok: bool, detail: str) -> None:
            print(f"  [{'PASS' if ok else 'MISS'}] {label}: {detail}")

        rivals = [m for m in ("connectorx", "adbc") if m in summary]
        if rivals:
            fastest = max(rivals, key=lambda m: summary[m]["rows_per_s"])
            r = project["rows_per_s"] / summary[fastest]["rows_per_s"]
            goal("at least as fast as the fastest of ConnectorX and ADBC", r >= 1.0, f"{r:.2f}x {fastest}")
        if "pandas.read_sql" in summary:
            r = project["rows_per_s"] / summary["pandas.read_sql"]["rows_per_s"]
            goal(">= 4x pandas.read_sql", r >= 4.0, f"{r:.2f}x")
        raws = [m for m in ("raw COPY binary", "raw COPY csv") if m in summary]
        if raws:
            limit = max(raws, key=lambda m: summary[m]["rows_per_s"])
            r = project["rows_per_s"] / summary[limit]["rows_per_s"]
            goal(">= 0.6x raw COPY", r >= 0.6, f"{r:.2f}x {limit}")
        peak = max(s["peak_rss_mb"] for m, s in summary.items() if m.startswith(PROJECT) or m == "extract_snapshot")
        goal("peak RSS under 1 GB", peak < 1024, f"{peak:.0f} MB (largest of the stream_query and extract runs)")
        if "extract_snapshot" in summary:
            r = summary["extract_snapshot"]["rows_per_s"] / project["rows_per_s"]
            print(f"  [info] the whole extract stage (Parquet, hash, stats) runs at {r:.2f}x stream_query")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
