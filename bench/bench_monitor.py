"""Benchmark: the monitor's drift profile of a champion's training snapshot, in bounded memory.

One command:

    .venv/bin/python bench/bench_monitor.py [--rows 20000000] [--skip-pandas]

It reuses ``bench/bench_sample.py``'s synthetic snapshot (demo-like columns, 1M-row row groups;
written once and cached in ``--workdir``, default ``/tmp/refit-bench-sample``) and measures, each
in a fresh process so that its peak RSS (VmHWM) is its own:

``profile``
    What ``monitor_<model>`` does the first time it meets a champion's snapshot
    (``ml_tasks.pipeline._reference_profile``): :func:`ml_tasks.monitoring.profile.build_profile`
    over ``ParquetFile(..., pre_buffer=False).iter_batches`` of the features and the label, two
    passes, then PSI against itself.
``pandas``
    The usual way: ``pandas.read_parquet`` of the same columns, then
    :func:`ml_tasks.data.drift.feature_drift` of the frame against itself (what the report does
    on its sampled frames).

Goal, printed PASS/MISS: the profile's peak RSS under 1 GB on 20M rows. Wall seconds are
printed for context; this machine is shared, so compare the memory, not the times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_sample import _rss_mib, ensure_snapshot  # noqa: E402  (a sibling script, not a package)

NUMERIC = ["age", "income", "employment_years", "amount", "term_months", "credit_score", "existing_debt",
           "prior_applications"]
CATEGORICAL = ["region", "purpose", "channel"]
LABEL = "defaulted"
GOAL_MIB = 1024


def method_profile(path: str) -> dict:
    import pyarrow.parquet as pq

    from ml_tasks.monitoring.profile import PARQUET_OPTIONS, build_profile, psi

    started = time.perf_counter()
    parquet = pq.ParquetFile(path, **PARQUET_OPTIONS)
    columns = [*NUMERIC, *CATEGORICAL, LABEL]
    profile = build_profile(lambda: parquet.iter_batches(batch_size=65_536, columns=columns),
                            parquet.metadata.num_rows, NUMERIC, CATEGORICAL, LABEL)
    values = psi(profile, profile)
    return {"seconds": time.perf_counter() - started, "peak_mib": _rss_mib(), "rows": profile.rows,
            "max_psi": max(values.values())}


def method_pandas(path: str) -> dict:
    import pandas as pd

    from ml_tasks.core.spec import FeaturesSpec
    from ml_tasks.data.drift import feature_drift

    started = time.perf_counter()
    frame = pd.read_parquet(path, columns=[*NUMERIC, *CATEGORICAL, LABEL])
    drift = feature_drift(frame, frame, FeaturesSpec(numeric=NUMERIC, categorical=CATEGORICAL).all)
    return {"seconds": time.perf_counter() - started, "peak_mib": _rss_mib(), "rows": len(frame),
            "max_psi": max(f["psi"] for f in drift)}


METHODS = {"profile": method_profile, "pandas": method_pandas}


def run_child(method: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", method, "--path", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refit-bench-sample"))
    parser.add_argument("--skip-pandas", action="store_true", help="only the profile (the pandas load needs GBs)")
    parser.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(METHODS[args.child](args.path)))
        return
    path = ensure_snapshot(args.workdir, args.rows)
    results = {method: run_child(method, path) for method in METHODS if not (args.skip_pandas and method == "pandas")}
    print(f"\n{'method':<10}{'rows':>14}{'seconds':>10}{'peak RSS':>12}{'max PSI':>10}")
    for method, result in results.items():
        print(f"{method:<10}{result['rows']:>14,}{result['seconds']:>10.1f}{result['peak_mib']:>9,.0f} MB"
              f"{result['max_psi']:>10.2g}")
    peak = results["profile"]["peak_mib"]
    print(f"\ngoal:\n  [{'PASS' if peak < GOAL_MIB else 'MISS'}] the profile's peak RSS under 1 GB on "
          f"{results['profile']['rows']:,} rows: {peak:,.0f} MB")


if __name__ == "__main__":
    main()
