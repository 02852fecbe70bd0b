"""Benchmark: the whole retrain, the CLI's one process against Airflow (``dags test`` and a real scheduler).

    .venv/bin/python bench/bench_dag.py [--sizes demo,1m] [--rounds 2] [--paths cli,dags-test,scheduler]

What one retrain is here: the demo model (``include/models/credit_default.yaml``: the logistic
baseline, LightGBM and the champion's recipe, 4 backtest folds each) at as-of 2024-10-01, from a
start state with champion version 1 registered. Sizes:

``demo``  the demo warehouse as ``make demo`` builds it (60,000 applications) and the spec as it
          is (a 20,000-row sample);
``1m``    a warehouse of 1,000,000 applications and a variant of the spec with a 500,000-row
          sample, written to ``<workdir>/1m/include`` (a bigger model is a spec, not code).

Start state, built once per size and cached under ``--workdir`` (``--fresh`` rebuilds it): the
warehouse, the first interval (2024-03-01) run by ``python -m ml_tasks run`` (champion v1, its
snapshot, report and MLflow records), and Airflow's SQLite metadata database migrated. The whole
Refit home is then copied aside; before every measured run it is copied back to the same path
(MLflow records absolute artifact locations), so every run starts from identical state.

Paths, interleaved within each round (cli, dags-test, scheduler, cli, ...):

``cli``        ``python -m ml_tasks run --model credit_default --as-of 2024-10-01``: every stage in
               one process. Wall: the process, start to exit.
``dags-test``  ``airflow dags test retrain_credit_default 2024-10-01`` on the embedded
               environment (``refit_airflow.embedded``), as ``make demo`` runs it: tasks one after
               another, each trainer a ``python -m ml_tasks train`` process. Wall: the process.
``scheduler``  api-server, scheduler and dag-processor started for the round (LocalExecutor with
               2 slots: ``parallelism=2``, SQLite metadata), waited on by their health endpoint
               and until the DAG is parsed, then one run triggered through the REST API and
               waited on until it ends. Wall: from the trigger to the run's ``end_date``; starting
               the services is not counted (they are long-lived in a deployment). The services
               are stopped after each round so they do not load the machine during the others.

Per stage: the CLI's own ``stage_seconds`` (``run`` times each stage in its process and prints
them with its result); what its wall holds beyond them is ``outside tasks`` (the interpreter's
start and imports, and its exit). Airflow's stages are the sum of their task
instances' ``end_date - start_date`` (Airflow's metadata database), with mapped instances
counted; ``outside tasks`` is the wall time when no task ran (Airflow's own start, DAG parsing,
scheduling gaps). With parallel slots the
scheduler's stage sums can exceed its wall time. ``cpu`` is the CPU time of every process the
path ran during the measured wall (Airflow's services and task processes included, other jobs on
the machine not); each run also prints the load average, since these machines are shared.

Where Airflow's extra time goes: per trainer task (``train`` and ``backtest`` instances, each a
``python -m ml_tasks train`` process), the trainer tasks' summed time less the CLI's train and
backtest stages, divided by their number: what a task start costs over the same work done in one
warm process (task process, trainer start and imports, reading its inputs again; on the
scheduler, also two trainers sharing two cores). And the time outside any task per task instance.

Ratios: Airflow / CLI wall time per round (pairs), median over rounds, with the ratio of the
minima beside it (and, for a busy machine, the same median of CPU time). Goals, printed
PASS/MISS (ratios decide, not absolute times): Airflow / CLI <= 1.5x at the demo's size and
<= 1.15x at 1M rows, for ``dags test`` and for the scheduler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

# The Refit and Airflow helpers the end-to-end tests use to run the real DAGs (bench/ is not a package).
from ml_tasks.core.settings import Settings, ensure_local_folders, load_settings  # noqa: E402
from refit_airflow.dag_ids import retrain_dag_id  # noqa: E402
from refit_airflow.demo import airflow_binary, prepare_airflow  # noqa: E402
from refit_airflow.embedded import embedded_airflow_env  # noqa: E402
from tests.e2e.real_services import (  # noqa: E402
    FreePorts,
    Processes,
    airflow_environment,
    airflow_login,
    clean_environ,
    start_airflow,
    wait_for,
    wait_for_run,
)

MODEL = "credit_default"
DAG_ID = retrain_dag_id(MODEL)
FIRST_AS_OF = "2024-03-01"
AS_OF = "2024-10-01"
PATHS = ("cli", "dags-test", "scheduler")
SCHEDULER_SLOTS = 2
#: Stages in the order the CLI runs them (the keys of its ``stage_seconds``).
STAGES = ("plan", "extract", "validate", "sample", "split", "train", "backtest", "evaluate", "gate", "register",
          "report")
#: Airflow tasks that are plumbing around a stage, counted with it; any other task is its own stage.
TASK_STAGE = {"candidates": "train", "backtest_jobs": "backtest", "backtest_summary": "backtest",
              "announce_champion": "register"}
OUTSIDE = "outside tasks"
#: The Airflow tasks that each start a trainer process (``python -m ml_tasks train``).
TRAINER_TASKS = ("train", "backtest")


@dataclass(frozen=True)
class Size:
    name: str
    rows: int | None          # warehouse applications; None: the demo generator's default (make demo)
    sample: int | None        # the spec variant's sampling.size; None: the spec as it is
    goal: float               # Airflow / CLI at most this
    run_timeout_s: float      # a scheduler run still going after this fails the bench


SIZES = {"demo": Size("demo", None, None, 1.5, 900), "1m": Size("1m", 1_000_000, 500_000, 1.15, 5400)}


@dataclass
class Measured:
    path: str
    wall: float
    cpu: float
    stages: dict[str, float]
    tasks: dict[str, int] = field(default_factory=dict)
    verdict: str = ""
    note: str = ""
    trainer_seconds: float = 0.0    # Airflow: the trainer tasks' (TRAINER_TASKS) time, summed
    trainer_tasks: int = 0


# -- the start state ---------------------------------------------------------------------------
class Workspace:
    """One size's folders: ``start/`` (the cached start state), ``home/`` (where every run runs,
    restored from ``start/`` before each), ``include/`` (the spec variant) and ``logs/``."""

    def __init__(self, root: Path, size: Size) -> None:
        self.root, self.size = root / size.name, size
        self.start, self.home, self.logs = self.root / "start", self.root / "home", self.root / "logs"
        self.include = self.root / "include" if size.sample else REPO / "include"
        self.settings: Settings = load_settings({"REFIT_HOME": str(self.home), "REFIT_INCLUDE_DIR": str(self.include)})
        self.env = {**clean_environ(), **embedded_airflow_env(self.settings)}

    def prepare(self, fresh: bool) -> None:
        marker = self.start / "bench-start.json"
        if marker.is_file() and not fresh:
            print(f"start state: reusing {self.start} (built {json.loads(marker.read_text())['built']}; "
                  "--fresh rebuilds it)", flush=True)
            return
        from ml_tasks.data.demo_warehouse import build_demo_warehouse

        shutil.rmtree(self.root, ignore_errors=True)
        self.logs.mkdir(parents=True)
        if self.size.sample:
            write_spec_variant(self.include, self.size.sample)
        began = time.perf_counter()
        ensure_local_folders(self.settings)
        summary = build_demo_warehouse(self.settings.warehouse_url, rows=self.size.rows)
        print(f"start state: warehouse of {summary.applications:,} applications built in "
              f"{time.perf_counter() - began:.0f} s", flush=True)
        began = time.perf_counter()
        first = run_cli(self, FIRST_AS_OF, self.logs / "start-cli.log")
        prepare_airflow(self.settings)
        print(f"start state: {FIRST_AS_OF} run by the CLI ({first.verdict}) in {first.wall:.0f} s, "
              f"Airflow's database migrated in {time.perf_counter() - began - first.wall:.0f} s", flush=True)
        shutil.copytree(self.home, self.start, symlinks=True)
        marker.write_text(json.dumps({"built": datetime.now(UTC).isoformat(timespec="seconds"),
                                      "rows": summary.applications, "first_as_of": FIRST_AS_OF}))

    def restore(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.copytree(self.start, self.home, symlinks=True, ignore=shutil.ignore_patterns("bench-start.json"))

    def verdict(self) -> str:
        """The gate's verdict and challenger of the latest run, and the champion after it."""
        from ml_tasks.io.store import store_from_settings

        store = store_from_settings(self.settings)
        latest = store.read_json(store.layout.latest_report(MODEL))
        return f"{latest['verdict']} {latest['challenger']}, champion v{latest['champion_version']}"


