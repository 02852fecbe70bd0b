"""Benchmark: backtest folds as mapped trainer jobs, cut per fold or as the run chooses, against
the same folds in one process.

    .venv/bin/python bench/bench_backtest.py [--rows 1000000] [--workers N] [--rounds 2]

Set-up (cached in ``--workdir``, default ``/tmp/refit-bench-backtest``): the demo warehouse at
``--rows`` applications (SQLite), one planned run of the demo model at 2024-09-01 taking every
row of its window into the sample, and three trained candidates: the logistic baseline,
LightGBM and the PyTorch MLP. Then the 4 folds x 3 candidates run, each mode from a fresh copy
of the run folder (jobs are idempotent, so a copy that already holds fold results would do
nothing), modes interleaved over ``--rounds`` rounds (the best round counts):

``in-process``
    every fold in this one process, a candidate at a time (``pipeline.backtest_folds``: what
    ``python -m ml_tasks run`` does);
``per-fold``
    every (candidate, fold) as its own trainer command (``python -m ml_tasks train --folds N``)
    in a pool of ``--workers`` processes: Airflow's mapped ``backtest`` tasks before their size
    was chosen;
``auto``
    the jobs ``pipeline.backtest_jobs`` chooses (``ml_tasks.training.fold_tasks``) with the
    slots set to ``--workers`` and the task start cost measured here (a trainer process running a
    fold, less the same fold in a warm process: start-up, imports, reading the sample), run in
    the same pool.

Each pooled job gets ``--threads`` CPU threads (``REFIT_TRAINER_THREADS``, by default the CPUs
divided among the workers, as a spec's ``trainer.cpus`` would set). It prints the wall times,
the speed of each mode against in-process with PASS/MISS for issue 19's goals (``auto`` never
slower than in-process with 2 workers; at least 1.6x with 4), and checks every mode produced the
same metrics.
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


def in_process(plan: dict, jobs: list[dict]) -> list[dict]:
    from ml_tasks import pipeline

    folds: dict[str, list[int]] = {}
    for job in jobs:
        folds.setdefault(job["candidate"], []).extend(job["folds"])
    return [result for candidate, numbers in folds.items()
            for result in pipeline.backtest_folds(plan, candidate, sorted(numbers))["results"]]


def pooled(plan: dict, jobs: list[dict], workers: int, threads: int) -> list[dict]:
    # What a spec's trainer.cpus does on a worker running `workers` trainers at once.
    job_env = {**os.environ, "REFIT_TRAINER_THREADS": str(threads)}

    def run(job: dict) -> list[dict]:
        done = subprocess.run(trainer(plan, job), capture_output=True, text=True, env=job_env)
        if done.returncode != 0:
            raise SystemExit(f"job {job} failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["results"]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [result for results in pool.map(run, jobs) for result in results]


def trainer(plan: dict, job: dict) -> list[str]:
    return [sys.executable, "-m", "ml_tasks", "train", "--plan", f"{plan['run_prefix']}/plan.json",
            "--candidate", job["candidate"], "--folds", *map(str, job["folds"])]


def task_start_seconds(plan: dict, jobs: list[dict]) -> float:
    """What starting a trainer task costs beyond its fold: per candidate, the wall of a process that
    runs its first fold less the same fold in this (warm) process; the largest of them."""
    from ml_tasks import pipeline

    costs = []
    for job in jobs:
        copy = fresh_copy(plan, "probe")
        started = time.perf_counter()
        subprocess.run(trainer(copy, job), capture_output=True, check=True)
        process = time.perf_counter() - started
        copy = fresh_copy(plan, "probe")
        pipeline.backtest_folds(copy, job["candidate"], job["folds"])  # warm this process's imports
        copy = fresh_copy(plan, "probe")
        started = time.perf_counter()
        pipeline.backtest_folds(copy, job["candidate"], job["folds"])
        costs.append(max(process - (time.perf_counter() - started), 0.0))
    return max(costs)


def auto_jobs(plan: dict, workers: int, start_seconds: float) -> list[dict]:
    from ml_tasks import pipeline

    os.environ.update({"REFIT_TRAINER_SLOTS": str(workers), "REFIT_TASK_START_S": f"{start_seconds:.3f}"})
    return pipeline.backtest_jobs(plan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refit-bench-backtest"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, help="CPU threads per parallel job (REFIT_TRAINER_THREADS; "
                        "default: the CPUs divided among the workers, as trainer.cpus would be set)")
    args = parser.parse_args(argv)
    threads = args.threads or max((os.cpu_count() or 1) // args.workers, 1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(env(args.workdir))
    plan = prepare(args.workdir, args.rows)
    from ml_tasks.core.spec import load_spec

    folds = load_spec(args.workdir / "include" / "models" / "credit_default.yaml").backtest.folds
    per_fold = [{"candidate": name, "folds": [fold]} for name in plan["candidates"] for fold in range(folds)]
    start = task_start_seconds(plan, [job for job in per_fold if job["folds"] == [0]])
    jobs = {"in-process": per_fold, "per-fold": per_fold, "auto": auto_jobs(plan, args.workers, start)}
    print(f"{len(per_fold)} folds ({len(plan['candidates'])} candidates), {os.cpu_count()} CPUs, {args.workers} "
          f"parallel workers of {threads} thread(s) each; a trainer task costs {start:.2f} s beyond its folds",
          flush=True)
    print("auto: " + "; ".join(f"{job['candidate']} {job['folds']}" for job in jobs["auto"]), flush=True)
    timings: dict[str, float] = {}
    results: dict[str, list[dict]] = {}
    for round_number in range(args.rounds):
        for mode in jobs:
            copy = fresh_copy(plan, mode)
            started = time.perf_counter()
            results[mode] = (in_process(copy, jobs[mode]) if mode == "in-process" else
                             pooled(copy, jobs[mode], args.workers, threads))
            wall = time.perf_counter() - started
            timings[mode] = min(timings.get(mode, wall), wall)
            print(f"  round {round_number + 1} {mode:<11} {wall:8.1f} s", flush=True)
    print()
    for mode, wall in timings.items():
        print(f"{mode:<11} best {wall:7.1f} s   speed vs in-process {timings['in-process'] / wall:.2f}x")
    goal = 1.0 if args.workers <= 2 else 1.6
    speed = timings["in-process"] / timings["auto"]
    print(f"\ngoal: auto >= {goal:.1f}x the in-process loop with {args.workers} workers on {os.cpu_count()} CPUs: "
          f"{'PASS' if speed >= goal else 'MISS'} ({speed:.2f}x)")
    # Thread counts change floating-point summation order (LightGBM histograms, torch kernels), so
    # metrics agree to rounding, not bit for bit, when the jobs run with fewer threads.
    print("largest metric difference from in-process: " + ", ".join(
        f"{mode} {largest_gap(results['in-process'], results[mode]):.1e}" for mode in ("per-fold", "auto")))
    return 0


def largest_gap(reference: list[dict], other: list[dict]) -> float:
    by_job = {(r["candidate"], r["fold"]): r["metrics_by_age"] for r in other}
    return max(abs(value - by_job[(r["candidate"], r["fold"])][age][name])
               for r in reference for age, metrics in r["metrics_by_age"].items() for name, value in metrics.items())


if __name__ == "__main__":
    raise SystemExit(main())
