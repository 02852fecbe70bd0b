"""Batch-scoring benchmark: Refit's scoring against ``pandas.read_sql`` + ``pyfunc.predict`` + ``to_sql``.

    .venv/bin/python bench/bench_score.py [--rows 5000000] [--baseline-rows 500000] [--rounds 2]

Setup, cached between runs under ``/tmp/refit-bench-score`` and in the database
``refit_bench_score`` on the local server (same user and host as the tests):

* ``score_rows``: ``--rows`` rows to score with the demo model's twelve features, generated in
  the server by ``generate_series`` (seconds, no Python per row); ``applied_at`` grows with the
  id, so a time window selects a contiguous share of the rows.
* a champion: Refit's own ``logistic_baseline`` of the demo spec, trained and registered by
  ``pipeline.run_all`` on a small demo warehouse (an MLflow SQLite store in the cache folder).

Methods, each in a fresh process (peak RSS is its own ``VmHWM``, interpreter and imports
included), interleaved over ``--rounds`` rounds; a method's time is its best round:

``refit``     :func:`ml_tasks.scoring.score.score_interval` on every row of ``score_rows``:
              binary ``COPY`` out in Arrow batches, ``predict`` per 100,000-row chunk, ``COPY`` in,
              the interval replaced in one transaction (the destination is dropped first, so
              every round writes it from empty).
``baseline``  the usual way: ``pandas.read_sql`` of the window, ``mlflow.pyfunc.load_model(...)
              .predict`` on the whole frame, ``DataFrame.to_sql(if_exists="replace")``. It holds
              the whole result in memory (about 9 GB for 5M rows of this width), so by default
              it runs on the first ``--baseline-rows`` rows only and its rows/s is compared with
              Refit's: **the baseline's figures for 5M rows are extrapolated from that subset**
              (time linearly; its memory grows with the rows, so its RSS at 5M would be larger
              still). ``--baseline-rows 0`` runs it on every row.

Goals, printed as PASS/MISS: Refit ≥ 5x the baseline's rows/s, and Refit's peak RSS < 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_extract import peak_rss_mb  # noqa: E402  (bench/ is not a package)

ADMIN_URL = os.environ.get("REFIT_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "refit_bench_score"
CACHE = Path("/tmp/refit-bench-score")
MODEL = "credit_default"
DESTINATION = "bench_scores"
START = datetime(2024, 1, 1)
#: One second of ``applied_at`` per row: the window [START, START + n s) holds the first n rows.
QUERY = "SELECT * FROM score_rows WHERE applied_at >= :window_start AND applied_at < :as_of"
FEATURES_SQL = """
CREATE TABLE score_rows AS
SELECT i::bigint AS application_id,
       TIMESTAMP '2024-01-01' + make_interval(secs => i) AS applied_at,
       (ARRAY['north','south','east','west','central'])[1 + i % 5] AS region,
       (18 + (i * 7919) % 60)::double precision AS age,
       (20000 + ((i * 104729) % 180000))::double precision AS income,
       ((i * 31) % 40)::double precision AS employment_years,
       (1000 + ((i * 7907) % 49000))::double precision AS amount,
       (ARRAY[12, 24, 36, 48, 60])[1 + (i / 7) % 5]::double precision AS term_months,
       (ARRAY['car','home','education','debt_consolidation','other'])[1 + (i / 3) % 5] AS purpose,
       (ARRAY['branch','web','partner','mobile'])[1 + (i / 11) % 4] AS channel,
       (300 + (i * 6151) % 550)::double precision AS credit_score,
       ((i * 3571) % 60000)::double precision AS existing_debt,
       ((i / 13) % 6)::double precision AS prior_applications,
       ((i / 101) % 2)::double precision AS prior_defaults_observed
