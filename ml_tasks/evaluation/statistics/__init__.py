"""The statistical core of the gate: paired tests of a challenger against a champion, one module per test.

Every function here is pure (arrays in, a small frozen result out) and works on the *same* test
rows scored by both models, because pairing is what makes a small improvement detectable: most
of the noise in a metric comes from which rows happen to be in the test set, and that noise is
shared by the two models and cancels in their difference.

=============================  ====================================================================
:func:`delong_paired`          ROC AUC difference, its variance and z (DeLong 1988, in the fast
                               O(n log n) form of Sun & Xu 2014), with sampling weights
                               (:mod:`.delong`)
:func:`paired_bootstrap`       any metric (log loss, Brier, PR AUC, ECE, ROC AUC) by a vectorised
                               paired Poisson bootstrap, fast enough for 1M rows x 1,000 replicates
                               (:mod:`.bootstrap`)
:func:`paired_bootstrap_many`  several metrics on the same replicates (what the gate runs)
:func:`mcnemar_at_threshold`   discordant decisions at one threshold (statsmodels' McNemar) and
                               the weighted accuracy difference (:mod:`.mcnemar`);
                               :func:`accuracy_test` is the gate's accuracy comparison on it
:func:`holm`                   Holm's step-down correction across many checks (:mod:`.holm`);
                               not the gate's rule for comparisons that must all pass (an
                               intersection–union test needs none, see :mod:`ml_tasks.gating.gate`)
:func:`fold_consistency`       does the challenger win across backtest folds? (sign / Wilcoxon)
                               (:mod:`.folds`); :func:`ml_tasks.core.spec.min_folds_for` gives the
                               fewest folds with which such a test can ever pass (the spec check
                               uses it)
:func:`simpson_pattern`        better overall but worse in every slice (or the reverse)
                               (:mod:`.slices`)
=============================  ====================================================================

Beneath them: :mod:`.inputs` checks the arrays every test receives (and words the errors, and
counts the rows of each class a test can use: :func:`class_counts`),
:mod:`.wald` gives DeLong's and McNemar's results their Wald interval and one-sided z-tests,
:mod:`.poisson_counts` draws the bootstrap's Poisson(1) counts and :mod:`.bootstrap_plan` turns
them into every metric of both models, 64 replicates at a time.

Conventions
-----------
* ``a`` is the challenger and ``b`` the reference (champion or baseline). A *difference* is
  ``metric(a) - metric(b)``; an *improvement* is the difference signed by
  :data:`ml_tasks.core.columns.HIGHER_IS_BETTER`, so that positive always means "a is better".
* Weights are the sampler's inverse inclusion probabilities (``_weight``): every estimate is of
  the *population* value, and every variance treats the rows as a sample with those weights
  (not as ``w`` repeated copies; see :func:`delong_paired`).
* A one-sided test rejects when ``p_value <= alpha``; p-values are p-values (never log10 of one,
  the trap of a widely copied fast-DeLong implementation).
* Probabilities are clipped by :func:`ml_tasks.evaluation.metrics.clip_probabilities` before any
  bootstrap metric, as in :func:`ml_tasks.evaluation.metrics.compute_metrics`, so the observed
  values match the evaluation's; DeLong ranks scores of any scale and clips nothing, so the gate
  hands it (and McNemar) clipped probabilities too.
* A zero DeLong variance for a non-zero difference is degenerate, never p = 0: the standard
  error falls back to its worst-case bound (:func:`delong_paired`).

>>> r = delong_paired(y, p_challenger, p_champion, weights=w)          # doctest: +SKIP
>>> r.difference, r.se, r.non_inferiority(margin=0.005).p_value          # doctest: +SKIP
(0.0041, 0.0012, 1.2e-13)
>>> b = paired_bootstrap("log_loss", y, p_challenger, p_champion, w, replicates=1000, seed=0)  # doctest: +SKIP
>>> b.improvement, (b.ci_low, b.ci_high), b.p_superiority                 # doctest: +SKIP
(0.0021, (0.0013, 0.0029), 0.000999)
"""

from __future__ import annotations

from ml_tasks.evaluation.statistics.bootstrap import (
    BOOTSTRAP_METRICS,
    BootstrapResult,
    paired_bootstrap,
    paired_bootstrap_many,
)
from ml_tasks.evaluation.statistics.delong import DeLongResult, delong_paired
from ml_tasks.evaluation.statistics.folds import FoldConsistency, fold_consistency
from ml_tasks.evaluation.statistics.holm import HolmDecision, holm
from ml_tasks.evaluation.statistics.inputs import class_counts
from ml_tasks.evaluation.statistics.mcnemar import (
    MCNEMAR_EXACT_BELOW,
    McNemarResult,
    accuracy_test,
    mcnemar_at_threshold,
)
from ml_tasks.evaluation.statistics.poisson_counts import poisson_replicate_counts
from ml_tasks.evaluation.statistics.slices import (
    BETTER_OVERALL_WORSE_IN_EVERY_SLICE,
    WORSE_OVERALL_BETTER_IN_EVERY_SLICE,
    simpson_pattern,
)
from ml_tasks.evaluation.statistics.wald import OneSidedTest

__all__ = [
    "BETTER_OVERALL_WORSE_IN_EVERY_SLICE",
    "BOOTSTRAP_METRICS",
    "MCNEMAR_EXACT_BELOW",
    "WORSE_OVERALL_BETTER_IN_EVERY_SLICE",
    "BootstrapResult",
    "DeLongResult",
    "FoldConsistency",
    "HolmDecision",
    "McNemarResult",
    "OneSidedTest",
    "accuracy_test",
    "class_counts",
    "delong_paired",
    "fold_consistency",
    "holm",
    "mcnemar_at_threshold",
    "paired_bootstrap",
    "paired_bootstrap_many",
    "poisson_replicate_counts",
    "simpson_pattern",
]
