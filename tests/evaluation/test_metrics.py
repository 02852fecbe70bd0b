"""The weighted metrics (ml_tasks.evaluation.metrics): tie groups and the fast weighted AUC, calibration
error, and the one clipping rule every metric applies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from ml_tasks.evaluation.metrics import (
    EPS,
    calibration_metrics,
    clip_probabilities,
    compute_metrics,
    equal_mass_bins,
    expected_calibration_error,
    max_calibration_error,
    tie_groups,
    weighted_roc_auc,
)


def test_tie_groups_sort_stably_and_group_equal_scores():
    scores = np.array([0.3, 0.1, 0.3, 0.2, 0.1])
    up = tie_groups(scores)
    np.testing.assert_array_equal(up.order, [1, 4, 3, 0, 2])
    np.testing.assert_array_equal(up.starts, [0, 2, 3])
    np.testing.assert_array_equal(up.group, [0, 0, 1, 2, 2])
    down = tie_groups(scores, descending=True)
    np.testing.assert_array_equal(down.order, [0, 2, 3, 1, 4])
    np.testing.assert_array_equal(down.group, [0, 0, 1, 2, 2])
    assert len(tie_groups(np.zeros(0)).starts) == 0


def test_weighted_auc_matches_sklearn_with_ties_and_many_replicates():
    rng = np.random.default_rng(0)
    y = (rng.random(4_000) < 0.1).astype(int)
    scores = np.round(y + rng.normal(0, 1.0, 4_000), 1)  # plenty of ties
    weights = rng.choice([1.0, 5.0], 4_000)
    expected = roc_auc_score(y, scores, sample_weight=weights)
    assert weighted_roc_auc(scores, y, weights) == pytest.approx(expected, abs=1e-12)


@pytest.mark.filterwarnings("ignore:No positive class found:UserWarning")  # scikit-learn's, for "no positive"
@pytest.mark.parametrize("case", ["ties and zero weights", "unweighted", "saturated", "one positive", "no positive"])
def test_compute_metrics_equal_scikit_learns_on_the_clipped_probabilities(case):
    rng = np.random.default_rng(7)
    y = (rng.random(3_000) < 0.15).astype(int)
    p = np.round(np.clip(0.15 + 0.3 * y + rng.normal(0, 0.2, 3_000), 0, 1), 2)   # ties, and exactly 0 and 1
    w = rng.choice([0.0, 1.0, 2.5, 7.0], 3_000)
    if case == "unweighted":
        w = None
    elif case == "saturated":
        p = np.where(y == 1, 1.0 - 1e-9, rng.choice([1e-9, 1.0], 3_000))
    elif case == "one positive":
        y = np.zeros(3_000, dtype=int)
        y[w.argmax()] = 1
    elif case == "no positive":
        y = np.zeros(3_000, dtype=int)
    q = clip_probabilities(p)
    expected = {"pr_auc": average_precision_score(y, q, sample_weight=w),
                "log_loss": log_loss(y, q, sample_weight=w, labels=[0, 1]),
                "brier": brier_score_loss(y, q, sample_weight=w)}
    metrics = compute_metrics(y, p, w)
    assert {k: metrics[k] for k in expected} == pytest.approx(expected, abs=1e-12)
    if case == "no positive":  # one class: the AUC is undefined, NaN as scikit-learn's (which also warns)
        assert np.isnan(metrics["roc_auc"])
    else:
        assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, q, sample_weight=w), abs=1e-12)


def test_compute_metrics_name_what_is_wrong_with_their_inputs():
    with pytest.raises(ValueError, match="binary labels"):
        compute_metrics([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="as many labels as probabilities"):
        compute_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="positive sum"):
        compute_metrics([0, 1], [0.1, 0.2], [0.0, 0.0])


# --- calibration error: equal-mass reliability bins ------------------------------------------------

def test_ece_and_mce_with_equal_mass_bins_match_a_hand_computation():
    # Two bins of two rows: |0.5 - 0.15| = 0.35 and |0.5 - 0.35| = 0.15, each half the mass.
    y, p = [0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.25, abs=1e-15)
    assert max_calibration_error(y, p, bins=2) == pytest.approx(0.35, abs=1e-15)
    # Three tied rows (3/4 of the mass) share a bin: |2/3 - 0.2| x 3/4 + |1 - 0.8| x 1/4 = 0.4.
    y, p = [0, 1, 1, 1], [0.2, 0.2, 0.2, 0.8]
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.4, abs=1e-15)
    assert max_calibration_error(y, p, bins=2) == pytest.approx(2 / 3 - 0.2, abs=1e-15)


def test_ties_share_a_bin_whatever_the_row_order():
    rng = np.random.default_rng(0)
    p = rng.choice([0.1, 0.3, 0.5, 0.7], size=200)
    y = (rng.random(200) < p).astype(int)
    order = rng.permutation(200)
    bins = equal_mass_bins(p, bins=10)
    assert all(len(set(bins[p == value])) == 1 for value in np.unique(p))
    shuffled = expected_calibration_error(y[order], p[order], bins=10)
    assert shuffled == pytest.approx(expected_calibration_error(y, p, bins=10))


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(1)
    p = rng.random(300)
    y = (rng.random(300) < p**2).astype(int)
    w = rng.integers(0, 4, size=300)
    repeated = np.repeat(np.arange(300), w)
    weighted = calibration_metrics(y, p, w.astype(float), bins=7)
    expanded = calibration_metrics(y[repeated], p[repeated], None, bins=7)
    assert weighted == pytest.approx(expanded, rel=1e-12, abs=1e-15)
    assert set(weighted) == {"ece", "mce", "brier", "log_loss"}


# --- one clipping rule for every metric ------------------------------------------------------------

def test_calibration_metrics_clip_probabilities_as_every_other_metric_does():
    rng = np.random.default_rng(4)
    p = rng.random(200)
    p[:20], p[20:40] = 0.0, 1.0                      # saturated scores
    y = (rng.random(200) < p).astype(int)
    clipped = clip_probabilities(p)
    assert clipped.min() == EPS and clipped.max() == 1 - EPS
    assert calibration_metrics(y, p, bins=10) == calibration_metrics(y, clipped, bins=10)
    table = compute_metrics(y, p)
    assert {k: table[k] for k in ("brier", "log_loss", "ece")} == pytest.approx(
        {k: calibration_metrics(y, p, bins=15)[k] for k in ("brier", "log_loss", "ece")}, abs=1e-15)
