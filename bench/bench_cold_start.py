"""Benchmark: how long a fresh trainer process takes to be ready to read its inputs (cold start).

    .venv/bin/python bench/bench_cold_start.py [--rounds 7] [--baseline-repo PATH]

Every Airflow train task and every mapped backtest job is a fresh ``python -m ml_tasks train``
process, so what it imports before it does any work is paid once per task. This times the real
command lines of the demo model's LightGBM and logistic candidates, both steps:

``train <candidate>``
    ``python -m ml_tasks train --plan URI --candidate NAME`` (the train task), up to the fault
    point ``train.inputs``, just before it reads the training and validation splits;
``fold <candidate>``
    ``python -m ml_tasks train --plan URI --candidate NAME --fold 0`` (one backtest job), up to
    ``backtest.inputs``, just before it reads the sample;
``bare``
    ``python -c pass``: the interpreter alone.

A trainer stops at its point because ``REFIT_KILL_AT`` names it (:mod:`ml_tasks.core.fault_points`):
the process is killed there, so its wall time is the time to ready, imports, settings, plan and
spec included, nothing of the work after. Methods are interleaved over ``--rounds`` and the best
round counts (the median is printed beside it). Goal: every LightGBM/logistic trainer ready in
<= 1.0 s of wall. Then one ``-X importtime`` run of ``train lightgbm`` prints the ten imports
with the largest cumulative time, and which heavy packages the process had imported when ready.

``--baseline-repo PATH`` times another checkout's trainer in the same rounds (e.g. an older
commit from ``git archive``; it needs the two fault points) and prints this one's ratio to it.

Set-up, cached in ``--workdir`` (default ``/tmp/refit-bench-cold-start``): the demo warehouse at
``--rows`` applications (SQLite) and one run of the demo model planned at 2024-06-01 up to its
split; no candidate trained, so each train command has its work ahead of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AS_OF = "2024-06-01"
GOAL_S = 1.0
CANDIDATES = ("lightgbm", "logistic_baseline")
#: Packages a LightGBM/logistic trainer must not have imported before it reads its inputs.
HEAVY = ("torch", "sklearn", "mlflow", "lightgbm", "scipy", "matplotlib", "statsmodels", "sqlalchemy", "airflow")
IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def env(workdir: Path) -> dict[str, str]:
    return {**os.environ, "REFIT_HOME": str(workdir / "refit"), "MLFLOW_CONFIGURE_LOGGING": "false",
            "REFIT_WAREHOUSE_URL": f"sqlite:///{workdir / 'warehouse.db'}"}


def prepare(workdir: Path, rows: int) -> dict:
    """The warehouse and a run planned up to its split, cached: returns the plan."""
    marker = workdir / f"ready-{rows}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    os.environ.update(env(workdir))
    from ml_tasks import pipeline
    from ml_tasks.core.settings import REPO_ROOT
    from ml_tasks.data.demo_warehouse import build_demo_warehouse

    started = time.perf_counter()
    build_demo_warehouse(os.environ["REFIT_WAREHOUSE_URL"], rows=rows, seed=42)
    plan = pipeline.plan_run(str(REPO_ROOT / "include" / "models" / "credit_default.yaml"), AS_OF)
    pipeline.split(plan, pipeline.sample(plan, pipeline.validate(plan, pipeline.extract(plan))))
    print(f"setup: {rows:,} applications, run planned and split in {time.perf_counter() - started:.0f} s", flush=True)
    marker.write_text(json.dumps(plan))
    return plan


def commands(plan: dict) -> dict[str, tuple[list[str], str | None]]:
    """Each method's arguments after ``python``, and the fault point that ends it (None: runs to its end)."""
    plan_uri = f"{plan['run_prefix']}/plan.json"
    methods: dict[str, tuple[list[str], str | None]] = {"bare": (["-c", "pass"], None)}
    for candidate in CANDIDATES:
        train = ["-m", "ml_tasks", "train", "--plan", plan_uri, "--candidate", candidate]
        methods[f"train {candidate}"] = (train, "train.inputs")
        methods[f"fold {candidate}"] = ([*train, "--fold", "0"], "backtest.inputs")
    return methods


