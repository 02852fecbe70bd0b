"""The champion's metric on newly matured rows, with a confidence interval, and whether it decayed.

A point drop proves nothing: on a few hundred rows a well-kept champion's ROC AUC wanders by a
few hundredths. The monitor therefore judges decay the way the gate judges a challenger, with a
one-sided test: with ``bound`` the end of the live metric's (1 − 2α) interval nearest to good,

- higher is better (ROC AUC): *decayed* when ``bound < registered − margin``;
- lower is better (log loss, Brier): *decayed* when ``bound > registered + margin``;

that is, when the data reject, at level α, "the champion is at most ``margin`` worse than the
metric it was registered with". The registered metric (measured on the champion's test rows when
its run gated it) is taken as a fixed reference; its own error is small next to a monitor
window's, and a ``margin`` above zero absorbs it. A margin above zero is also what keeps
repeated looks safe: a monitor tests a growing window every day, and at ``margin = 0`` each look
of a healthy champion would trip with probability α (``tests/monitoring/test_triggers.py``
measures both).

The intervals: ROC AUC by DeLong's variance (:func:`ml_tasks.evaluation.statistics.delong.delong_auc`),
log loss and Brier as means of per-row losses, by the central limit theorem.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from ml_tasks.core.columns import HIGHER_IS_BETTER
from ml_tasks.core.manifests import Manifest
from ml_tasks.evaluation.metrics import row_losses
from ml_tasks.evaluation.statistics.delong import delong_auc


class MetricInterval(Manifest):
    """A live metric on ``rows`` rows and its (1 − 2α) interval ``[low, high]``."""

    metric: str
    value: float
    low: float
    high: float
    se: float
    rows: int
    alpha: float

    @property
    def favourable_bound(self) -> float:
        """The interval's end nearest to good: the one-sided bound the decay test uses."""
        return self.high if HIGHER_IS_BETTER[self.metric] else self.low


class DecayJudgement(Manifest):
    """The live metric against the registered one: decayed (significantly) or not, and why."""

    live: MetricInterval
    registered: float
    margin: float
    decayed: bool
    reason: str

    @property
    def limit(self) -> float:
        """The registered metric moved by the margin toward worse: the bound must not cross it."""
        higher = HIGHER_IS_BETTER[self.live.metric]
        return self.registered - self.margin if higher else self.registered + self.margin


def live_interval(metric: str, y: npt.ArrayLike, p: npt.ArrayLike, alpha: float) -> MetricInterval:
    """``metric`` of scores ``p`` against labels ``y`` with its (1 − 2α) normal interval."""
    labels = np.asarray(y, dtype=float)
    scores = np.asarray(p, dtype=float)
    if metric == "roc_auc":
        value, se = delong_auc(labels, scores)
    else:
        losses = row_losses(metric, labels, scores)
        value = float(losses.mean())
        se = float(losses.std(ddof=1) / math.sqrt(len(losses))) if len(losses) > 1 else math.inf
    z = float(sps.norm.ppf(1 - alpha))
    return MetricInterval(metric=metric, value=float(value), low=float(value - z * se), high=float(value + z * se),
                          se=float(se), rows=len(labels), alpha=alpha)


def judge_decay(live: MetricInterval, registered: float, margin: float) -> DecayJudgement:
    """Whether ``live`` is significantly more than ``margin`` worse than ``registered``."""
    higher = HIGHER_IS_BETTER[live.metric]
    limit = registered - margin if higher else registered + margin  # DecayJudgement.limit, before it exists
    bound = live.favourable_bound
    decayed = bound < limit if higher else bound > limit
    side = "upper" if higher else "lower"
    verdict = "decayed" if decayed else "no significant decay"
    reason = (f"{live.metric} {live.value:.4f} [{live.low:.4f}, {live.high:.4f}] on {live.rows} new rows vs "
              f"{registered:.4f} registered: {verdict} ({side} bound {bound:.4f} "
              f"{'beyond' if decayed else 'within'} the limit {limit:.4f} = registered "
              f"{'-' if higher else '+'} margin {margin:g}, alpha {live.alpha:g})")
    return DecayJudgement(live=live, registered=registered, margin=margin, decayed=decayed, reason=reason)
