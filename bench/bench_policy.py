"""Benchmark: the quality of the model actually served, replayed over a year of drift, under Refit's
policy and the alternatives a team would otherwise run (issue 20).

    .venv/bin/python bench/bench_policy.py [--timelines demo shift] [--step-days 7] [--steps N] [--jobs 2]

Two timelines, each replayed in steps of ``--step-days`` (weekly by default, at 04:00: after the
specs' monthly cron at 03:00 on the 1st, when their monitor runs):

``demo``   the demo warehouse (``--demo-rows`` applications over 2023-2024; a slow drift of every
           effect over the two years, the mobile channel growing), the demo spec
           ``include/models/credit_default.yaml``; steps from 2024-03-04 to the end of 2024 (the
           spec's backtest needs 420 days of history first). Labels arrive 60-90 days late;
``shift``  ``bench/shift_warehouse.py`` (``--shift-rows-per-day``): a sharp drift (a new channel
           with its own risk on 2024-03-07) and a gradual one (June to September), labels 2-8 days
           late, the spec ``bench/specs/shift_default.yaml``; steps from 2024-01-01 to mid-November.

For each timeline every policy of :mod:`bench.policy_replay` (``refit``, ``always``, ``point``,
``never``: spec variants) runs in a worker process of its own with its own ``REFIT_HOME`` (store
and MLflow registry) against the one warehouse, ``--jobs`` workers at a time: the real pipeline
(``ml_tasks.pipeline.run_all``, the CLI path) at each step it retrains, the monitor at the other
steps of the policy with a ``monitoring`` section. Each worker then scores every model it trained
or served on every row of the timeline with the model's registered pyfunc form. This process
reads those rows once (the spec's own point-in-time query, every label matured), computes the
oracle, and prints per policy: the served log loss and ROC AUC (row-weighted over the windows),
their gap to the oracle, retrains, promotions and the CPU-seconds of the retrain runs, wrong
promotions (worse than the replaced model on the window it then served, by a paired one-sided
z-test on the per-row log losses at 5 %), days from the sharp drift to a recovered served model
(excess loss over the true probabilities back within 2 standard errors of its level before the
drift), and the window with the largest gap to the oracle; then PASS/MISS for the issue's goals,
and a plot per timeline in ``--figures`` (``policy_<timeline>.png``).

Window ``t`` is the rows applied between step ``t`` and step ``t+1``: the ones the model chosen at
step ``t`` served, scored once their labels matured. ``--windows matured`` uses the rows whose
labels were observed in the window instead (what the monitor sees); both are printed, the one
chosen first. Set-up (warehouses) is cached in ``--workdir`` by size (delete it after changing a
generator); every run starts from empty homes.
Every policy's spec has ``training.learning_curve`` off unless ``--learning-curve`` (extra fits
for the report's chart that no decision reads), and ``--sample-size`` overrides ``sampling.size``
for a quick run. ``--report-only`` analyses the replays a previous run left in ``--workdir``.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import policy_replay as replay  # noqa: E402
from bench import shift_warehouse  # noqa: E402

FIGURES = REPO / "bench" / "figures"


@dataclass(frozen=True)
class Timeline:
    name: str
    title: str
    spec_file: Path
    include: Path  # the include folder its SQL and templates come from
    start: datetime
    end: datetime
    sharp: tuple[datetime, ...] = ()
    gradual: tuple[tuple[datetime, datetime], ...] = ()
    truth: bool = False


TIMELINES = {
    "demo": Timeline("demo", "demo warehouse (gradual drift over two years, labels 60-90 days late)",
                     REPO / "include" / "models" / "credit_default.yaml", REPO / "include",
                     datetime(2024, 3, 4, 4), datetime(2025, 1, 1),
                     gradual=((datetime(2023, 1, 1), datetime(2025, 1, 1)),)),
    "shift": Timeline("shift", "shift warehouse (a new channel on 2024-03-07, a gradual drift Jun-Sep, labels "
                      "2-8 days late)", shift_warehouse.SPECS / f"{shift_warehouse.MODEL}.yaml", REPO / "include",
                      datetime(2024, 1, 1, 4), shift_warehouse.END, sharp=(shift_warehouse.SHARP_AT,),
                      gradual=(shift_warehouse.GRADUAL,), truth=True),
}


def env_for(home: Path, include: Path, warehouse: str, threads: int | None) -> dict[str, str]:
    env = {"REFIT_HOME": str(home), "REFIT_INCLUDE_DIR": str(include), "REFIT_WAREHOUSE_URL": warehouse,
           "MLFLOW_CONFIGURE_LOGGING": "false", "PYTHONWARNINGS": "ignore"}
    if threads:
        env["REFIT_TRAINER_THREADS"] = str(threads)
    return env


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------

def warehouse(timeline: Timeline, workdir: Path, args: argparse.Namespace) -> str:
    """The timeline's warehouse (SQLite), built once per size and kept."""
    size = args.demo_rows if timeline.name == "demo" else args.shift_rows_per_day
    path = workdir / f"{timeline.name}-{size}.db"
    url = f"sqlite:///{path}"
    marker = path.with_suffix(".ready")
    if not marker.exists():
        started = time.perf_counter()
        if timeline.name == "demo":
            from ml_tasks.data.demo_warehouse import build_demo_warehouse

            build_demo_warehouse(url, rows=size, seed=42)
        else:
            shift_warehouse.build_shift_warehouse(url, rows_per_day=size)
        marker.write_text("ok")
        print(f"{timeline.name}: warehouse built in {time.perf_counter() - started:.0f} s", flush=True)
    return url