def write_spec_variant(include: Path, sample: int) -> None:
    """The repository's include/ with the demo spec's sample size changed."""
    import yaml

    shutil.copytree(REPO / "include", include)
    spec_file = include / "models" / f"{MODEL}.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["sampling"]["size"] = sample
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))


# -- the paths ---------------------------------------------------------------------------------
def run_cli(space: Workspace, as_of: str, log_path: Path) -> Measured:
    command = [sys.executable, "-m", "ml_tasks", "run", "--model", MODEL, "--as-of", as_of]
    cpu = own_cpu_seconds()
    wall = _run_logged(command, space.env, log_path)
    cpu = own_cpu_seconds() - cpu
    outcome = json.loads(log_path.read_text().strip().splitlines()[-1])
    return Measured("cli", wall, cpu, cli_stages(outcome["stage_seconds"], wall), verdict=space.verdict())


def cli_stages(stage_seconds: dict[str, float], wall: float) -> dict[str, float]:
    """The CLI's own stage times, in :data:`STAGES` order, and the rest of its wall outside them."""
    missing = [stage for stage in STAGES if stage not in stage_seconds]
    if missing:
        raise RuntimeError(f"the CLI's stage_seconds lack {missing}: {stage_seconds}")
    stages = {stage: float(stage_seconds[stage]) for stage in STAGES}
    stages[OUTSIDE] = wall - sum(stages.values())
    return stages


