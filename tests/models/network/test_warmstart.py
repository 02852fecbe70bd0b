"""Warm start (``ml_tasks.models.network.warmstart``): fine-tuning from the champion starts lower,
keeps what its inputs meant, resumes only its own checkpoint, and refuses a champion it cannot continue."""

from __future__ import annotations

import pickle

import pytest

from ml_tasks.core.spec import FeaturesSpec
from ml_tasks.models import PriorCandidate
from ml_tasks.models.network import TorchMLPCandidate
from tests.models.network.demo_data import FAST, FEATURES, demo_rows, fit, time_split


def test_warm_start_from_the_champion_starts_from_a_lower_validation_loss():
    X, y = demo_rows(24_000)
    old, new, valid = slice(0, 8_000), slice(8_000, 12_000), slice(12_000, 15_000)
    params = {**FAST, "max_epochs": 2, "one_batch_check": False}
    champion = TorchMLPCandidate(FEATURES, params).fit(X.iloc[old], y[old], None, X.iloc[valid], y[valid], None)
    X_new = X.iloc[new].copy()
    X_new.loc[X_new.index[:50], "purpose"] = "solar_panels"  # a category the champion never saw

    scratch = TorchMLPCandidate(FEATURES, params).fit(X_new, y[new], None, X.iloc[valid], y[valid], None)
    warm = TorchMLPCandidate(FEATURES, params)
    assert warm.can_warm_start_from(champion) is None
    warm.warm_start_from = champion  # as the trainer does under training.mode: warm_start
    warm.fit(X_new, y[new], None, X.iloc[valid], y[valid], None)
    assert warm.initial_valid_loss_ < scratch.initial_valid_loss_
    assert warm.history_[0]["valid_loss"] < scratch.history_[0]["valid_loss"]
    assert warm.encoder_.means == champion.encoder_.means
    assert warm.encoder_.vocab["purpose"] == champion.encoder_.vocab["purpose"] + ["solar_panels"]
    assert "embeddings.1.weight" in warm.warm_started_ and "head.weight" in warm.warm_started_
    assert warm.warm_start_from is None  # the champion is not pickled inside the challenger
    via_constructor = TorchMLPCandidate(FEATURES, params, warm_start_from=champion)
    via_constructor.fit(X_new, y[new], None, X.iloc[valid], y[valid], None)
    assert via_constructor.initial_valid_loss_ == warm.initial_valid_loss_


def test_a_checkpoint_is_resumed_only_by_a_retry_from_the_same_champion(tmp_path, caplog):
    X, y = demo_rows(24_000)
    old, new, valid = slice(0, 8_000), slice(8_000, 12_000), slice(12_000, 15_000)
    params = {**FAST, "max_epochs": 1, "one_batch_check": False}
    champion_a, champion_b = (TorchMLPCandidate(FEATURES, params, seed=seed).fit(X.iloc[old], y[old], None,
                                                                                 X.iloc[valid], y[valid], None)
                              for seed in (1, 2))

    def retrain(champion):
        model = TorchMLPCandidate(FEATURES, params, checkpoint_dir=tmp_path, warm_start_from=champion)
        return model.fit(X.iloc[new], y[new], None, X.iloc[valid], y[valid], None)

    assert retrain(champion_a).resumed_from_epoch_ is None
    reloaded_a = pickle.loads(pickle.dumps(champion_a))  # a retry loads the champion again in a new process
    assert retrain(reloaded_a).resumed_from_epoch_ == 1
    caplog.clear()
    from_b = retrain(champion_b)
    assert from_b.resumed_from_epoch_ is None and from_b.warm_started_  # B's run, not A's resumed
    assert "warm-start champion" in caplog.text
    assert retrain(None).resumed_from_epoch_ is None  # nor does a run from scratch resume a warm start


def test_warm_start_refuses_a_champion_of_another_family_or_other_features():
    model = fit({"max_epochs": 1, "one_batch_check": False})
    other_features = TorchMLPCandidate(FeaturesSpec(numeric=FEATURES.numeric), FAST)
    assert "other features" in other_features.can_warm_start_from(model)
    assert "'prior' model" in TorchMLPCandidate(FEATURES, FAST).can_warm_start_from(PriorCandidate(FEATURES))
    (X, y), (Xv, yv), _ = time_split(12_000)
    other_features.warm_start_from = model
    with pytest.raises(ValueError, match="cannot warm start .*other features"):
        other_features.fit(X, y, None, Xv, yv, None)
