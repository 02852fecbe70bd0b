"""The backtest check: does the challenger win across walk-forward folds against the reference?

Each fold retrains both recipes on the same time window and scores them on the same later
rows; the check counts the folds the challenger wins (ties count half) against
``acceptance.backtest.min_win_fraction``, and reports a one-sided sign or Wilcoxon test
(:func:`~ml_tasks.evaluation.statistics.fold_consistency`) that joins the promotion tests only
with ``require_significance``. Two cases say nothing and are recorded as such: the challenger
is the reference's own recipe (each fold retrains the same model), and a fold test that cannot
reach alpha with this many folds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ml_tasks.core.columns import HIGHER_IS_BETTER
from ml_tasks.core.manifests import BacktestManifest, GateCheck
from ml_tasks.core.spec import ModelSpec, min_folds_for
from ml_tasks.evaluation.statistics import FoldConsistency, fold_consistency

#: A candidate's recipe as the backtest retrains it: ``{"family": ..., "params": {...}}``.
Recipe = Mapping[str, Any]


def consistency_check(spec: ModelSpec, backtest: BacktestManifest, challenger: str, reference: str,
                      reference_label: str, recipes: Mapping[str, Recipe] | None = None) -> GateCheck | None:
    """The challenger's wins over the reference across backtest folds (None without both in the backtest).

    "Not informative" (passes, no test) when ``recipes`` shows both sides share one recipe, or
    when no fold tells them apart (every metric equal on every fold: the same model retrained).
    """
    consistency = spec.acceptance.backtest
    ours, theirs = backtest.per_fold.get(challenger), backtest.per_fold.get(reference)
    if not ours or not theirs:
        return None
    folds = sorted(set(ours) & set(theirs), key=int)
    sign = 1.0 if HIGHER_IS_BETTER[consistency.metric] else -1.0
    diffs = [sign * (ours[f][consistency.metric] - theirs[f][consistency.metric]) for f in folds]
    result = fold_consistency(diffs, consistency.min_win_fraction, spec.acceptance.alpha, test=consistency.test)
    name = f"backtest:{consistency.metric}:wins"
    counts = f"wins {result.wins} and ties {result.ties} of {result.n_folds} backtest folds against {reference_label}"
    shared = _shared_recipe(recipes or {}, challenger, reference)
    if shared is not None or all(ours[f] == theirs[f] for f in folds):
        why = (f"{challenger} is {reference_label}'s own recipe ({shared}), so each fold retrains the same model"
               if shared is not None else f"{challenger} and {reference_label} score alike on every metric of "
                                          f"every fold")
        return GateCheck(
            name=name, metric=consistency.metric, challenger=result.win_fraction, reference=None,
            difference=float(np.mean(diffs)), ci_low=float(min(diffs)), ci_high=float(max(diffs)), p_value=None,
            threshold=consistency.min_win_fraction, passed=True, status="not_informative",
            reason=f"not informative: {why}; fold wins cannot tell them apart ({counts}), so this check tests "
                   f"nothing and passes")
    enough = result.win_fraction >= consistency.min_win_fraction
    significance = consistency.require_significance
    return GateCheck(
        name=name, metric=consistency.metric, challenger=result.win_fraction,
        reference=None, difference=float(np.mean(diffs)), ci_low=float(min(diffs)), ci_high=float(max(diffs)),
        p_value=result.p_value if significance else None, family="promotion" if significance else None,
        condition_met=enough, threshold=consistency.min_win_fraction, passed=enough,
        test=f"{consistency.test} test over {result.n_folds} folds",
        reason=(f"{counts} on {consistency.metric} ({result.win_fraction:.0%} counting ties as half; needs "
                f"{consistency.min_win_fraction:.0%}), {_fold_test_note(result, consistency.test, spec)}"),
    )


def _fold_test_note(result: FoldConsistency, test: str, spec: ModelSpec) -> str:
    """The fold test's p-value, or why there is none worth printing (too few folds to reach alpha)."""
    if result.reachable:
        return f"one-sided {test} test p={result.p_value:.3g}"
    alpha = spec.acceptance.alpha
    return (f"a one-sided {test} test cannot reach alpha={alpha:g} with {result.n_folds} folds (needs "
            f"{min_folds_for(alpha)}): not tested")


def _shared_recipe(recipes: Mapping[str, Recipe], challenger: str, reference: str) -> str | None:
    """The family both sides share when their recipes (family and params) are known and equal, else None."""
    ours, theirs = recipes.get(challenger), recipes.get(reference)
    if ours is None or theirs is None:
        return None
    same = ours.get("family") == theirs.get("family") and dict(ours.get("params") or {}) == dict(
        theirs.get("params") or {})
    return f"{ours.get('family')}, same params" if same else None