def run_dags_test(space: Workspace, log_path: Path) -> Measured:
    command = [airflow_binary(), "dags", "test", DAG_ID, AS_OF]
    cpu = own_cpu_seconds()
    wall = _run_logged(command, space.env, log_path)
    cpu = own_cpu_seconds() - cpu
    run = latest_dag_run(space)
    if run["state"] != "success":
        raise RuntimeError(f"{DAG_ID} at {AS_OF} ended {run['state']!r}; log: {log_path}")
    return airflow_measured("dags-test", space, run["run_id"], wall, cpu)


def run_scheduler(space: Workspace, round_number: int) -> Measured:
    """One triggered run on api-server + scheduler (LocalExecutor, 2 slots) + dag-processor."""
    airflow_home = space.home / "airflow"
    processes = Processes(space.logs / f"round-{round_number}-scheduler")
    port = FreePorts()()
    env = airflow_environment(home=airflow_home, metadata_url=space.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
                              api_url=f"http://127.0.0.1:{port}", warehouse_url=space.settings.warehouse_url,
                              refit=space.env)
    # Embedded mode, as the other paths: the warehouse is the one Refit's settings name, no connection.
    env.pop("AIRFLOW_CONN_WAREHOUSE_DEFAULT")
    env["AIRFLOW__CORE__PARALLELISM"] = str(SCHEDULER_SLOTS)
    try:
        start_airflow(processes, env, port)
        api = airflow_login(processes, env, port)
        wait_for(f"DAG {DAG_ID} parsed by the dag-processor", lambda: api.dag(DAG_ID), 300, processes)
        api.unpause(DAG_ID)
        cpu, triggered = own_cpu_seconds(), time.time()
        run_id = api.trigger(DAG_ID, f"{AS_OF}T00:00:00Z", {})["dag_run_id"]
        run = wait_for_run(api, processes, airflow_home / "logs", DAG_ID, run_id, space.size.run_timeout_s)
        cpu = own_cpu_seconds() - cpu
    finally:
        _stop(processes)
    if run["state"] != "success":
        raise RuntimeError(f"{DAG_ID} run {run_id} ended {run['state']!r}; logs under {processes.log_dir}")
    wall = datetime.fromisoformat(run["end_date"]).timestamp() - triggered
    started = datetime.fromisoformat(run["start_date"]).timestamp() - triggered
    return airflow_measured("scheduler", space, run_id, wall, cpu,
                            note=f"run started {started:.1f} s after the trigger")


