"""Backtest fold consistency (ml_tasks.evaluation.statistics.folds): sign and Wilcoxon tests, ties as half
a win, and the fewest folds with which a test can pass."""

from __future__ import annotations

import pytest
from scipy import stats as sps

from ml_tasks.core.spec import min_folds_for
from ml_tasks.evaluation.statistics.folds import fold_consistency


def test_five_winning_folds_give_one_in_32_and_are_the_fewest_that_can_pass():
    for test in ("sign", "wilcoxon"):
        r = fold_consistency([0.01, 0.02, 0.005, 0.03, 0.012], alpha=0.05, test=test)
        assert r.p_value == pytest.approx(1 / 32)
        assert r.win_fraction == 1.0 and r.passed and r.reachable and r.min_folds == 5
    assert min_folds_for(0.05, one_sided=True) == 5
    assert min_folds_for(0.05, one_sided=False) == 6
    assert min_folds_for(1 / 32, one_sided=True) == 5
    assert min_folds_for(0.01, one_sided=True) == 7


def test_a_tie_is_half_a_win_and_left_out_of_the_tests_and_four_folds_cannot_reach_alpha():
    r = fold_consistency([0.01, -0.02, 0.0, 0.03, 0.012], min_win_fraction=0.5, test="sign")
    assert (r.wins, r.losses, r.ties) == (3, 1, 1)
    assert r.win_fraction == pytest.approx(3.5 / 5)                        # a tie is half a win
    assert r.p_value == pytest.approx(sps.binom.sf(2, 4, 0.5))              # ties dropped: 3 of 4
    assert not r.passed
    w = fold_consistency([0.01, -0.02, 0.0, 0.03, 0.012], test="wilcoxon")
    expected = sps.wilcoxon([0.01, -0.02, 0.03, 0.012], alternative="greater", method="exact").pvalue
    assert w.p_value == pytest.approx(expected)
    few = fold_consistency([0.1, 0.2, 0.3, 0.4], alpha=0.05)
    assert few.p_value == pytest.approx(1 / 16) and not few.reachable and not few.passed
    tied = fold_consistency([0.01, 0.01, 0.02, 0.03, -0.005, 0.04], test="wilcoxon")
    assert 0 < tied.p_value < 0.1                                           # exact permutation with ties
    with pytest.raises(ValueError, match="test"):
        fold_consistency([0.1], test="t")
