"""How many folds a mapped backtest task runs: light folds share a task (a task start costs more
than they do), heavy folds get their own where slots are free, and the groups cover every fold."""

from __future__ import annotations

import pytest

from ml_tasks.training.fold_tasks import FoldCost, expected_wall, fold_groups, folds_per_task


def test_folds_cheaper_than_a_task_start_run_in_one_task_per_candidate():
    # The demo on 2 cores: a fold fits in half a second, a task takes ~4 s to start.
    assert folds_per_task(3, 4, FoldCost(start_seconds=4.0, fold_seconds=0.5, slots=2)) == 4


def test_heavy_folds_with_free_slots_get_a_task_each():
    assert folds_per_task(3, 4, FoldCost(start_seconds=4.0, fold_seconds=60.0, slots=12)) == 1
    # Four slots for twelve heavy jobs: three waves of single folds beat two of pairs.
    assert folds_per_task(3, 4, FoldCost(start_seconds=4.0, fold_seconds=60.0, slots=4)) == 1


def test_the_choice_is_never_worse_than_either_extreme():
    for start in (0.5, 2.0, 8.0):
        for fold in (0.1, 1.0, 10.0, 100.0):
            for slots in (1, 2, 4, 16):
                cost = FoldCost(start, fold, slots)
                chosen = expected_wall(3, 4, folds_per_task(3, 4, cost), cost)
                assert chosen <= min(expected_wall(3, 4, 1, cost), expected_wall(3, 4, 4, cost)) + 1e-9


def test_one_slot_always_runs_a_candidates_folds_together():
    # Nothing runs in parallel: every extra task only adds its start.
    assert folds_per_task(2, 6, FoldCost(start_seconds=0.1, fold_seconds=100.0, slots=1)) == 6


@pytest.mark.parametrize(("folds", "per_task", "groups"), [
    (4, 1, [[0], [1], [2], [3]]), (4, 4, [[0, 1, 2, 3]]), (5, 2, [[0, 1], [2, 3], [4]]), (3, 7, [[0, 1, 2]]),
])
def test_groups_cover_every_fold_once_in_order(folds, per_task, groups):
    assert fold_groups(folds, per_task) == groups


def test_the_specs_folds_per_task_wins_over_the_measured_choice(demo_spec):
    from ml_tasks.core.settings import load_settings
    from ml_tasks.training.backtest import folds_per_candidate_task

    settings = load_settings({"REFIT_TASK_START_S": "1000"})
    assert folds_per_candidate_task(demo_spec, 3, 0.01, settings) == demo_spec.backtest.folds
    pinned = demo_spec.model_copy(update={"backtest": demo_spec.backtest.model_copy(update={"folds_per_task": 1})})
    assert folds_per_candidate_task(pinned, 3, 0.01, settings) == 1
    # No measured fit (a candidate whose train result is missing): a task per fold.
    assert folds_per_candidate_task(demo_spec, 3, None, settings) == 1
