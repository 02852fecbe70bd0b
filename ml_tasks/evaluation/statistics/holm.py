"""Holm's step-down correction: one family-wise error rate across many p-values.

For a family where *any one* rejection decides (promote if some metric is better, fail if some
slice is harmed), Holm (1979) keeps the chance of any false rejection at alpha, under any
dependence between the tests (every comparison is made on the same test rows). The gate's
promotion family is not such a family: it promotes only if *every* comparison passes, an
intersection–union test that needs no correction (earlier releases Holm-adjusted it, which only
cost power; see :mod:`ml_tasks.gating.gate`). The simulation of the gate's decision rule uses
this module to measure what the old rule cost.

Trap: ``statsmodels.stats.multitest.multipletests`` defaults to ``method="hs"``, Holm–Šidák,
which is slightly more powerful but assumes independent or positively dependent tests; Holm
needs ``method="holm"``, and the tests hold this module to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from statsmodels.stats.multitest import multipletests

from ml_tasks.evaluation.statistics.inputs import check_alpha


class HolmDecision(NamedTuple):
    """One check's Holm-adjusted p-value, and whether its null is rejected at the family's alpha."""

    adjusted_p: float
    reject: bool


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, HolmDecision]:
    """Holm's step-down correction: family-wise error <= alpha across all the named checks.

    Sort the ``m`` p-values, ``p_(1) <= ... <= p_(m)``; reject ``H_(1), ..., H_(k)`` for the
    largest ``k`` with ``p_(i) <= alpha / (m - i + 1)`` for every ``i <= k``. Equivalently the
    adjusted p-value ``max_{j <= i} min(1, (m - j + 1) p_(j))`` is compared with ``alpha``
    (Holm 1979). Valid under any dependence between the checks, which is what a gate with
    several metrics compared on the same rows has.

    Uses ``multipletests(..., method="holm")``: its default, ``'hs'``, is Holm–Šidák, which is
    slightly more powerful but assumes independent or positively dependent tests.
    """
    check_alpha(alpha)
    names = list(p_values)
    if not names:
        return {}
    p = np.array([p_values[k] for k in names], dtype=float)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p_values: expected probabilities in [0, 1], got {dict(zip(names, p.tolist(), strict=True))}")
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    return {k: HolmDecision(float(adj), bool(rej)) for k, adj, rej in zip(names, adjusted, reject, strict=True)}
