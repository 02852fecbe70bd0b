"""Where Refit's tasks run and how long they may: the GPU pool, the trainer queue, stage timeouts.

Pool
    A trainer whose spec asks for ``trainer.gpus`` takes that many slots of the ``refit_gpu``
    pool (the train and backtest tasks; ``pool_slots=gpus``), so the scheduler never starts more
    GPU trainers than the deployment has GPUs, whatever the executor's parallelism. A CPU
    trainer (``gpus: 0``) stays in Airflow's ``default_pool``. The pool must exist before such a
    task can run (the scheduler leaves a task of an unknown pool waiting): every place that sets
    Airflow up creates it from :func:`refit_pools` — ``make demo`` and the tests
    (:func:`refit_airflow.demo.prepare_airflow`), the compose stack's ``airflow-init``, the
    real-services test — with ``REFIT_GPU_SLOTS`` slots (default: the most GPUs any spec asks
    for, so every trainer can run, one at a time). ``python -m refit_airflow.scheduling pools
    FILE`` writes the file ``airflow pools import FILE`` reads.
Queue
    ``trainer.queue`` in the spec, else ``REFIT_TRAINER_QUEUE`` (read when the DAG is parsed),
    sends the trainer tasks to that queue: with the CeleryExecutor, GPU hosts run ``airflow
    celery worker --queues gpu`` and take only those. Unset: Airflow's default queue.
Timeouts
    Every task of a spec's DAGs gets an ``execution_timeout`` from the spec's ``timeouts``
    (minutes per stage, with built-in defaults: :data:`ml_tasks.core.spec.DEFAULT_TIMEOUT_MINUTES`),
    set by :func:`apply_timeouts` once the DAG is built. The approve task is the exception: it
    waits for a person, bounded by ``approval_timeout_hours`` instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from ml_tasks.core.spec import ModelSpec, timeout_minutes

#: The pool GPU trainers take ``trainer.gpus`` slots of.
GPU_POOL = "refit_gpu"


def trainer_placement(spec: ModelSpec, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The pool, slots and queue arguments of a spec's trainer tasks (only those that apply)."""
    env = os.environ if env is None else env
    placement: dict[str, Any] = {}
    if spec.trainer.gpus:
        placement.update(pool=GPU_POOL, pool_slots=spec.trainer.gpus)
    queue = spec.trainer.queue or (env.get("REFIT_TRAINER_QUEUE") or "").strip()
    if queue:
        placement["queue"] = queue
    return placement


def stage_timeout(spec: ModelSpec, task_id: str) -> timedelta:
    """The ``execution_timeout`` of a task of the spec's DAGs, from its ``timeouts``."""
    return timedelta(minutes=timeout_minutes(spec.timeouts, task_id))


def apply_timeouts(dag: Any, spec: ModelSpec) -> None:
    """Give every task of ``dag`` that has none the spec's timeout for its stage (not a task
    that waits for a person: its wait has its own bound)."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    for task in dag.tasks:
        if task.execution_timeout is None and not isinstance(task, HITLOperator):
            task.execution_timeout = stage_timeout(spec, task.task_id)


def gpu_slots(specs: list[ModelSpec], env: Mapping[str, str] | None = None) -> int:
    """``REFIT_GPU_SLOTS``, or the most GPUs one spec's trainer asks for (at least 1)."""
    env = os.environ if env is None else env
    raw = (env.get("REFIT_GPU_SLOTS") or "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"REFIT_GPU_SLOTS={raw!r}: expected a whole number >= 1 (the GPUs of the workers)")
        return int(raw)
    return max([1, *(spec.trainer.gpus for spec in specs)])


def refit_pools(specs: list[ModelSpec], env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The pools Refit's tasks need, as ``airflow pools import`` reads them."""
    return {GPU_POOL: {"slots": gpu_slots(specs, env), "include_deferred": False,
                       "description": "GPUs of the trainer workers: a trainer task takes its spec's trainer.gpus "
                                      "slots (REFIT_GPU_SLOTS sizes it)"}}


def loadable_specs(models_dir: Path) -> list[ModelSpec]:
    """Every spec of ``models_dir`` that loads (a broken one has a placeholder DAG, and no trainer)."""
    from ml_tasks.core.spec import SpecError, discover_specs, load_spec

    specs = []
    for path in discover_specs(models_dir):
        try:
            specs.append(load_spec(path))
        except SpecError:
            continue
    return specs


def write_pools_file(path: Path, models_dir: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Write the pools file of the specs in ``models_dir`` (default: the settings') to ``path``."""
    from ml_tasks.core.settings import load_settings

    specs = loadable_specs(models_dir or load_settings(env).models_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(refit_pools(specs, env), indent=2, sort_keys=True))
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "pools":
        print("usage: python -m refit_airflow.scheduling pools FILE   (then: airflow pools import FILE)",
              file=sys.stderr)
        return 2
    print(write_pools_file(Path(args[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