def policy_include(timeline: Timeline, base: dict[str, Any], policy: str, root: Path, sample_size: int | None,
                   learning_curve: bool = False) -> Path:
    """An include folder holding the timeline's SQL, the templates and the policy's spec; returns the spec."""
    include = root / "include"
    shutil.rmtree(include, ignore_errors=True)
    shutil.copytree(timeline.include, include, ignore=shutil.ignore_patterns("models"))
    if timeline.name == "shift":
        shutil.copy(shift_warehouse.SPECS / f"{shift_warehouse.MODEL}.sql", include / "sql")
    spec = replay.policy_spec(base, policy)
    if sample_size:
        spec["sampling"]["size"] = sample_size
    if not learning_curve:  # its extra fits inform a reader of the report, not the gate (as bench_backtest)
        spec.setdefault("training", {})["learning_curve"] = False
    path = include / "models" / timeline.spec_file.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def evaluation_rows(spec_path: Path, url: str, steps: list[datetime], step_days: int) -> pd.DataFrame:
    """Every row of the timeline with its matured label, through the spec's own point-in-time query
    (applied from 100 days before the first step, so the matured-label windows are whole)."""
    import pyarrow as pa

    from ml_tasks.core.spec import load_spec
    from ml_tasks.monitoring.monitor import window_batches

    spec = load_spec(spec_path)
    end = steps[-1] + timedelta(days=step_days)
    batches = list(window_batches(spec, url, spec_path.parents[1], steps[0] - timedelta(days=100),
                                  end + timedelta(days=400)))
    frame = pa.Table.from_batches(batches).to_pandas()
    return frame[pd.to_datetime(frame[spec.columns.timestamp]) < end].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# A worker: one policy on one timeline
# ---------------------------------------------------------------------------------------------

def worker(config_path: Path) -> int:
    config = json.loads(config_path.read_text())
    spec_path = Path(config["spec"])
    steps = [datetime.fromisoformat(moment) for moment in config["steps"]]
    spec = yaml.safe_load(spec_path.read_text())
    refit = replay.RefitPipeline(spec_path)
    started = time.perf_counter()
    records, models = replay.replay(spec["schedule"], "monitoring" in spec, steps, refit,
                                    log=lambda line: print(f"[{config['label']}] {line}", flush=True))
    replay_s = time.perf_counter() - started
    rows = pd.read_parquet(config["rows"])
    started = time.perf_counter()
    predictions = refit.score(models, rows)
    np.savez_compressed(config["predictions"], **predictions)
    Path(config["result"]).write_text(json.dumps({
        "steps": replay.steps_to_json(records), "models": models, "replay_s": replay_s,
        "score_s": time.perf_counter() - started}))
    return 0


def run_workers(jobs: list[dict[str, Any]], parallel: int) -> None:
    def run(job: dict[str, Any]) -> None:
        config = Path(job["result"]).with_suffix(".config.json")
        config.write_text(json.dumps(job))
        with open(Path(job["result"]).with_suffix(".log"), "w") as log:
            done = subprocess.run([sys.executable, __file__, "--worker", str(config)], env={**os.environ, **job["env"]},
                                  stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        lines = Path(job["result"]).with_suffix(".log").read_text().splitlines()
        if done.returncode != 0:
            raise SystemExit(f"worker {job['label']} failed:\n" + "\n".join(lines[-40:]))
        steps = [line for line in lines if line.startswith(f"[{job['label']}]")]
        print(f"  {job['label']}: {len(steps)} retrain runs done", flush=True)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(run, jobs))


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------