def _run_logged(command: list[str], env: dict[str, str], log_path: Path) -> float:
    """Run ``command`` to completion with its output in ``log_path``; its wall seconds."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        began = time.perf_counter()
        code = subprocess.run(command, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - began
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command)} exited with {code}; log {log_path}:\n{tail}")
    return wall


# -- Airflow's record of a run -----------------------------------------------------------------
def _metadata(space: Workspace) -> sqlite3.Connection:
    return sqlite3.connect(space.home / "airflow" / "airflow.db")


def latest_dag_run(space: Workspace) -> dict:
    with _metadata(space) as db:
        run_id, state = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                                   (DAG_ID,)).fetchone()
    return {"run_id": run_id, "state": state}


def airflow_measured(path: str, space: Workspace, run_id: str, wall: float, cpu: float, note: str = "") -> Measured:
    """A run's figures from Airflow's record of it: seconds per stage (the sum of its task
    instances' durations), task instances per stage, and ``outside tasks``: the part of ``wall``
    when no task instance ran."""
    with _metadata(space) as db:
        rows = db.execute("SELECT task_id, start_date, end_date FROM task_instance "
                          "WHERE dag_id = ? AND run_id = ? AND start_date IS NOT NULL ORDER BY start_date",
                          (DAG_ID, run_id)).fetchall()
    measured = Measured(path, wall, cpu, {}, verdict=space.verdict(), note=note)
    busy, reach = 0.0, -float("inf")
    for task_id, start, end in rows:
        start, end = _utc_seconds(start), _utc_seconds(end)
        stage = TASK_STAGE.get(task_id, task_id)
        measured.stages[stage] = measured.stages.get(stage, 0.0) + end - start
        measured.tasks[stage] = measured.tasks.get(stage, 0) + 1
        if task_id in TRAINER_TASKS:
            measured.trainer_seconds += end - start
            measured.trainer_tasks += 1
        busy += max(0.0, end - max(start, reach))  # the union of the intervals, sorted by start
        reach = max(reach, end)
    measured.stages[OUTSIDE] = wall - busy
    return measured


def _utc_seconds(stamp: str) -> float:
    """A metadata database timestamp (naive UTC, or with an offset) as epoch seconds."""
    moment = datetime.fromisoformat(stamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# -- the machine -------------------------------------------------------------------------------
def own_cpu_seconds() -> float:
    """CPU seconds used so far by this process's descendants: those already reaped (rusage) and
    the live ones with the children they reaped (``/proc/<pid>/stat``), services included."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(ticks for _, ticks, _ in _descendants().values()) / os.sysconf("SC_CLK_TCK")
    return reaped.ru_utime + reaped.ru_stime + live


def _descendants() -> dict[int, tuple[int, int, int]]:
    """This process's live descendants: pid -> (parent pid, CPU ticks of it and the children it
    reaped, start time)."""
    table = {pid: entry for pid in _pids() if (entry := _stat(pid))}

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = table.get(pid, (0, 0, 0))[0]
            if pid == os.getpid():
                return True
        return False

    return {pid: entry for pid, entry in table.items() if descends(pid)}


def _pids() -> list[int]:
    return [int(path.name) for path in Path("/proc").iterdir() if path.name.isdigit()]


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, CPU ticks of the process and the children it reaped, start time), None once it ended."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold anything
    return int(fields[1]), sum(int(value) for value in fields[11:15]), int(fields[19])


def _stop(processes: Processes) -> None:
    """Stop the services, then whatever they started that outlived them (a task process runs in a
    process group of its own, which stopping a service's group does not reach), each by its pid
    and only while it is the same process (same start time)."""
    started = _descendants()
    processes.stop_all()
    for pid, (_, _, began) in started.items():
        now = _stat(pid)
        if now and now[2] == began:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def machine() -> str:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    ram_gib = int(meminfo["MemTotal"].split()[0]) / 2**20
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    import airflow
    import mlflow

    return (f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable, {model}), "
            f"{ram_gib:.1f} GiB RAM, load average {_load()}; Python {platform.python_version()}, "
            f"Airflow {airflow.__version__}, MLflow {mlflow.__version__}")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# -- the report --------------------------------------------------------------------------------
