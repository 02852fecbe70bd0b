"""Does the challenger win across backtest folds? Win fraction with a sign or Wilcoxon test.

The backtest retrains every candidate on several time folds; the gate asks whether the
challenger beats the reference on enough of them (each tied fold counting half a win), and
optionally whether that is significant. With a handful of folds only exact tests make sense:
the sign test (how many folds it won) or Wilcoxon's signed-rank test (also by how much).

Traps:

* the smallest p-value either test can reach is ``2^-n`` for ``n`` non-tied folds: with 5
  folds 1/32 one-sided, so a one-sided test at 0.05 needs at least 5 folds and a two-sided one
  6. :func:`ml_tasks.core.spec.min_folds_for` computes that, so the spec check rejects a
  required fold test that could never pass, and :attr:`FoldConsistency.reachable` reports it here;
* ``scipy.stats.wilcoxon`` drops zero differences by default (``zero_method="wilcox"``), like
  the sign test: a tied fold is evidence for neither side;
* scipy's exact Wilcoxon distribution assumes distinct ``|d|``: with ties among them the exact
  permutation distribution is used instead (see :func:`fold_consistency`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from ml_tasks.core.spec import min_folds_for
from ml_tasks.evaluation.statistics.inputs import check_alpha


@dataclass(frozen=True)
class FoldConsistency:
    """Does the challenger win across backtest folds?

    ``wins`` / ``losses`` / ``ties`` count folds with improvement > 0, < 0, == 0;
    ``win_fraction = (wins + ties / 2) / n_folds``: a tied fold (the same recipe retrained on the
    same rows scores the same) is no evidence either way, so it is half a win, not a loss.
    ``p_value`` is one-sided (H0: the improvement is not positive in distribution) from
    ``test``. ``min_folds`` is the fewest non-tied folds with which that test can reach
    ``alpha``; ``reachable`` says whether this many folds can.
    ``passed``: ``win_fraction >= min_win_fraction`` and ``p_value <= alpha``.
    """

    n_folds: int
    wins: int
    losses: int
    ties: int
    win_fraction: float
    test: str
    p_value: float
    alpha: float
    min_win_fraction: float
    min_folds: int
    reachable: bool
    passed: bool


def fold_consistency(diffs: Sequence[float], min_win_fraction: float = 0.5, alpha: float = 0.05,
                     test: Literal["sign", "wilcoxon"] = "sign") -> FoldConsistency:
    """Win fraction and a one-sided exact test over per-fold improvements (positive = a better).

    ``diffs`` must already be direction-aware improvements (e.g. ``-(loss_a - loss_b)``).

    ``sign``
        Exact sign test: of the ``n`` folds with a non-zero improvement, ``wins ~
        Binomial(n, 1/2)`` under H0, ``p = P(X >= wins)``. Uses only the direction of each fold.
    ``wilcoxon``
        Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, ``alternative="greater"``): also
        uses how large each fold's improvement is relative to the others. ``zero_method=
        "wilcox"`` (scipy's default) drops folds with a zero improvement before ranking, as the
        sign test does, so a tied fold counts for neither side and both tests see the same
        ``n``. Without ties among the ``|d|`` the p-value is exact (``method="exact"``); scipy's
        exact distribution assumes distinct ``|d|``, so with ties it uses the exact permutation
        distribution (all ``2^n`` sign flips, ``n <= 16``) or the normal approximation beyond.

    Both have the same smallest attainable p-value, ``2^-n`` (every fold favours the
    challenger): with 5 folds, 1/32 = 0.031 one-sided. See :func:`ml_tasks.core.spec.min_folds_for`.
    """
    d = _checked_improvements(diffs, min_win_fraction, alpha, test)
    wins, losses = int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0))
    ties = len(d) - wins - losses
    nonzero = d[d != 0]
    p = _one_sided_p(nonzero, wins, test)
    min_folds = min_folds_for(alpha, one_sided=True)
    win_fraction = (wins + 0.5 * ties) / len(d)
    return FoldConsistency(n_folds=len(d), wins=wins, losses=losses, ties=ties, win_fraction=win_fraction, test=test,
                           p_value=p, alpha=alpha, min_win_fraction=min_win_fraction, min_folds=min_folds,
                           reachable=len(nonzero) >= min_folds,
                           passed=bool(win_fraction >= min_win_fraction and p <= alpha))


def _checked_improvements(diffs: Sequence[float], min_win_fraction: float, alpha: float,
                          test: str) -> npt.NDArray[np.float64]:
    check_alpha(alpha)
    if not 0.0 <= min_win_fraction <= 1.0:
        raise ValueError(f"min_win_fraction: expected a fraction in [0, 1], got {min_win_fraction}")
    if test not in ("sign", "wilcoxon"):
        raise ValueError(f"test: expected 'sign' or 'wilcoxon', got {test!r}")
    d = np.asarray(diffs, dtype=float).reshape(-1)
    if len(d) == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"diffs: expected one finite improvement per fold, got {d.tolist()}")
    return d


def _one_sided_p(nonzero: npt.NDArray[np.float64], wins: int, test: str) -> float:
    """The one-sided p-value of ``test`` over the folds with a non-zero improvement (1 when there are none)."""
    if len(nonzero) == 0:
        return 1.0
    if test == "sign":
        return float(sps.binomtest(wins, len(nonzero), 0.5, alternative="greater").pvalue)
    magnitudes = np.abs(nonzero)
    if len(np.unique(magnitudes)) == len(magnitudes):
        method: object = "exact"
    elif len(nonzero) <= 16:
        method = sps.PermutationMethod(n_resamples=np.inf)
    else:
        method = "asymptotic"
    return float(sps.wilcoxon(nonzero, alternative="greater", zero_method="wilcox", method=method).pvalue)
