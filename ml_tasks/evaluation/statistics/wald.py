"""Wald intervals and one-sided z-tests of a difference that is asymptotically normal.

DeLong's AUC difference and the weighted accuracy difference behind McNemar's test both come
with a standard error, and the gate asks the same three questions of each: an interval, "is
``a`` better?" (superiority) and "is ``a`` worse by no more than a margin?" (non-inferiority).
:class:`WaldDifference` answers them once for both result types.

With ``d = metric(a) - metric(b)`` and its standard error ``se``:

* interval: ``d -/+ z_{1-alpha/2} se`` (two-sided ``1 - alpha``);
* non-inferiority with margin ``m >= 0``: H0 ``d <= -m``, ``z = (d + m) / se``,
  ``p = 1 - Phi(z)``;
* superiority with a minimum improvement ``g >= 0``: H0 ``d <= g``, ``z = (d - g) / se``; with
  ``g = 0`` it is the non-inferiority test with ``m = 0``.

Traps: the p-value is the p-value itself, never its log10 (what a widely copied fast-DeLong
implementation returns), and two identical models have ``se == 0``, where ``z`` must be
+-infinity (or 0 when the numerator is 0) rather than a division error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from scipy import stats as sps

from ml_tasks.evaluation.statistics.inputs import check_alpha


class OneSidedTest(NamedTuple):
    """A one-sided test of H0: improvement <= -margin (margin 0: superiority)."""

    z: float
    p_value: float
    margin: float
    alpha: float
    passed: bool


def safe_z(numerator: float, se: float) -> float:
    """``numerator / se``, or the exact answer when ``se == 0``: 0 for 0, else +-infinity."""
    if se > 0:
        return float(numerator / se)
    return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)


def _z_quantile(q: float) -> float:
    return float(sps.norm.ppf(q))


class WaldDifference:
    """Interval and one-sided tests of an asymptotically normal ``difference`` (a - b) with ``se``.

    A mixin for the frozen result dataclasses that carry both fields.
    """

    difference: float
    se: float

    def ci(self, alpha: float = 0.05) -> tuple[float, float]:
        """Two-sided ``1 - alpha`` Wald interval of the difference: ``d -/+ z_{1-alpha/2} se``."""
        check_alpha(alpha)
        half = _z_quantile(1.0 - alpha / 2.0) * self.se
        return self.difference - half, self.difference + half

    def non_inferiority(self, margin: float, alpha: float = 0.05) -> OneSidedTest:
        """One-sided test of H0: ``difference <= -margin`` against H1: ``> -margin``.

        ``z = (difference + margin) / se`` and ``p = 1 - Phi(z)`` (the p-value itself). ``a``
        passes (is "not worse by more than ``margin``") when ``p <= alpha``, which is the same as
        the one-sided ``1 - alpha`` lower bound ``difference - z_{1-alpha} se`` lying above
        ``-margin``. With ``se == 0`` (identical models) the difference is exact: z is
        +-infinity, or 0 when ``difference + margin == 0``.
        """
        check_alpha(alpha)
        if margin < 0:
            raise ValueError(f"margin: expected a non-negative allowed loss, got {margin}")
        return self._above(-margin, float(margin), alpha)

    def superiority(self, alpha: float = 0.05, min_improvement: float = 0.0) -> OneSidedTest:
        """One-sided test of H0: ``difference <= min_improvement`` against H1: ``> min_improvement``.

        ``z = (difference - min_improvement) / se``: ``a`` passes when it is better by more than
        the smallest gain worth having. With ``min_improvement == 0`` this is ``non_inferiority``
        with margin 0 (the same numbers). The returned ``margin`` is ``-min_improvement``: in both
        tests the bar the difference must clear is ``-margin``.
        """
        check_alpha(alpha)
        if min_improvement < 0:
            raise ValueError(f"min_improvement: expected a non-negative gain, got {min_improvement}")
        return self._above(min_improvement, -float(min_improvement) or 0.0, alpha)

    def _above(self, bar: float, margin: float, alpha: float) -> OneSidedTest:
        """H0: ``difference <= bar``; ``z = (difference - bar) / se`` (``difference + m`` is exact for ``bar = -m``)."""
        z = safe_z(self.difference - bar, self.se)
        p = float(sps.norm.sf(z))
        return OneSidedTest(z=z, p_value=p, margin=margin, alpha=alpha, passed=p <= alpha)
