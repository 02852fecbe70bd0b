"""Benchmark: the stratified reservoir sampler against a plain scan and DuckDB's reservoir.

One command:

    .venv/bin/python bench/bench_sample.py [--rows 20000000] [--sample 1000000] [--repeat 3]

It writes (once, cached in ``--workdir``, default ``/tmp/refit-bench-sample``) a synthetic
snapshot that looks like the demo data - 20 columns: ids, timestamps, a ~6 % default label,
categorical ``region``/``purpose``/``channel`` (``mobile`` is the rare channel), numerics; 1M-row
row groups - plus one a quarter of the size, and then measures, each run in a fresh
subprocess so its peak RSS is its own:

``scan``
    ``ParquetFile(path).iter_batches()`` over all columns with pyarrow's defaults, touching
    every batch. Note ``pre_buffer=True`` (the default) pre-reads the column chunks of the
    row groups ahead: its memory grows with the file.
``scan-streamed``
    The same scan with the reader options the sampler uses (``pre_buffer=False``, a 1 MiB
    buffered stream). The faster of the two scans is "the limit".
``duckdb``
    ``SELECT * FROM read_parquet(...) USING SAMPLE reservoir(N ROWS)`` fetched as an Arrow
    table, with DuckDB's default thread count (printed).
``sampler``
    ``ml_tasks.data.sampling.reservoir_sample_parquet`` stratified by ``defaulted x channel``,
    proportional allocation with a floor, quotas known up front (the pipeline has the counts).
``count+sampler``
    The same plus the counting pass (``count_strata_parquet``, strata columns only) for when
    the counts are not known.
``sampler @<n>M``
    The sampler on the quarter-size snapshot: its peak memory should not grow with the file.

It prints wall and CPU seconds, rows/s, peak RSS and RSS at the start of the measurement, and
the ratios sampler/scan and sampler/DuckDB. The methods run interleaved, ``--repeat`` times,
and the best run of each counts: timings on shared machines are noisy, compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

LAYOUT_VERSION = 1
ROW_GROUP_ROWS = 1_000_000
BATCH_ROWS = 131_072
STRATA = ["defaulted", "channel"]
FLOOR = 10_000
SEED = 42

REGIONS = ["north", "south", "east", "west", "central"]
PURPOSES = ["car", "home", "education", "debt_consolidation", "other"]
CHANNELS = ["branch", "web", "partner", "mobile"]


# ---------------------------------------------------------------------------------------------
# Synthetic snapshot
# ---------------------------------------------------------------------------------------------


def snapshot_path(workdir: Path, rows: int) -> Path:
    return workdir / f"snapshot-{rows}-v{LAYOUT_VERSION}.parquet"


def ensure_snapshot(workdir: Path, rows: int) -> Path:
    """Write the synthetic snapshot unless a complete one is cached (written to a temporary
    name and renamed, so an interrupted run never leaves a half file under the final name)."""
    path = snapshot_path(workdir, rows)
    if path.exists():
        return path
    import pyarrow.parquet as pq

    workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    started = time.perf_counter()
    print(f"setup: writing {rows:,} rows to {path} ...", flush=True)
    writer = None
    children = np.random.SeedSequence(SEED).spawn((rows + ROW_GROUP_ROWS - 1) // ROW_GROUP_ROWS)
    for index, start in enumerate(range(0, rows, ROW_GROUP_ROWS)):
        table = make_chunk(start, min(ROW_GROUP_ROWS, rows - start), rows, np.random.default_rng(children[index]))
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    writer.close()
    tmp.rename(path)
    print(f"setup: done in {time.perf_counter() - started:.1f} s ({path.stat().st_size / 2**20:,.0f} MiB)", flush=True)
    return path


def make_chunk(start: int, n: int, total: int, rng: np.random.Generator):
    """Rows ``start .. start+n`` of the snapshot, all columns drawn with whole-array numpy."""
    import pyarrow as pa

    def categorical(levels: list[str], codes: np.ndarray) -> pa.Array:
        # Indices into a small dictionary, cast to plain strings in C++: no Python per row.
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(levels)).cast(pa.string())

    span = 2 * 365 * 86_400  # two years of applications, in time order like a snapshot
    t0 = np.datetime64("2023-01-01T00:00:00", "s").astype(np.int64)
    applied = t0 + np.sort(rng.integers(start * span // total, (start + n) * span // total, n))
    month = (applied - t0) / (span / 24)
    customer = rng.integers(0, total // 3 + 1, n)
    age = rng.integers(18, 80, n)
    income = np.exp(rng.normal(10.8, 0.5, n))
    employment = np.minimum(rng.exponential(6.0, n), age - 17.0)
    purpose = rng.choice(len(PURPOSES), n, p=[0.26, 0.14, 0.10, 0.30, 0.20])
    amount = np.exp(rng.normal(np.log([18_000, 45_000, 14_000, 12_000, 5_000])[purpose], 0.6))
    term = rng.choice([12, 24, 36, 48, 60], n)
    # The mobile channel opens in month 12 and stays rare: the stratum the floor protects.
    mobile = (month >= 12) & (rng.random(n) < 0.06)
    channel = np.where(mobile, 3, rng.choice(3, n, p=[0.35, 0.45, 0.20]))
    score = np.clip(rng.normal(680, 60, n), 300, 850).astype(np.int64)
    debt = rng.exponential(8_000, n)
    dti = (debt + amount) / income
    logit = -3.3 - 0.012 * (score - 680) + 0.9 * (dti - 0.6) + np.array([-0.2, 0.0, 0.1, 0.7])[channel]
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    delay = rng.uniform(60, 90, n)
    signup = applied - rng.integers(0, 5 * 365 * 86_400, n)
    tenure = (applied - signup) // 86_400
    us = np.int64(1_000_000)
    return pa.table({
        "application_id": np.arange(start, start + n, dtype=np.int64),
        "customer_id": customer,
        "applied_at": pa.array(applied * us, pa.timestamp("us")),
        "observed_at": pa.array((applied + (delay * 86_400).astype(np.int64)) * us, pa.timestamp("us")),
        "defaulted": label,
        "signup_date": pa.array(signup * us, pa.timestamp("us")),
        "region": categorical(REGIONS, rng.choice(5, n, p=[0.22, 0.21, 0.19, 0.18, 0.20])),
        "age": age,
        "income": income,
        "employment_years": employment,
        "amount": amount,
        "term_months": term,
        "purpose": categorical(PURPOSES, purpose),
        "channel": categorical(CHANNELS, channel),
        "credit_score": score,
        "existing_debt": debt,
        "debt_to_income": dti,
        "tenure_days": tenure,
        "prior_applications": rng.poisson(1.5, n),
        "label_delay_days": delay,
    })


# ---------------------------------------------------------------------------------------------
# Methods (each runs in its own process)
# ---------------------------------------------------------------------------------------------


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM rather than getrusage's ru_maxrss: Linux carries ru_maxrss over an exec, so a child
    would report its parent's peak (the parent generated the snapshot)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _scan(path: str, **reader_options) -> dict:
    import pyarrow.parquet as pq

    base = _rss_mib()
    started, cpu = time.perf_counter(), _cpu()
    rows = nbytes = 0
    for batch in pq.ParquetFile(path, **reader_options).iter_batches(batch_size=BATCH_ROWS):
        rows += batch.num_rows
        nbytes += batch.nbytes  # touch every batch
    return {"seconds": time.perf_counter() - started, "cpu": _cpu() - cpu, "rows": rows, "rss_imports_mib": base,
            "note": f"{nbytes / 2**30:.1f} GiB decoded"}


def method_scan(path: str, sample: int, quotas_file: str) -> dict:
    """pyarrow's defaults: ``pre_buffer=True`` pre-reads every row group's column chunks."""
    return _scan(path)


def method_scan_streamed(path: str, sample: int, quotas_file: str) -> dict:
    """The reader options the sampler uses: no pre-buffering, a 1 MiB buffered stream."""
    result = _scan(path, pre_buffer=False, buffer_size=1 << 20)
    result["note"] += "; pre_buffer=False, buffer_size=1 MiB"
    return result


def method_duckdb(path: str, sample: int, quotas_file: str) -> dict:
    import duckdb

    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    rows = con.execute("SELECT num_rows FROM parquet_file_metadata(?)", [path]).fetchone()[0]
    base = _rss_mib()
    started, cpu = time.perf_counter(), _cpu()
    table = con.execute(f"SELECT * FROM read_parquet(?) USING SAMPLE reservoir({int(sample)} ROWS)",
                        [path]).to_arrow_table()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": _cpu() - cpu, "rows": rows, "rss_imports_mib": base, "sampled": table.num_rows,
            "note": f"threads={threads}, duckdb {duckdb.__version__}"}


def _sample(path: str, quotas: dict, started: tuple[float, float], base: float, counted: bool) -> dict:
    from ml_tasks.core.columns import WEIGHT
    from ml_tasks.data.sampling import reservoir_sample_parquet

    result = reservoir_sample_parquet(path, STRATA, quotas, seed=SEED, batch_rows=BATCH_ROWS)
    seconds, cpu = time.perf_counter() - started[0], _cpu() - started[1]
    label = result.table.column("defaulted").to_numpy()
    weight = result.table.column(WEIGHT).to_numpy()
    population_rate = sum(s.population for k, s in result.strata.items() if k[0] == 1) / result.rows_scanned
    buffer_peak = result.peak_buffer_rows / max(result.table.num_rows, 1)
    return {"seconds": seconds, "cpu": cpu, "rows": result.rows_scanned, "rss_imports_mib": base,
            "sampled": result.table.num_rows,
            "note": (f"{len(result.strata)} strata, buffer peak {buffer_peak:.2f}x"
                     f" sample; label rate {label.mean():.4f} sample, {np.average(label, weights=weight):.4f} "
                     f"reweighted, {population_rate:.4f} population" + ("; includes counting" if counted else ""))}


def method_sampler(path: str, sample: int, quotas_file: str) -> dict:
    """Quotas known up front (the pipeline has the counts from validation): the parent
    computed them, so this process only samples."""
    import pyarrow  # noqa: F401  (imported before the baseline RSS, like the other methods)

    import ml_tasks.data.sampling  # noqa: F401

    quotas = {tuple(key): n for key, n in json.loads(Path(quotas_file).read_text())}
    base = _rss_mib()
    return _sample(path, quotas, (time.perf_counter(), _cpu()), base, counted=False)


def method_count_sampler(path: str, sample: int, quotas_file: str) -> dict:
    """Counts not known: count the strata (strata columns only), allocate, then sample."""
    import pyarrow  # noqa: F401

    from ml_tasks.data.sampling import allocate, count_strata_parquet

    base = _rss_mib()
    started = (time.perf_counter(), _cpu())
    quotas = allocate(count_strata_parquet(path, STRATA, batch_rows=BATCH_ROWS), sample, floor=FLOOR)
    return _sample(path, quotas, started, base, counted=True)


METHODS = {"scan": method_scan, "scan-streamed": method_scan_streamed, "duckdb": method_duckdb,
           "sampler": method_sampler, "count+sampler": method_count_sampler}


def write_quotas(path: Path, sample: int) -> Path:
    """Count the strata and allocate once, in this process, for the ``sampler`` children."""
    from ml_tasks.data.sampling import allocate, count_strata_parquet

    quotas = allocate(count_strata_parquet(path, STRATA, batch_rows=BATCH_ROWS), sample, floor=FLOOR)
    out = path.with_name(f"{path.stem}-quotas-{sample}.json")
    out.write_text(json.dumps([[list(key), n] for key, n in quotas.items()]))
    return out


def run_child(method: str, path: Path, sample: int, quotas: Path | None = None) -> dict:
    """One run in a fresh interpreter, so the peak RSS is the method's own."""
    command = [sys.executable, __file__, "--child", method, "--path", str(path), "--sample", str(sample),
               "--quotas", str(quotas or "")]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--sample", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refit-bench-sample"))
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per method (interleaved)")
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--quotas", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = METHODS[args.child](args.path, args.sample, args.quotas)
        result["peak_rss_mib"] = _rss_mib()
        print(json.dumps(result))
        return

    small_rows = max(args.rows // 4, args.sample)
    big = ensure_snapshot(args.workdir, args.rows)
    small = ensure_snapshot(args.workdir, small_rows)
    print(f"machine: {os.cpu_count()} cores; snapshot {args.rows:,} rows x 20 columns "
          f"({big.stat().st_size / 2**20:,.0f} MiB); sample {args.sample:,} rows; batch {BATCH_ROWS:,} rows; "
          f"strata {' x '.join(STRATA)}, floor {FLOOR:,}", flush=True)
    run_child("scan-streamed", big, args.sample)  # warm the page cache; not reported

    small_name = f"sampler @{small_rows / 1e6:g}M"
    quotas_big, quotas_small = write_quotas(big, args.sample), write_quotas(small, args.sample)
    results: dict[str, dict] = {}
    for _ in range(args.repeat):  # interleaved, so a noisy minute hurts every method alike
        for name in ("scan", "scan-streamed", "duckdb", "sampler", "count+sampler", small_name):
            method, path, quotas = (("sampler", small, quotas_small) if name == small_name else (name, big, quotas_big))
            result = run_child(method, path, args.sample, quotas)
            if name not in results or result["seconds"] < results[name]["seconds"]:
                results[name] = result

    print(f"\n{'method':<16} {'rows':>11} {'wall s':>7} {'cpu s':>6} {'Mrows/s':>8} {'peak RSS':>10} "
          f"{'at start':>9}  note")
    for name, r in results.items():
        print(f"{name:<16} {r['rows']:>11,} {r['seconds']:>7.2f} {r['cpu']:>6.2f} "
              f"{r['rows'] / r['seconds'] / 1e6:>8.2f} "
              f"{r['peak_rss_mib']:>6,.0f} MiB {r['rss_imports_mib']:>5,.0f} MiB  {r.get('note', '')}")

    def rate(name: str) -> float:
        return results[name]["rows"] / results[name]["seconds"]

    def growth(name: str) -> float:
        return results[name]["peak_rss_mib"] - results[name]["rss_imports_mib"]

    limit = max(("scan", "scan-streamed"), key=rate)
    print()
    print(f"sampler / {limit:<14} {rate('sampler') / rate(limit):.2f}x   (goal >= 0.5x; the faster scan is the limit)")
    print(f"sampler / {'duckdb':<14} {rate('sampler') / rate('duckdb'):.2f}x   (goal > 1x)")
    print(f"count+sampler / {limit:<8} {rate('count+sampler') / rate(limit):.2f}x")
    print(f"count+sampler / {'duckdb':<8} {rate('count+sampler') / rate('duckdb'):.2f}x")
    print(f"sampler memory above its start: {growth(small_name):,.0f} MiB at {small_rows:,} rows, "
          f"{growth('sampler'):,.0f} MiB at {args.rows:,} rows ({growth('sampler') / max(growth(small_name), 1):.2f}x "
          f"for {args.rows / small_rows:.0f}x the rows; goal: independent of snapshot size)")
    print(f"best of {args.repeat} run(s) per method, each in a fresh process; command: "
          f"{Path(sys.executable).name} bench/bench_sample.py --rows {args.rows} --sample {args.sample} "
          f"--repeat {args.repeat}")


if __name__ == "__main__":
    main()
