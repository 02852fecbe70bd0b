"""Command line: every stage runs as ``python -m ml_tasks <stage>``.

Stages after ``plan`` take ``--plan URI`` (the plan manifest in the artifact store) and find
their inputs under the run's folder, so any stage can be re-run alone. Each prints its
manifest as one JSON line, last, which is what a trainer container hands back to Airflow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from ml_tasks import pipeline
from ml_tasks.core.artifacts import RunArtifacts
from ml_tasks.core.settings import load_settings
from ml_tasks.core.spec import NAME_PATTERN
from ml_tasks.io.store import store_from_settings

# Manifests a stage reads, by file name under the run's folder.
_INPUTS = {
    "extract": [],
    "validate": ["snapshot"],
    "sample": ["validation"],
    "split": ["sample"],
    "gate": ["evaluation", "backtest"],
    "register": ["validation", "gate"],
    "report": ["validation", "sample", "split", "evaluation", "gate", "registration"],
}


def _model_name(value: str) -> str:
    """``--model``: a spec's name (its file ``include/models/<name>.yaml``), never a path."""
    if not re.fullmatch(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(f"expected a model name such as 'credit_default' (lowercase letters, digits "
                                         f"and _, starting with a letter; a spec's name, not a path), got {value!r}")
    return value


def _spec_path(model: str) -> Path:
    path = load_settings().models_dir / f"{model}.yaml"
    if not path.is_file():
        raise SystemExit(f"--model {model!r}: no spec at {path}")
    return path


def _emit(payload: dict) -> None:
    print(json.dumps(payload, default=str))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml_tasks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo_data = commands.add_parser("demo-data", help="build the seeded demo credit warehouse")
    demo_data.add_argument("--url", help="SQLAlchemy URL (default: REFIT_WAREHOUSE_URL or the embedded SQLite)")
    demo_data.add_argument("--rows", type=int, help="number of applications (scales to 10 million)")
    demo_data.add_argument("--seed", type=int)
    demo_data.add_argument("--settings", help="YAML settings (default include/demo_warehouse.yaml)")

    for name, helptext in (("plan", "resolve a run's plan and write it to the store"),
                           ("run", "run every stage in this process (the DAG's path without Airflow)")):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--model", required=True, type=_model_name)
        sub.add_argument("--as-of", required=True, help="ISO date or datetime (UTC)")
        sub.add_argument("--sample-size", type=int)
        sub.add_argument("--candidates", help="comma-separated candidate names")
        sub.add_argument("--dry-run", action="store_true")
        sub.add_argument("--dag-run-id", default="cli")

    for stage in _INPUTS:
        sub = commands.add_parser(stage, help=f"run the {stage} stage of a planned run")
        sub.add_argument("--plan", required=True, help="URI of the run's plan.json")

    train = commands.add_parser("train", help="train one candidate (the trainer command)")
    train.add_argument("--plan", required=True, help="URI of the run's plan.json")
    train.add_argument("--split", help="URI of the split manifest (default: the run's split.json)")
    train.add_argument("--candidate", required=True)
    train.add_argument("--fold", type=int, help="train the candidate's recipe on this backtest fold instead")
    backtest = commands.add_parser("backtest", help="summarise the backtest folds of a run (after train --fold)")
    backtest.add_argument("--plan", required=True)

    evaluate = commands.add_parser("evaluate", help="score trained candidates and the champion on the test split")
    evaluate.add_argument("--plan", required=True)
    evaluate.add_argument("--results", nargs="*", help="URIs of train results (default: all under the run)")

    promote = commands.add_parser("promote", help="promote a run's challenger after review (records the reason)")
    promote.add_argument("--model", required=True, type=_model_name)
    promote.add_argument("--run-key", required=True, help="the run's key (its folder under runs/<model>/)")
    promote.add_argument("--reason", required=True, help="why the gate's verdict is overridden (audit trail)")
    promote.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who decided")
    rollback = commands.add_parser("rollback", help="move the champion alias back to the previous version")
    rollback.add_argument("--model", required=True, type=_model_name)
    rollback.add_argument("--reason", required=True)
    rollback.add_argument("--by", default=os.environ.get("USER", "unknown"))
    status = commands.add_parser("status", help="champion and last run of a model")
    status.add_argument("--model", required=True, type=_model_name)
    status.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command
    if command == "demo-data":
        from ml_tasks.core.settings import ensure_local_folders
        from ml_tasks.data.demo_warehouse import build_demo_warehouse

        settings = load_settings()
        ensure_local_folders(settings)
        summary = build_demo_warehouse(args.url or settings.warehouse_url, args.settings, rows=args.rows,
                                       seed=args.seed)
        _emit(summary.__dict__)
    elif command in {"plan", "run"}:
        candidates = args.candidates.split(",") if args.candidates else None
        runner = pipeline.plan_run if command == "plan" else pipeline.run_all
        _emit(runner(str(_spec_path(args.model)), args.as_of, sample_size=args.sample_size, candidates=candidates,
                     dry_run=args.dry_run, dag_run_id=args.dag_run_id))
    elif command in _INPUTS:
        store = store_from_settings(load_settings())
        plan = store.read_json(args.plan)
        run = RunArtifacts(plan["run_prefix"])
        inputs = [store.read_json(run.manifest(name)) for name in _INPUTS[command]]
        _emit(getattr(pipeline, command)(plan, *inputs))
    elif command == "train":
        store = store_from_settings(load_settings())
        plan = store.read_json(args.plan)
        if args.fold is not None:
            _emit(pipeline.backtest_fold(plan, args.candidate, args.fold))
        else:
            split = store.read_json(args.split or RunArtifacts(plan["run_prefix"]).split)
            _emit(pipeline.train(plan, split, args.candidate))
    elif command == "backtest":
        store = store_from_settings(load_settings())
        plan = store.read_json(args.plan)
        run = RunArtifacts(plan["run_prefix"])
        results = [store.read_json(uri) for uri in store.list(run.backtest_folds, suffix=".json")
                   if run.is_fold_result(uri)]
        trained = [store.read_json(run.train_result(name)) for name in plan["candidates"]]
        _emit(pipeline.backtest_summary(plan, results, trained))
    elif command == "evaluate":
        store = store_from_settings(load_settings())
        plan = store.read_json(args.plan)
        run = RunArtifacts(plan["run_prefix"])
        uris = args.results or [run.train_result(name) for name in plan["candidates"]]
        results = [store.read_json(uri) for uri in uris]
        _emit(pipeline.evaluate(plan, store.read_json(run.split), results))
    elif command == "promote":
        _emit(pipeline.promote(str(_spec_path(args.model)), args.run_key, args.reason, args.by))
    elif command == "rollback":
        _emit(pipeline.rollback(str(_spec_path(args.model)), args.reason, args.by))
    elif command == "status":
        from ml_tasks.reporting.status import format_status, model_status

        ctx = pipeline.context_for(_spec_path(args.model))
        status = model_status(ctx.spec, ctx.settings, ctx.store)
        print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