def run_once(args: list[str], point: str | None, repo: Path, base_env: dict[str, str],
             flags: tuple[str, ...] = ()) -> tuple[float, str]:
    """Wall seconds of one fresh process (and its stderr); a trainer must die at its point."""
    process_env = {**base_env, "PYTHONPATH": str(repo)}
    if point is not None:
        process_env["REFIT_KILL_AT"] = point
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *flags, *args], cwd=repo, env=process_env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    expected = 0 if point is None else -signal.SIGKILL
    if done.returncode != expected:
        raise SystemExit(f"{' '.join(args)} in {repo}: exit {done.returncode}, expected {expected} (did it reach "
                         f"{point}? a trained candidate is reused before it)\n"
                         f"{done.stdout[-1500:]}{done.stderr[-1500:]}")
    return wall, done.stderr


def importtime(stderr: str) -> list[tuple[int, int, int, str]]:
    """``-X importtime`` lines as (cumulative us, self us, depth, module)."""
    return [(int(m[2]), int(m[1]), len(m[3]) // 2, m[4]) for m in map(IMPORTTIME.match, stderr.splitlines()) if m]


def report_imports(label: str, rows: list[tuple[int, int, int, str]]) -> None:
    loaded = {module.split(".")[0] for *_, module in rows}
    print(f"\n-X importtime, {label}: {sum(r[1] for r in rows) / 1e3:.0f} ms importing {len(rows)} modules; "
          f"heavy packages imported when ready: {', '.join(p for p in HEAVY if p in loaded) or 'none'}")
    print(f"  {'cumulative ms':>13}  {'self ms':>7}  module (indent: imported by the line above)")
    for cumulative, self_us, depth, module in sorted(rows, reverse=True)[:10]:
        print(f"  {cumulative / 1e3:13.1f}  {self_us / 1e3:7.1f}  {'  ' * depth}{module}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="demo warehouse applications (set-up only)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refit-bench-cold-start"))
    parser.add_argument("--baseline-repo", type=Path, help="another checkout to time in the same rounds")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    plan = prepare(args.workdir, args.rows)
    base_env = env(args.workdir)
    repos = {"this": REPO} | ({"baseline": args.baseline_repo.resolve()} if args.baseline_repo else {})
    methods = commands(plan)
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.rounds} interleaved rounds, best counts",
          flush=True)
    # The interpreter alone is the same for every checkout: timed once per round.
    runs = [(repo, name) for name in methods for repo in (["this"] if name == "bare" else repos)]
    walls: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for _ in range(args.rounds):
        for repo, name in runs:
            walls[repo, name].append(run_once(*methods[name], repos[repo], base_env)[0])

    bare = min(walls["this", "bare"])
    compared = len(repos) > 1
    print(f"\n{'method':<36} {'best s':>7} {'median s':>8} {'over bare s':>11}" + ("  vs baseline" if compared else ""))
    for (repo, name), values in walls.items():
        label = name if repo == "this" else f"{name} [baseline]"
        against_baseline = compared and repo == "this" and name != "bare"
        ratio = f"  {min(values) / min(walls['baseline', name]):.2f}x" if against_baseline else ""
        print(f"{label:<36} {min(values):7.3f} {statistics.median(values):8.3f} {min(values) - bare:11.3f}{ratio}")

    print(f"\ngoal: a LightGBM/logistic trainer process ready to read its inputs in <= {GOAL_S:.1f} s of wall")
    for name in methods:
        if name != "bare":
            best = min(walls["this", name])
            print(f"  [{'PASS' if best <= GOAL_S else 'MISS'}] {name}: {best:.2f} s")

    for repo, path in repos.items():
        command, point = methods["train lightgbm"]
        _, stderr = run_once(command, point, path, base_env, flags=("-X", "importtime"))
        report_imports(f"train lightgbm ({repo})", importtime(stderr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
