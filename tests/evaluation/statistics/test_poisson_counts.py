"""The bootstrap's counts (ml_tasks.evaluation.statistics.poisson_counts): Poisson(1) in distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ml_tasks.evaluation.statistics.poisson_counts import poisson_replicate_counts


def test_poisson_counts_are_poisson_one():
    counts = poisson_replicate_counts(np.zeros(40_000), 64, seed=9).ravel()
    values, observed = np.unique(counts, return_counts=True)
    expected = sps.poisson.pmf(np.arange(8), 1.0) * counts.size
    binned = np.r_[[observed[values == k].sum() for k in range(7)], observed[values >= 7].sum()]
    expected[7] = counts.size - expected[:7].sum()
    chi2 = np.sum((binned - expected) ** 2 / expected)
    assert sps.chi2.sf(chi2, df=7) > 1e-4
    assert counts.mean() == pytest.approx(1.0, abs=5 * 1 / math.sqrt(counts.size))