@dataclass
class PolicyFigures:
    label: str
    scores: replay.WindowScores
    served: list[str | None]
    gap: np.ndarray  # per window: log loss − the oracle's
    retrains: int = 0
    promotions: int = 0
    cpu_s: float = 0.0
    wrong: int = 0
    worse: int = 0
    recoveries: list[replay.Recovery] = field(default_factory=list)
    errors: int = 0
    wrong_promotions: list[replay.Promotion] = field(default_factory=list)


def analyse(timeline: Timeline, steps: list[datetime], step_days: int, rows: pd.DataFrame, spec: Any,
            results: dict[str, dict[str, Any]], predictions: dict[str, np.ndarray], truth: np.ndarray | None,
            by: str) -> dict[str, PolicyFigures]:
    column = spec.columns.timestamp if by == "served" else spec.columns.label_observed_at
    windows = replay.window_index(rows[column], steps, step_days)
    y = rows[spec.columns.label].to_numpy(dtype=float)
    records = {policy: replay.steps_from_json(result["steps"]) for policy, result in results.items()}
    served = {policy: [f"{policy}:{r.served}" if r.served else None for r in steps]
              for policy, steps in records.items()}
    trained = [[f"{policy}:{records[policy][t].challenger}" for policy in replay.POLICIES
                if records[policy][t].challenger] for t in range(len(steps))]
    pool = {key for keys in trained for key in keys}
    losses = {key: replay.window_losses(y, windows, len(steps), predictions[key]) for key in pool}
    served[replay.ORACLE] = list(replay.oracle_choice(trained, losses))
    oracle = replay.served_scores(y, windows, served[replay.ORACLE], predictions)
    figures = {}
    for policy in [*records, replay.ORACLE]:
        scores = replay.served_scores(y, windows, served[policy], predictions)
        found = replay.promotions(y, windows, served[policy], predictions)
        result = PolicyFigures(label=replay.LABELS[policy], scores=scores, served=served[policy],
                               gap=scores.log_loss - oracle.log_loss, promotions=len(found),
                               wrong=sum(p.wrong for p in found), worse=sum(p.worse for p in found),
                               wrong_promotions=[p for p in found if p.wrong])
        if policy in records:
            result.retrains = sum(1 for r in records[policy] if r.action)
            result.cpu_s = sum(r.cpu_s for r in records[policy])
            result.errors = sum(1 for r in records[policy] if r.verdict and r.verdict.startswith("ERROR"))
        if truth is not None:  # a drift the replayed steps cover, with a window before it
            result.recoveries = [replay.recovery(y, truth, windows, steps, served[policy], predictions, drift)
                                 for drift in timeline.sharp if steps[1] < drift <= steps[-1]]
        figures[policy] = result
    return figures


def paired_row_z(y: np.ndarray, windows: np.ndarray, a: list[str | None], b: list[str | None],
                 predictions: dict[str, np.ndarray]) -> tuple[float, float]:
    """Mean per-row log-loss difference a − b over every window, and its z."""
    diffs = []
    for t, (key_a, key_b) in enumerate(zip(a, b, strict=True)):
        mask = windows == t
        if key_a and key_b and mask.any():
            diffs.append(replay.log_losses(y[mask], predictions[key_a][mask])
                         - replay.log_losses(y[mask], predictions[key_b][mask]))
    d = np.concatenate(diffs)
    se = d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() / se) if se > 0 else 0.0


