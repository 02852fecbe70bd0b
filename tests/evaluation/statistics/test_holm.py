"""Holm's correction (ml_tasks.evaluation.statistics.holm): Holm, not statsmodels' default Holm–Šidák."""

from __future__ import annotations

import pytest
from statsmodels.stats.multitest import multipletests

from ml_tasks.evaluation.statistics.holm import holm


def test_holm_uses_holm_not_holm_sidak():
    p = {"auc": 0.01272, "log_loss": 0.2, "brier": 0.3, "slice:young": 0.4}
    result = holm(p, alpha=0.05)
    assert result["auc"].adjusted_p == pytest.approx(4 * 0.01272)          # 0.05088 > 0.05
    assert not result["auc"].reject
    reject_hs, adjusted_hs, _, _ = multipletests(list(p.values()), alpha=0.05)   # the default 'hs'
    assert reject_hs[0] and adjusted_hs[0] < 0.05                           # Holm–Šidák would reject
    reject, adjusted, _, _ = multipletests(list(p.values()), alpha=0.05, method="holm")
    assert [d.adjusted_p for d in result.values()] == pytest.approx(list(adjusted))
    assert [d.reject for d in result.values()] == list(reject)
    assert holm({}) == {}
    with pytest.raises(ValueError, match="p_values"):
        holm({"x": 1.2})