FROM generate_series(0::bigint, {last}::bigint) AS i
"""


def bench_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(ADMIN_URL).set(database=BENCH_DB).render_as_string(hide_password=False)


def ensure_rows(rows: int) -> str:
    """``score_rows`` with ``rows`` rows in the bench database (built once per size)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": BENCH_DB}).first():
            conn.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    admin.dispose()
    engine = create_engine(bench_url())
    with engine.begin() as conn:
        have = conn.execute(text("SELECT count(*) FROM pg_class WHERE relname = 'score_rows'")).scalar()
        count = conn.execute(text("SELECT count(*) FROM score_rows")).scalar() if have else None
        if count != rows:
            started = time.perf_counter()
            conn.execute(text("DROP TABLE IF EXISTS score_rows"))
            conn.execute(text(FEATURES_SQL.format(last=rows - 1)))
            print(f"built score_rows: {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE score_rows"))
    engine.dispose()
    return bench_url()


def bench_env() -> dict[str, str]:
    """The cache's embedded Refit home (its MLflow store holds the champion)."""
    drop = {"REFIT_WAREHOUSE_URL", "REFIT_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI", "REFIT_INCLUDE_DIR"}
    env = {name: value for name, value in os.environ.items() if name not in drop}
    return env | {"REFIT_HOME": str(CACHE / "refit"), "MLFLOW_CONFIGURE_LOGGING": "false", "REFIT_LOG_FILE": ""}


