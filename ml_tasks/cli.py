"""Command line: every stage runs as ``python -m ml_tasks <stage>``.

Stages after ``plan`` take ``--plan URI`` (the plan manifest in the artifact store) and find
their inputs under the run's folder, so any stage can be re-run alone. Each prints its
manifest as one JSON line, last, which is what a trainer container hands back to Airflow.

A failure is one line on stderr that names the file, field or parameter (``error: SpecError:
spec …: field 'candidates.2.params.epochs': …``) and a non-zero exit (1; 2 for a usage error);
``--debug`` adds the traceback. MLflow's routine messages (the cloudpickle notice, the
integer-column hint, the "View run … at" links) stay out of the terminal: they go, with
everything the command logs, to its log file (``$REFIT_HOME/logs/ml_tasks.log``, or
``REFIT_LOG_FILE``; empty: none). A reader that stops early (``status --json | head -1``) ends
the command quietly, with the exit status of a process killed by SIGPIPE (141).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO

from ml_tasks import pipeline
from ml_tasks.core.artifacts import RunArtifacts
from ml_tasks.core.manifests import CLI_RUN_ID
from ml_tasks.core.private_env import PrivateEnvironmentError, from_stdin_if_flagged
from ml_tasks.core.settings import load_settings
from ml_tasks.core.spec import NAME_PATTERN, SpecError, spec_reference
from ml_tasks.io.store import store_from_settings

log = logging.getLogger(__name__)

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

#: MLflow's messages on every run that ask nothing of the reader: kept in the log file only.
ROUTINE = re.compile("|".join((
    r"Passing a Python object as `python_model`",            # cloudpickle notice (mlflow.pyfunc)
    r"Hint: Inferred schema contains integer column",         # signature hint (a UserWarning)
    r"The specified dataset source can be interpreted in multiple ways",
    r"View (run|experiment) .*at",                            # run links, printed on stdout
)))
#: The exit status of a process killed by SIGPIPE, as shells report it.
EXIT_BROKEN_PIPE = 141


class CliError(ValueError):
    """A command-line input is wrong; the message names the parameter."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error on one line (argparse prints the whole usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _model_name(value: str) -> str:
    """``--model``: a spec's name (its file ``include/models/<name>.yaml``), never a path."""
    if not re.fullmatch(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(f"expected a model name such as 'credit_default' (lowercase letters, digits "
                                         f"and _, starting with a letter; a spec's name, not a path), got {value!r}")
    return value


def _spec_path(model: str) -> Path:
    path = load_settings().models_dir / f"{model}.yaml"
    if not path.is_file():
        raise CliError(f"--model {model!r}: no spec at {path}")
    return path


def _emit(payload: dict) -> None:
    print(json.dumps(payload, default=str))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ml_tasks", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="on a failure, print the traceback too")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("spec-reference", help="print every spec section and family param (Markdown)")

    demo_data = commands.add_parser("demo-data", help="build the seeded demo credit warehouse")
    demo_data.add_argument("--url", help="SQLAlchemy URL (default: REFIT_WAREHOUSE_URL or the embedded SQLite)")
    demo_data.add_argument("--rows", type=int, help="number of applications (scales to 10 million)")
    demo_data.add_argument("--seed", type=int)
    demo_data.add_argument("--settings", help="YAML settings (default demo_warehouse.yaml in REFIT_INCLUDE_DIR)")

    for name, helptext in (("plan", "resolve a run's plan and write it to the store"),
                           ("run", "run every stage in this process (the DAG's path without Airflow)")):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--model", required=True, type=_model_name)
        sub.add_argument("--as-of", required=True, help="ISO date or datetime (UTC)")
        sub.add_argument("--sample-size", type=int)
        sub.add_argument("--candidates", help="comma-separated candidate names")
        sub.add_argument("--dry-run", action="store_true")
        sub.add_argument("--dag-run-id", default=CLI_RUN_ID)

    for stage in _INPUTS:
        sub = commands.add_parser(stage, help=f"run the {stage} stage of a planned run")
        sub.add_argument("--plan", required=True, help="URI of the run's plan.json")

    train = commands.add_parser("train", help="train one candidate (the trainer command)")
    train.add_argument("--plan", required=True, help="URI of the run's plan.json")
    train.add_argument("--split", help="URI of the split manifest (default: the run's split.json)")
    train.add_argument("--candidate", required=True)
    on_folds = train.add_mutually_exclusive_group()
    on_folds.add_argument("--fold", type=int, help="train the candidate's recipe on this backtest fold instead")
    on_folds.add_argument("--folds", type=int, nargs="+", metavar="FOLD",
                          help="the same on each of these folds in one process (a backtest job)")
    backtest = commands.add_parser("backtest", help="summarise the backtest folds of a run (after train --folds)")
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
    score = commands.add_parser("score", help="score an interval's rows with the champion (spec's scoring section)")
    score.add_argument("--model", required=True, type=_model_name)
    score.add_argument("--as-of", required=True, help="end of the interval (ISO date or datetime, UTC); it starts "
                                                      "scoring.window_days earlier")
    score.add_argument("--dag-run-id", default=CLI_RUN_ID)
    parity = commands.add_parser("check-scoring", help="compare the features the scoring query computes with the "
                                                       "training query's, row by row (training/serving skew)")
    parity.add_argument("--model", required=True, type=_model_name)
    parity.add_argument("--as-of", required=True, help="end of the window compared (ISO date or datetime, UTC): "
                                                       "pick one whose rows have labels")
    parity.add_argument("--days", type=int, help="length of the window (default: source.window_days)")
    monitor = commands.add_parser("monitor", help="champion health on the labels matured since its as-of; which "
                                                  "retrain triggers fire (spec's monitoring section)")
    monitor.add_argument("--model", required=True, type=_model_name)
    monitor.add_argument("--as-of", required=True, help="the moment monitored (ISO date or datetime, UTC): rows of "
                                                        "[champion's as-of, as-of) with labels observed by then")
    monitor.add_argument("--dag-run-id", default=CLI_RUN_ID)
    status = commands.add_parser("status", help="champion, last run and latest health of a model")
    status.add_argument("--model", required=True, type=_model_name)
    status.add_argument("--json", action="store_true")
    for sub in commands.choices.values():  # --debug after the command too; SUPPRESS keeps one given before
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The CLI sets up logging itself (below); MLflow's own set-up would print past its filters.
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    with _cli_output(args.debug):
        try:
            # Before anything connects anywhere: a trainer container's logins arrive on stdin.
            from_stdin_if_flagged(sys.stdin)
        except PrivateEnvironmentError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 1
        log.info("python -m ml_tasks %s", " ".join(sys.argv[1:] if argv is None else argv),
                 extra={"file_only": True})
        try:
            _run(args)
            sys.stdout.flush()  # a reader that left shows here, not in the interpreter's last flush
        except BrokenPipeError:
            _discard_stdout()
            return EXIT_BROKEN_PIPE
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            log.error("python -m ml_tasks %s failed", args.command, exc_info=True, extra={"file_only": True})
            if args.debug:
                traceback.print_exc()
            hint = "" if args.debug or isinstance(exc, CliError | SpecError) else " (--debug for the traceback)"
            print(f"error: {one_line(exc)}{hint}", file=sys.stderr)
            return 1
    return 0


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type (not for a CLI input error) and its message."""
    message = " / ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or "(no message)"
    return message if isinstance(exc, CliError) else f"{type(exc).__name__}: {message}"


def _run(args: argparse.Namespace) -> None:
    command = args.command
    if command == "spec-reference":
        print(spec_reference(), end="")
    elif command == "demo-data":
        from ml_tasks.core.settings import ensure_local_folders
        from ml_tasks.data.demo_warehouse import build_demo_warehouse

        settings = load_settings()
        ensure_local_folders(settings)
        # The include folder of this deployment (an installed ml_tasks has none beside it).
        settings_file = args.settings or settings.include_dir / "demo_warehouse.yaml"
        summary = build_demo_warehouse(args.url or settings.warehouse_url, settings_file, rows=args.rows,
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
        if args.folds:
            _emit(pipeline.backtest_folds(plan, args.candidate, args.folds))
        elif args.fold is not None:
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
    elif command == "score":
        _emit(pipeline.score_all(str(_spec_path(args.model)), args.as_of, dag_run_id=args.dag_run_id))
    elif command == "check-scoring":
        report = pipeline.scoring_parity(str(_spec_path(args.model)), args.as_of, days=args.days)
        _emit(report)
        if not report["ok"]:
            raise CliError(f"--model {args.model}: the scoring query does not compute the features as the training "
                           f"query does: {' | '.join(report['problems'])}")
    elif command == "monitor":
        _emit(pipeline.monitor(str(_spec_path(args.model)), args.as_of, dag_run_id=args.dag_run_id))
    elif command == "status":
        _status(_spec_path(args.model), args.json)


def _status(spec_path: Path, as_json: bool) -> None:
    """Champion and last run; with a ``monitoring`` section, the latest health and its trend too."""
    from ml_tasks.monitoring.health import HealthRecord, format_health
    from ml_tasks.reporting.status import format_status, model_status

    ctx = pipeline.context_for(spec_path)
    status = model_status(ctx.spec, ctx.settings, ctx.store)
    lines = [format_status(status)]
    if ctx.spec.monitoring is not None:
        status["health"] = pipeline.health(spec_path)
        latest = status["health"]["latest"]
        lines += format_health(HealthRecord.model_validate(latest) if latest else None, status["health"]["trend"])
    print(json.dumps(status, indent=2, default=str) if as_json else "\n".join(lines))


@contextlib.contextmanager
def _cli_output(debug: bool) -> Iterator[None]:
    """For one command: warnings become log records; the terminal (stderr) gets warnings and
    errors less MLflow's routine ones (all of them with ``--debug``); the log file gets every
    record; MLflow's "View run" lines on stdout go to the log instead. Undone afterwards."""
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if debug else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.addFilter(lambda record: not getattr(record, "file_only", False)
                      and (debug or not ROUTINE.search(record.getMessage())))
    handlers: list[logging.Handler] = [console]
    logfile = _log_file()
    if logfile is not None:
        handlers.append(logfile)
    level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with contextlib.redirect_stdout(_StdoutLessRoutine(sys.stdout)):
            yield
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def _log_file() -> logging.Handler | None:
    """The command's log file (REFIT_LOG_FILE, else under REFIT_HOME), or None where it cannot be written."""
    configured = os.environ.get("REFIT_LOG_FILE")
    if configured == "":
        return None
    try:
        path = Path(configured) if configured else load_settings().home / "logs" / "ml_tasks.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except (OSError, ValueError):
        return None  # a read-only image, say: the terminal still gets what matters
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    return handler


class _StdoutLessRoutine:
    """stdout, less MLflow's "View run … at" lines (MLflow writes them to ``sys.stdout`` itself,
    not through logging), which go to the log file instead."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if ROUTINE.search(text):
            log.info(text.strip(), extra={"file_only": True})
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _discard_stdout() -> None:
    """The reader of stdout has gone: point stdout at /dev/null so the interpreter's last flush is quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
