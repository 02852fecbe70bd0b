"""Benchmark: backtest folds as parallel trainer jobs against the same folds one after another.

    .venv/bin/python bench/bench_backtest.py [--rows 1000000] [--workers N]

Set-up (cached in ``--workdir``, default ``/tmp/refit-bench-backtest``): the demo warehouse at
``--rows`` applications (SQLite), one planned run of the demo model at 2024-09-01 taking every
row of its window into the sample, and three trained candidates: the logistic baseline,
LightGBM and the PyTorch MLP. Then the 4 folds x 3 candidates = 12 backtest jobs run twice,
each time from a fresh copy of the run folder (jobs are idempotent, so a copy that already
holds fold results would do nothing):

``sequential``
    every job in this one process, one after another (``ml_tasks.training.backtest.run_fold``);
``parallel``
    every job as the trainer command (``python -m ml_tasks train --fold N``) in a pool of
    ``--workers`` processes, which is what Airflow's mapped ``backtest`` tasks do on workers
    with that many slots; each job gets ``--threads`` CPU threads (``REFIT_TRAINER_THREADS``,
    by default the CPUs divided among the workers, as a spec's ``trainer.cpus`` would set).

It prints both wall times and their ratio, and checks the two modes produced the same metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AS_OF = "2024-09-01"
CANDIDATES = [
    {"name": "logistic_baseline", "family": "logistic_regression", "params": {"C": 1.0}},
    {"name": "lightgbm", "family": "lightgbm",
     "params": {"learning_rate": 0.05, "num_leaves": 31, "n_estimators": 300, "min_child_samples": 40}},
    {"name": "mlp", "family": "torch_mlp", "params": {"hidden": "128,64", "max_epochs": 8, "batch_size": 4096}},
]


def prepare(workdir: Path, rows: int) -> dict:
    """Warehouse, spec and one trained run, cached: returns the run plan."""
    import yaml

    marker = workdir / f"ready-{rows}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    shutil.rmtree(workdir, ignore_errors=True)
    include = workdir / "include"
    shutil.copytree(REPO / "include", include)
    spec_file = include / "models" / "credit_default.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["candidates"] = CANDIDATES
    spec["sampling"]["size"] = 10_000_000
    spec["training"] = {"learning_curve": False}
    spec_file.write_text(yaml.safe_dump(spec))
    os.environ.update(env(workdir))
    from ml_tasks import pipeline
    from ml_tasks.data.demo_warehouse import build_demo_warehouse

    started = time.perf_counter()
    build_demo_warehouse(f"sqlite:///{workdir / 'warehouse.db'}", rows=rows, seed=42)
    plan = pipeline.plan_run(str(spec_file), AS_OF, sample_size=10_000_000)
    split = pipeline.split(plan, pipeline.sample(plan, pipeline.validate(plan, pipeline.extract(plan))))
    for candidate in plan["candidates"]:
        pipeline.train(plan, split, candidate)
    sampled = split["train"]["rows"] + split["validation"]["rows"] + split["test"]["rows"]
    print(f"setup: {rows:,} applications, {sampled:,} sampled rows, 3 candidates trained in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    marker.write_text(json.dumps(plan))
    return plan


def env(workdir: Path) -> dict[str, str]:
    return {"REFIT_HOME": str(workdir / "refit"), "REFIT_INCLUDE_DIR": str(workdir / "include"),
            "REFIT_WAREHOUSE_URL": f"sqlite:///{workdir / 'warehouse.db'}", "MLFLOW_CONFIGURE_LOGGING": "false"}


def fresh_copy(plan: dict, label: str) -> dict:
    """The run folder copied without fold results, under a new prefix."""
    source = Path(plan["run_prefix"])
    target = source.with_name(f"{source.name}-{label}")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("backtest", "backtest.json"))
    copied = {**plan, "run_prefix": str(target)}
    (target / "plan.json").write_text(json.dumps(copied))
    return copied


def sequential(plan: dict, jobs: list[dict]) -> list[dict]:
    from ml_tasks import pipeline

    return [pipeline.backtest_fold(plan, job["candidate"], job["fold"]) for job in jobs]


def parallel(plan: dict, jobs: list[dict], workers: int, threads: int) -> list[dict]:
    # What a spec's trainer.cpus does on a worker running `workers` trainers at once.
    job_env = {**os.environ, "REFIT_TRAINER_THREADS": str(threads)}

    def run(job: dict) -> dict:
        command = [sys.executable, "-m", "ml_tasks", "train", "--plan", f"{plan['run_prefix']}/plan.json",
                   "--candidate", job["candidate"], "--fold", str(job["fold"])]
        done = subprocess.run(command, capture_output=True, text=True, env=job_env)
        if done.returncode != 0:
            raise SystemExit(f"job {job} failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, jobs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refit-bench-backtest"))
    parser.add_argument("--threads", type=int, help="CPU threads per parallel job (REFIT_TRAINER_THREADS; "
                        "default: the CPUs divided among the workers, as trainer.cpus would be set)")
    args = parser.parse_args(argv)
    threads = args.threads or max((os.cpu_count() or 1) // args.workers, 1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(env(args.workdir))
    plan = prepare(args.workdir, args.rows)
    from ml_tasks import pipeline

    jobs = pipeline.backtest_jobs(plan)
    candidates, folds = len({j["candidate"] for j in jobs}), len({j["fold"] for j in jobs})
    print(f"{len(jobs)} jobs ({candidates} candidates x {folds} folds), {os.cpu_count()} CPUs, "
          f"{args.workers} parallel workers of {threads} thread(s) each", flush=True)
    timings, results = {}, {}
    for mode in ("sequential", "parallel"):
        copy = fresh_copy(plan, mode)
        started = time.perf_counter()
        results[mode] = (sequential(copy, jobs) if mode == "sequential" else
                         parallel(copy, jobs, args.workers, threads))
        timings[mode] = time.perf_counter() - started
        print(f"  {mode:<11} {timings[mode]:8.1f} s", flush=True)
    gaps = {job["candidate"]: 0.0 for job in jobs}
    for job, a, b in zip(jobs, results["sequential"], results["parallel"], strict=True):
        for age, metrics in a["metrics_by_age"].items():
            for name, value in metrics.items():
                gaps[job["candidate"]] = max(gaps[job["candidate"]], abs(value - b["metrics_by_age"][age][name]))
    print(f"\nparallel / sequential wall time: {timings['parallel'] / timings['sequential']:.2f}x "
          f"(speed-up {timings['sequential'] / timings['parallel']:.2f}x with {args.workers} workers)")
    # Thread counts change floating-point summation order (LightGBM histograms, torch kernels), so
    # metrics agree to rounding, not bit for bit, when the jobs run with fewer threads.
    print("largest metric difference between the modes: "
          + ", ".join(f"{name} {gap:.1e}" for name, gap in gaps.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
