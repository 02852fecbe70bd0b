"""The families that fit in steps report their validation loss to ``on_step`` (what the tuner
prunes on), can be stopped by it, and never keep the listener."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ml_tasks.core.spec import CandidateSpec
from ml_tasks.models import LightGBMCandidate, LogisticRegressionCandidate, PriorCandidate, build_candidate
from tests.models.network.demo_data import FAST, FEATURES, time_split


class StopError(Exception):
    pass


def listener(stop_at: int | None = None):
    seen: list[tuple[int, float]] = []

    def on_step(step: int, loss: float) -> None:
        seen.append((step, loss))
        if step == stop_at:
            raise StopError

    return seen, on_step


def weighted_log_loss(y, p, w):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(np.average(-(y * np.log(p) + (1 - y) * np.log(1 - p)), weights=w))


def test_lightgbm_reports_each_rounds_weighted_validation_log_loss():
    (X, y), (Xv, yv), _ = time_split(6_000)
    wv = np.where(yv == 1, 3.0, 1.0)
    model = LightGBMCandidate(FEATURES, {"n_estimators": 80, "num_leaves": 7, "early_stopping_rounds": 10})
    seen, model.on_step = listener()
    model.fit(X, y, None, Xv, yv, wv)

    # Every round until early stopping, which keeps the trees up to the best round.
    assert [step for step, _ in seen] == list(range(1, len(seen) + 1))
    assert model.best_iteration_ < len(seen) <= 80
    frame = model._dataset_frame(Xv)
    for step in (1, model.best_iteration_ // 2, model.best_iteration_):
        expected = weighted_log_loss(yv, model.booster_.predict(frame, num_iteration=step), wv)
        assert seen[step - 1][1] == pytest.approx(expected, rel=1e-9)
    assert "on_step" not in vars(model)  # used by one fit, never pickled
    pickle.dumps(model)


def test_the_network_reports_each_epochs_validation_loss():
    from ml_tasks.models.network import TorchMLPCandidate

    (X, y), (Xv, yv), _ = time_split(6_000)
    model = TorchMLPCandidate(FEATURES, {**FAST, "max_epochs": 3, "one_batch_check": False})
    seen, model.on_step = listener()
    model.fit(X, y, None, Xv, yv, None)

    assert seen == [(record["epoch"], record["valid_loss"]) for record in model.history_]
    assert "on_step" not in vars(model)


def test_a_resumed_network_reports_its_earlier_epochs_again(tmp_path):
    """A trainer killed mid-trial resumes from the last checkpoint; the listener hears every epoch
    as an uninterrupted fit would tell it, so the tuner's pruning decides as it did."""
    from ml_tasks.models.network import TorchMLPCandidate

    (X, y), (Xv, yv), _ = time_split(6_000)
    params = {**FAST, "max_epochs": 4, "patience": 10, "one_batch_check": False}
    whole, model = listener(), TorchMLPCandidate(FEATURES, params)
    model.on_step = whole[1]
    model.fit(X, y, None, Xv, yv, None)
    killed = TorchMLPCandidate(FEATURES, params, checkpoint_dir=tmp_path)
    _, killed.on_step = listener(stop_at=2)  # the checkpoint of epoch 2 is written before it stops
    with pytest.raises(StopError):
        killed.fit(X, y, None, Xv, yv, None)
    resumed, model = listener(), TorchMLPCandidate(FEATURES, params, checkpoint_dir=tmp_path)
    model.on_step = resumed[1]
    model.fit(X, y, None, Xv, yv, None)
    assert model.resumed_from_epoch_ == 2 and resumed[0] == whole[0] and len(whole[0]) == 4


@pytest.mark.parametrize("family, params", [
    ("lightgbm", {"n_estimators": 80, "num_leaves": 7}),
    ("torch_mlp", {**FAST, "max_epochs": 5, "one_batch_check": False}),
])
def test_a_listener_that_raises_stops_the_fit(family, params):
    model = build_candidate(CandidateSpec(name="c", family=family, params=params), FEATURES)
    (X, y), (Xv, yv), _ = time_split(6_000)
    seen, model.on_step = listener(stop_at=2)
    with pytest.raises(StopError):
        model.fit(X, y, None, Xv, yv, None)
    assert [step for step, _ in seen] == [1, 2]


def test_which_families_report_steps():
    assert LightGBMCandidate.reports_steps and not LogisticRegressionCandidate.reports_steps
    assert not PriorCandidate.reports_steps