def diagnostics(prepared: Prepared) -> list[str]:
    """What decided the policies' runs: gate verdicts and the checks that failed (read from each run's
    gate.json in its home's store), the monitor's fired triggers, and how late a drift can reach the
    training rows at all."""
    from collections import Counter

    lines = []
    for job in prepared.jobs:
        store = Path(job["env"]["REFIT_HOME"]) / "artifacts"
        gates = [json.loads(path.read_text()) for path in sorted(store.glob("runs/*/*/gate.json"))]
        verdicts = Counter(gate["verdict"] for gate in gates)
        failed = Counter(check["name"] for gate in gates for check in gate["checks"] if not check["passed"])
        line = f"  {job['policy']}: {len(gates)} runs gated, {verdicts['PASS']} PASS, {verdicts['FAIL']} FAIL"
        if failed:
            line += "; checks failed: " + ", ".join(f"{name} x{count}" for name, count in failed.most_common())
        records = [json.loads(path.read_text()) for path in sorted(store.glob("monitoring/*/history/*.json"))]
        if records:
            fired = Counter(state["name"] for record in records for state in record["triggers"] if state["fired"])
            started = sum(1 for record in records if any(state["fired"] for state in record["triggers"]))
            line += (f"; monitor: {len(records)} runs, {started} fired ("
                     + ", ".join(f"{name} x{count}" for name, count in fired.most_common()) + ")")
        lines.append(line)
    spec = prepared.spec
    held_out = spec.split.validation_fraction + spec.split.test_fraction
    lines.append(f"  a drift reaches a model's training split only about {held_out * spec.source.window_days:.0f} + "
                 f"{spec.backtest.label_delay_days} days after it (the time split holds the newest "
                 f"{held_out:.0%} of the {spec.source.window_days}-day window out, and labels mature "
                 f"{spec.backtest.label_delay_days} days late)")
    return lines


def table(figures: dict[str, PolicyFigures], steps: list[datetime]) -> list[str]:
    oracle = figures[replay.ORACLE].scores
    lines = [f"{'policy':<27} {'log loss':>8} {'vs oracle':>9} {'ROC AUC':>7} {'vs oracle':>9} {'retrains':>8} "
             f"{'promoted':>8} {'CPU s':>7} {'wrong/worse':>11} {'recovery':>15}  worst window (gap)"]
    for policy, f in figures.items():
        ll, auc = f.scores.mean_log_loss, f.scores.mean_roc_auc
        worst = int(np.nanargmax(f.gap)) if np.isfinite(f.gap).any() else 0
        worst_text = "-" if policy == replay.ORACLE else f"{steps[worst]:%Y-%m-%d} ({f.gap[worst]:+.4f})"
        recovery = "; ".join("never" if r.step is None else f"{r.days:.0f} d ({r.steps_after} st)"
                             for r in f.recoveries) or "-"
        own = policy != replay.ORACLE
        lines.append(
            f"{f.label:<27} {ll:8.4f} {100 * (ll / oracle.mean_log_loss - 1):+8.2f}% {auc:7.4f} "
            f"{auc - oracle.mean_roc_auc:+9.4f} {f.retrains if own else '-':>8} {f.promotions:>8} "
            f"{f'{f.cpu_s:.0f}' if own else '-':>7} {f'{f.wrong}/{f.worse}':>11} {recovery:>15}  "
            f"{worst_text}" + (f"  [{f.errors} failed runs]" if f.errors else ""))
    return lines


def goals(figures: dict[str, PolicyFigures], y: np.ndarray, windows: np.ndarray,
          predictions: dict[str, np.ndarray], policy: str = "refit") -> list[tuple[bool | None, str]]:
    """Issue 20's goals for ``policy`` (Refit's default; an ablation is judged by the same goals)."""
    refit, oracle, always = figures[policy], figures[replay.ORACLE], figures["always"]
    name = refit.label
    gap = refit.scores.mean_log_loss / oracle.scores.mean_log_loss - 1
    found: list[tuple[bool | None, str]] = [
        (gap <= 0.01, f"{name}: served log loss within 1% of the oracle's: {100 * gap:+.2f}%")]
    verdicts, ok = [], True
    for other in ("always", "point", "never"):
        difference, z = paired_row_z(y, windows, refit.served, figures[other].served, predictions)
        if z < -replay.WRONG_Z:
            verdicts.append(f"better than {other} ({difference:+.4f}, z {z:.1f})")
        elif z <= replay.WRONG_Z:
            fewer = refit.retrains < always.retrains
            ok &= fewer
            verdicts.append(f"equal within noise to {other} ({difference:+.4f}, z {z:.1f}; "
                            f"{refit.retrains} retrains vs {always.retrains} for always-replace)")
        else:
            ok = False
            verdicts.append(f"worse than {other} ({difference:+.4f}, z {z:.1f})")
    found.append((ok, f"{name}: better than every non-oracle policy, or equal within noise with fewer retrains "
                      "than always-replace: " + "; ".join(verdicts)))
    found.append((refit.wrong == 0, f"{name}: wrong promotions (worse on the next window, one-sided z > "
                                    f"{replay.WRONG_Z}): {refit.wrong} of {refit.promotions} "
                                    f"({refit.worse} worse by the point estimate)"))
    for r in refit.recoveries:
        found.append((r.steps_after is not None and r.steps_after <= 2,
                      f"{name}: recovery after the sharp drift of {r.drift:%Y-%m-%d} within two steps: "
                      + ("never" if r.step is None else f"{r.steps_after} step(s), {r.days:.0f} days")))
    return found