def ensure_champion() -> None:
    """A logistic champion of the demo spec, trained by Refit's own pipeline (once)."""
    marker = CACHE / "champion.json"
    if marker.exists():
        return
    code = ("from ml_tasks import pipeline; from ml_tasks.data.demo_warehouse import build_demo_warehouse; "
            "from ml_tasks.core.settings import load_settings, ensure_local_folders, REPO_ROOT; "
            "s = load_settings(); ensure_local_folders(s); "
            "build_demo_warehouse(s.warehouse_url, rows=20000, seed=3); "
            "print(pipeline.run_all(str(REPO_ROOT / 'include/models/credit_default.yaml'), '2024-06-01', "
            "candidates=['logistic_baseline'])['champion_version'])")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=bench_env(), capture_output=True, text=True)
    if done.returncode != 0 or done.stdout.strip().splitlines()[-1] != "1":
        raise SystemExit(f"could not train the bench champion:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    marker.write_text(json.dumps({"version": "1"}))
    print(f"trained the champion (logistic_baseline, version 1) in {time.perf_counter() - started:.1f} s", flush=True)


def window(rows: int) -> tuple[datetime, datetime]:
    return START, START + timedelta(seconds=rows)


def drop_destination(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {DESTINATION}"))
    engine.dispose()


# ---------------------------------------------------------------------------------------------
# The methods (each runs in a child process)
# ---------------------------------------------------------------------------------------------


def run_refit(url: str, rows: int) -> dict:
    import mlflow.pyfunc  # noqa: F401  (imports before the timer)

    from ml_tasks.core.manifests import ScoringModel, ScoringPlan
    from ml_tasks.core.settings import load_settings
    from ml_tasks.core.spec import ScoringSpec, load_spec
    from ml_tasks.scoring.score import score_interval

    settings = load_settings()
    demo = load_spec(REPO / "include" / "models" / f"{MODEL}.yaml")
    # check_features off: score_rows has no training query to compare with (the check is not timed here).
    spec = demo.model_copy(update={"scoring": ScoringSpec(query=QUERY, destination=DESTINATION, window_days=3650,
                                                          check_features=False)})
    start, end = window(rows)
    plan = ScoringPlan(model=MODEL, registry_name=MODEL, spec_path="bench", as_of=end, window_start=start,
                       run_key="bench", run_prefix=str(CACHE / "runs" / "bench"), dag_run_id="bench",
                       destination=DESTINATION, champion=ScoringModel(version="1", model_uri=f"models:/{MODEL}/1"))
    started = time.perf_counter()
    manifest = score_interval(spec, plan, url, REPO / "include", settings)
    return {"rows": manifest.rows, "seconds": time.perf_counter() - started, "engine": manifest.engine}


def run_baseline(url: str, rows: int) -> dict:
    import mlflow.pyfunc
    import pandas as pd
    from sqlalchemy import create_engine, text

    from ml_tasks.core.settings import load_settings
    from ml_tasks.registry.tracking import use_store

    use_store(load_settings())
    features = ["age", "income", "employment_years", "amount", "term_months", "credit_score", "existing_debt",
                "prior_applications", "prior_defaults_observed", "region", "purpose", "channel"]
    start, end = window(rows)
    started = time.perf_counter()
    engine = create_engine(url)
    frame = pd.read_sql(text(QUERY), engine, params={"window_start": start, "as_of": end})
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    # The one conversion the signature needs: text columns as plain objects, as the model was trained.
    inputs = frame[features].astype(dict.fromkeys(("region", "purpose", "channel"), object))
    scores = model.predict(inputs)["probability"].to_numpy()
    pd.DataFrame({"id": frame["application_id"], "score": scores, "model_version": "1", "run_key": "bench",
                  "scored_at": datetime.now()}).to_sql(DESTINATION, engine, if_exists="replace", index=False)
    engine.dispose()
    return {"rows": len(frame), "seconds": time.perf_counter() - started, "engine": "pandas"}


def spawn(method: str, url: str, rows: int) -> dict:
    drop_destination(url)
    done = subprocess.run([sys.executable, __file__, "--child", method, "--url", url, "--rows", str(rows)],
                          env=bench_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows Refit scores (default 5,000,000)")
    parser.add_argument("--baseline-rows", type=int, default=500_000,
                        help="rows the baseline scores, extrapolated to --rows (0: all of them)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per method, interleaved (default 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = (run_refit if args.child == "refit" else run_baseline)(args.url, args.rows)
        print(json.dumps(result | {"peak_rss_mb": peak_rss_mb()}))
        return 0

    CACHE.mkdir(parents=True, exist_ok=True)
    url = ensure_rows(args.rows)
    ensure_champion()
    baseline_rows = args.baseline_rows or args.rows
    runs: dict[str, list[dict]] = {"refit": [], "baseline": []}
    for round_number in range(1, args.rounds + 1):
        for method, rows in (("refit", args.rows), ("baseline", baseline_rows)):
            result = spawn(method, url, rows)
            runs[method].append(result)
            print(f"round {round_number}: {method:8s} {result['rows']:>10,} rows {result['seconds']:8.2f} s "
                  f"{result['rows'] / result['seconds']:>10,.0f} rows/s  peak RSS {result['peak_rss_mb']:6.0f} MB",
                  flush=True)
    report(runs, args.rows, baseline_rows)
    return 0


def report(runs: dict[str, list[dict]], rows: int, baseline_rows: int) -> None:
    best = {method: min(results, key=lambda r: r["seconds"]) for method, results in runs.items()}
    rate = {method: r["rows"] / r["seconds"] for method, r in best.items()}
    peak = {method: max(r["peak_rss_mb"] for r in results) for method, results in runs.items()}
    ratio = rate["refit"] / rate["baseline"]
    print("\nmethod      rows scored      best s        rows/s   peak RSS   note")
    print(f"refit       {best['refit']['rows']:>11,} {best['refit']['seconds']:11.2f} {rate['refit']:13,.0f} "
          f"{peak['refit']:7.0f} MB   engine {best['refit']['engine']}, chunks of 100,000")
    note = ("" if baseline_rows == rows else
            f"subset; at {rows:,} rows: ~{rows / rate['baseline']:,.0f} s extrapolated")
    print(f"baseline    {best['baseline']['rows']:>11,} {best['baseline']['seconds']:11.2f} "
          f"{rate['baseline']:13,.0f} {peak['baseline']:7.0f} MB   {note}")
    print("\ngoals:")
    print(f"  [{'PASS' if ratio >= 5 else 'MISS'}] >= 5x the baseline's rows/s: {ratio:.2f}x")
    print(f"  [{'PASS' if peak['refit'] < 1024 else 'MISS'}] Refit's peak RSS under 1 GB: {peak['refit']:.0f} MB")


if __name__ == "__main__":
    raise SystemExit(main())
