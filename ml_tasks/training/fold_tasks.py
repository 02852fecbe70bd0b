"""How many backtest folds one mapped task runs: chosen from what a fold and a task start cost.

A mapped task pays a fixed cost before it does any work: the scheduler queues it, the worker
starts a task process, and that starts the trainer process (``python -m ml_tasks train``, or a
container). When a fold trains in less time than that, mapping one task per fold spends more
on starting tasks than parallelism wins back; when folds are heavy, and slots are free, one task
per fold is what makes the backtest fast.

The model: ``C`` jobs (candidates, with the champion's recipe) of ``F`` folds each are cut into
tasks of ``g`` folds; ``S`` tasks run at once, each costing ``start + g * fold``. The tasks run in
``waves = ceil(C * ceil(F / g) / S)``, so the backtest's wall time is about
``waves * (start + g * fold)``. :func:`folds_per_task` returns the ``g`` in ``1..F`` that
minimises it (the smallest such ``g`` on a tie: more, smaller tasks retry cheaper).

Hand-written: no scheduler library decides mapping granularity, and this is arithmetic on two
measured figures (``bench/bench_backtest.py`` checks the choice against both extremes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FoldCost:
    """What the choice is made from: seconds to start a task, seconds of one fold, parallel slots."""

    start_seconds: float
    fold_seconds: float
    slots: int


def expected_wall(jobs: int, folds: int, per_task: int, cost: FoldCost) -> float:
    """The backtest's expected wall time with ``per_task`` folds a task (the module's model)."""
    tasks = jobs * math.ceil(folds / per_task)
    waves = math.ceil(tasks / max(cost.slots, 1))
    return waves * (cost.start_seconds + min(per_task, folds) * cost.fold_seconds)


def folds_per_task(jobs: int, folds: int, cost: FoldCost) -> int:
    """The number of folds per mapped task with the least expected wall time."""
    if jobs < 1 or folds < 1:
        return 1
    return min(range(1, folds + 1), key=lambda per_task: (expected_wall(jobs, folds, per_task, cost), per_task))


def fold_groups(folds: int, per_task: int) -> list[list[int]]:
    """Folds ``0..folds-1`` in consecutive groups of at most ``per_task``."""
    return [list(range(start, min(start + per_task, folds))) for start in range(0, folds, max(per_task, 1))]