def plot(timeline: Timeline, steps: list[datetime], figures: dict[str, PolicyFigures], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 6.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    colours = {"refit": "tab:blue", "always": "tab:orange", "point": "tab:green", "never": "tab:red",
               replay.ORACLE: "black", "refit_tuned": "tab:purple"}
    for policy, f in figures.items():
        style = {"color": colours[policy], "linewidth": 1.6 if policy in ("refit", replay.ORACLE) else 1.1,
                 "linestyle": "--" if policy == replay.ORACLE else (":" if policy in replay.ABLATIONS else "-")}
        top.plot(steps, f.scores.log_loss, label=f.label, **style)
        bottom.plot(steps, f.gap, label=f.label, **style)
        changed = [t for t in range(1, len(steps)) if f.served[t] != f.served[t - 1]]
        if policy != replay.ORACLE:
            top.scatter([steps[t] for t in changed], f.scores.log_loss[changed], color=colours[policy], s=14, zorder=3)
    for axis in (top, bottom):
        for moment in timeline.sharp:
            axis.axvline(moment, color="crimson", linewidth=1.2, linestyle=":")
        for begin, end in timeline.gradual:
            axis.axvspan(max(begin, steps[0]), min(end, steps[-1]), color="orange", alpha=0.08)
    top.set_ylabel("served log loss per window")
    bottom.set_ylabel("log loss − oracle's")
    top.set_title(f"{timeline.name}: {timeline.title}\n(dots: a new model served; dotted red: sharp drift; "
                  f"shaded: gradual drift)", fontsize=9)
    top.legend(fontsize=8, ncols=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

@dataclass
class Prepared:
    """A timeline ready to replay: its steps, rows, specs and the workers' jobs."""

    timeline: Timeline
    url: str
    steps: list[datetime]
    rows: pd.DataFrame
    spec: Any
    jobs: list[dict[str, Any]]


def prepare(timeline: Timeline, args: argparse.Namespace) -> Prepared:
    from ml_tasks.core.spec import load_spec

    root = args.workdir / timeline.name
    policies = replay.POLICIES + (replay.ABLATIONS if args.ablation else ())
    url = warehouse(timeline, args.workdir, args)
    steps = replay.step_dates(timeline.start, timeline.end, args.step_days)[: args.steps or None]
    rows_path = root / "runs" / "rows.parquet"
    if args.report_only:
        specs = {policy: root / "runs" / policy / "include" / "models" / timeline.spec_file.name
                 for policy in policies}
        rows = pd.read_parquet(rows_path)
    else:
        shutil.rmtree(root / "runs", ignore_errors=True)
        base = yaml.safe_load(timeline.spec_file.read_text())
        specs = {policy: policy_include(timeline, base, policy, root / "runs" / policy, args.sample_size,
                                        args.learning_curve) for policy in policies}
        rows = evaluation_rows(specs["refit"], url, steps, args.step_days)
        rows.to_parquet(rows_path)
    print(f"{timeline.name}: {len(steps)} steps of {args.step_days} days from {steps[0]:%Y-%m-%d %H:%M}, "
          f"{len(rows):,} rows scored per model", flush=True)
    threads = max((os.cpu_count() or 1) // args.jobs, 1) if args.jobs > 1 else None
    jobs = [{"label": f"{timeline.name}/{policy}", "policy": policy, "spec": str(specs[policy]),
             "steps": [s.isoformat() for s in steps], "rows": str(rows_path),
             "result": str(root / "runs" / f"{policy}.json"), "predictions": str(root / "runs" / f"{policy}.npz"),
             "env": env_for(root / "runs" / policy / "home", specs[policy].parents[1], url, threads)}
            for policy in policies]
    return Prepared(timeline, url, steps, rows, load_spec(specs["refit"]), jobs)


def report(prepared: Prepared, args: argparse.Namespace) -> list[tuple[bool | None, str]]:
    """Print the timeline's tables and goals (both kinds of window), plot it; returns the goals."""
    timeline, steps, rows, spec = prepared.timeline, prepared.steps, prepared.rows, prepared.spec
    results = {job["policy"]: json.loads(Path(job["result"]).read_text()) for job in prepared.jobs}
    predictions = {}
    for job in prepared.jobs:
        with np.load(job["predictions"]) as saved:
            predictions.update({f"{job['policy']}:{key}": saved[key] for key in saved.files})
    truth = None
    if timeline.truth:
        truth = shift_warehouse.read_truth(prepared.url).reindex(rows[spec.columns.id]).to_numpy(dtype=float)
    outcome: list[tuple[bool | None, str]] = []
    for by in (args.windows, "matured" if args.windows == "served" else "served"):
        figures = analyse(timeline, steps, args.step_days, rows, spec, results, predictions, truth, by)
        column = spec.columns.timestamp if by == "served" else spec.columns.label_observed_at
        windows = replay.window_index(rows[column], steps, args.step_days)
        y = rows[spec.columns.label].to_numpy(dtype=float)
        print(f"\n{timeline.name}: {timeline.title}; windows of the rows "
              f"{'applied' if by == 'served' else 'whose labels matured'} in each step "
              f"({int((windows >= 0).sum()):,} rows in {len(steps)} windows)")
        print("\n".join(table(figures, steps)))
        checked = goals(figures, y, windows, predictions)
        for passed, text in checked:
            print(f"  [{'PASS' if passed else 'MISS'}] {text}")
        for ablation in (policy for policy in replay.ABLATIONS if policy in figures):
            for passed, text in goals(figures, y, windows, predictions, ablation):
                print(f"  [info: {'PASS' if passed else 'MISS'}] {text}")
        for f in figures.values():
            if f.wrong_promotions:
                print(f"  wrong promotions of {f.label}: " + "; ".join(
                    f"{steps[p.step]:%Y-%m-%d} log loss {p.difference:+.4f} (z {p.z:.1f})" for p in f.wrong_promotions))
        if by == args.windows:
            outcome = checked
            plot(timeline, steps, figures, args.figures / f"policy_{timeline.name}.png")
    print("\n".join(diagnostics(prepared)))
    print(f"{timeline.name}: worker seconds (replay / scoring): " + ", ".join(
        f"{policy} {result['replay_s']:.0f} / {result['score_s']:.0f}" for policy, result in results.items()))
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timelines", nargs="+", choices=sorted(TIMELINES), default=["demo", "shift"])
    parser.add_argument("--step-days", type=int, default=7)
    parser.add_argument("--steps", type=int, default=0, help="replay only the first N steps (0: all)")
    parser.add_argument("--demo-rows", type=int, default=150_000)
    parser.add_argument("--shift-rows-per-day", type=int, default=300)
    parser.add_argument("--sample-size", type=int, default=0, help="override every spec's sampling.size (0: keep)")
    parser.add_argument("--learning-curve", action="store_true",
                        help="keep the specs' training.learning_curve (default off: extra fits no gate reads)")
    parser.add_argument("--windows", choices=["served", "matured"], default="served")
    parser.add_argument("--ablation", action="store_true",
                        help=f"also replay {', '.join(replay.ABLATIONS)} (Refit with a tuned gate; about +60%% time)")
    parser.add_argument("--jobs", type=int, default=2, help="policy workers at a time")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refit-bench-policy"))
    parser.add_argument("--figures", type=Path, default=FIGURES)
    parser.add_argument("--report-only", action="store_true",
                        help="analyse the replays already in --workdir (same arguments) without running them again")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepared = [prepare(TIMELINES[name], args) for name in args.timelines]
    # The Refit workers retrain most (triggers between cron runs): they start first.
    jobs = sorted((job for p in prepared for job in p.jobs), key=lambda job: not job["policy"].startswith("refit"))
    if not args.report_only:
        run_workers(jobs, args.jobs)
    print(f"replays done in {time.perf_counter() - started:.0f} s", flush=True)
    outcome = {p.timeline.name: report(p, args) for p in prepared}
    print(f"\ngoals (issue 20), windows of {args.windows} rows:")
    for name, checked in outcome.items():
        for passed, text in checked:
            print(f"  [{'PASS' if passed else 'MISS'}] {name}: {text}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s wall on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