def report(size: Size, space: Workspace, results: dict[str, list[Measured]]) -> None:
    paths = [path for path in PATHS if results.get(path)]
    print(f"\n== {size.name}: {_describe(size, space)}, as-of {AS_OF}, champion v1 from {FIRST_AS_OF} ==")
    print(f"{'path':<11} {'rounds':>6} {'wall min':>9} {'median':>8} {'cpu median':>11}  tasks")
    for path in paths:
        runs = results[path]
        tasks = sum(runs[-1].tasks.values())
        print(f"{path:<11} {len(runs):>6} {min(r.wall for r in runs):>8.1f}s {_median(r.wall for r in runs):>7.1f}s "
              f"{_median(r.cpu for r in runs):>10.1f}s  {tasks or 'one process'}")
    stages = [*STAGES, *sorted({s for p in paths for r in results[p] for s in r.stages} - {*STAGES, OUTSIDE}), OUTSIDE]
    print("\nper stage, median over rounds (s; Airflow: the sum of the stage's task instances, how many in brackets)")
    print(f"{'stage':<14}" + "".join(f"{path:>16}" for path in paths))
    for stage in stages:
        cells = []
        for path in paths:
            values = [r.stages[stage] for r in results[path] if stage in r.stages]
            count = results[path][-1].tasks.get(stage)
            cells.append((f"{_median(values):.1f}" if values else "-") + (f" [{count}]" if count else ""))
        print(f"{stage:<14}" + "".join(f"{cell:>16}" for cell in cells))
    print(f"{'wall':<14}" + "".join(f"{_median(r.wall for r in results[path]):>16.1f}" for path in paths))
    if "cli" not in paths:
        return
    print("\nratios, Airflow / CLI wall (median of the rounds' pairs; ratio of the minima in brackets):")
    ratios = {}
    for path in paths[1:]:
        pairs = [r.wall / c.wall for r, c in zip(results[path], results["cli"], strict=False)]
        ratios[path] = _median(pairs)
        minima = min(r.wall for r in results[path]) / min(c.wall for c in results["cli"])
        cpu = _median(r.cpu / c.cpu for r, c in zip(results[path], results["cli"], strict=False))
        print(f"  {path:<10} / cli  {ratios[path]:5.2f}x  [{minima:.2f}x]  pairs: "
              + ", ".join(f"{pair:.2f}x" for pair in pairs) + f"  (cpu: {cpu:.2f}x)")
    print("\nwhere Airflow's extra time goes (medians):")
    in_process = _median(c.stages["train"] + c.stages["backtest"] for c in results["cli"])
    for path in paths[1:]:
        runs = results[path]
        trainer_tasks, tasks = runs[-1].trainer_tasks, sum(runs[-1].tasks.values())
        extra = (_median(r.trainer_seconds for r in runs) - in_process) / trainer_tasks
        outside = _median(r.stages[OUTSIDE] for r in runs) / tasks
        print(f"  {path:<10} {extra:5.1f} s a trainer task over the CLI's train + backtest work ({trainer_tasks} "
              f"trainer tasks), {outside:4.1f} s outside any task per task instance ({tasks})")
    print("\ngoals (ratios decide, not absolute times):")
    for path, ratio in ratios.items():
        print(f"  [{'PASS' if ratio <= size.goal else 'MISS'}] {path} / cli <= {size.goal}x at the {size.name} size: "
              f"{ratio:.2f}x")


def _describe(size: Size, space: Workspace) -> str:
    marker = json.loads((space.start / "bench-start.json").read_text())
    sample = f"{size.sample:,}-row sample (spec variant)" if size.sample else "the spec's sample (20,000 rows)"
    return f"{marker['rows']:,} warehouse applications, {sample}"


def _median(values) -> float:
    return statistics.median(list(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="demo,1m", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per size; each runs every path once")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refit-bench-dag"))
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached start state")
    args = parser.parse_args(argv)
    sizes, paths = args.sizes.split(","), args.paths.split(",")
    unknown = [s for s in sizes if s not in SIZES] + [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown size or path: {', '.join(unknown)}")
    # Nothing inherited may point a run at another deployment; every process imports this checkout.
    os.environ.clear()
    os.environ.update({**clean_environ(), "MLFLOW_CONFIGURE_LOGGING": "false", "PYTHONPATH": str(REPO)})
    # Stopped with SIGTERM: unwind as for Ctrl-C, so the running command and services are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(machine(), flush=True)
    for name in sizes:
        size, results = SIZES[name], {path: [] for path in paths}
        space = Workspace(args.workdir, size)
        space.prepare(args.fresh)
        for number in range(1, args.rounds + 1):
            for path in paths:
                space.restore()
                log = space.logs / f"round-{number}-{path}.log"
                measured = (run_cli(space, AS_OF, log) if path == "cli" else
                            run_dags_test(space, log) if path == "dags-test" else run_scheduler(space, number))
                results[path].append(measured)
                print(f"{size.name} round {number}: {path:<10} {measured.wall:7.1f} s wall, {measured.cpu:7.1f} s cpu "
                      f"(load {_load()}) · {measured.verdict}" + (f" · {measured.note}" if measured.note else ""),
                      flush=True)
        report(size, space, results)
    print(f"\nload average at the end: {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
