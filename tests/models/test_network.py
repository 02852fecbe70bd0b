"""Tests of the PyTorch MLP candidate (``ml_tasks.models.network``) on small demo-warehouse frames.

Every fit is small (a few thousand rows, a narrow network, a handful of epochs) so the module
runs in well under a minute on two CPU cores. The CUDA test runs only where torch sees a GPU.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.core.spec import CandidateSpec, FeaturesSpec
from ml_tasks.data.demo_warehouse import DemoWarehouseSettings, generate_tables
from ml_tasks.models import PriorCandidate, build_candidate, feature_frame
from ml_tasks.models.network import (
    CHECKPOINT_NAME,
    TorchMLPCandidate,
    TrainingCheckError,
    load_checkpoint,
    save_checkpoint,
)

FEATURES = FeaturesSpec(
    numeric=["age", "income", "employment_years", "amount", "term_months", "credit_score", "existing_debt",
             "prior_applications"],
    categorical=["region", "purpose", "channel"],
)
#: Small and quick; every test overrides what it is about.
FAST = {"hidden": "64,32", "batch_size": 256, "max_epochs": 6, "patience": 3, "lr": 3e-3, "embedding_dim": 4}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these networks are too small to gain from more, and on a busy machine
    OpenMP threads waiting for each other make every tiny step many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@cache
def demo_rows(rows: int, seed: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    """Applications joined with their customer and outcome, oldest first, as model inputs."""
    tables = generate_tables(DemoWarehouseSettings(rows=rows, seed=seed))
    joined = (tables["applications"].merge(tables["customers"], on="customer_id")
              .merge(tables["outcomes"], on="application_id").sort_values("applied_at", kind="stable"))
    joined["prior_applications"] = joined.groupby("customer_id").cumcount().astype("float64")
    return feature_frame(joined, FEATURES).reset_index(drop=True), joined["defaulted"].to_numpy()


def time_split(rows: int, seed: int = 5):
    """(X, y) for train (oldest 60 %), validation (next 20 %) and test (newest 20 %)."""
    X, y = demo_rows(rows, seed)
    a, b = int(0.6 * rows), int(0.8 * rows)
    return (X.iloc[:a], y[:a]), (X.iloc[a:b].reset_index(drop=True), y[a:b]), (X.iloc[b:].reset_index(drop=True), y[b:])


def fit(params: dict | None = None, rows: int = 12_000, seed: int = 0, **kwargs) -> TorchMLPCandidate:
    (X, y), (Xv, yv), _ = time_split(rows)
    model = TorchMLPCandidate(FEATURES, {**FAST, **(params or {})}, seed=seed, **kwargs)
    return model.fit(X, y, None, Xv, yv, None)


# ---------------------------------------------------------------------------------------------
# Interface and quality
# ---------------------------------------------------------------------------------------------


def test_models_module_imports_torch_only_when_the_family_is_built():
    code = ("import sys, ml_tasks.models as m, ml_tasks.core.spec as s; assert 'torch' not in sys.modules; "
            "c = m.build_candidate(s.CandidateSpec(name='net', family='torch_mlp', params={'hidden': '8'}), "
            "s.FeaturesSpec(numeric=['a'])); assert type(c).__name__ == 'TorchMLPCandidate'; "
            "assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_beats_the_prior_on_later_demo_data_and_records_its_training():
    (X, y), _, (Xt, yt) = time_split(12_000)
    model = fit()
    p = model.predict_proba(Xt)
    prior = PriorCandidate(FEATURES).fit(X, y).predict_proba(Xt)[:, 1]

    assert p.shape == (len(Xt), 2) and p.dtype == np.float64 and np.allclose(p.sum(axis=1), 1.0)
    assert roc_auc_score(yt, p[:, 1]) > 0.72  # the prior ranks nothing (0.5); logistic regression ~0.78
    assert log_loss(yt, p[:, 1]) < log_loss(yt, prior)
    assert model.device_ == "cpu" and model.resident_ and model.peak_memory_bytes_ > 0
    assert 1 <= model.best_epoch_ <= model.epochs_run_ == len(model.history_) <= FAST["max_epochs"]
    assert model.resumed_from_epoch_ is None and model.check_["skipped"] == {}
    for record in model.history_:
        assert set(record) == {"epoch", "train_loss", "valid_loss", "valid_roc_auc", "rows_per_s", "train_seconds",
                               "epoch_seconds"}
        assert all(isinstance(v, float | int) for v in record.values())


def test_build_candidate_passes_spec_params_and_rejects_bad_ones():
    spec = CandidateSpec(name="net", family="torch_mlp", params={"hidden": "32, 16", "dropout": 0.0, "bf16": False})
    model = build_candidate(spec, FEATURES, seed=3)
    assert isinstance(model, TorchMLPCandidate) and model.config.hidden == (32, 16) and model.seed == 3
    with pytest.raises(ValueError, match="unknown param.*'hiden'"):
        TorchMLPCandidate(FEATURES, {"hiden": "32"})
    with pytest.raises(ValueError, match="param 'hidden'"):
        TorchMLPCandidate(FEATURES, {"hidden": "32,x"})
    with pytest.raises(ValueError, match="param 'batch_size'"):
        TorchMLPCandidate(FEATURES, {"batch_size": 0})


def test_same_seed_gives_the_same_model_and_another_seed_does_not():
    _, _, (Xt, _) = time_split(12_000)
    params = {"max_epochs": 2, "one_batch_check": False}
    first, second, other = fit(params, seed=1), fit(params, seed=1), fit(params, seed=2)
    assert np.array_equal(first.predict_proba(Xt), second.predict_proba(Xt))
    assert not np.allclose(first.predict_proba(Xt), other.predict_proba(Xt))


def test_resident_and_streamed_batches_train_the_same_model():
    _, _, (Xt, _) = time_split(12_000)
    params = {"max_epochs": 2, "one_batch_check": False}
    resident, streamed = fit({**params, "resident": True}), fit({**params, "resident": False})
    assert resident.resident_ and not streamed.resident_
    assert np.array_equal(resident.predict_proba(Xt), streamed.predict_proba(Xt))


def test_sample_weights_enter_the_loss_whatever_their_scale():
    (X, y), (Xv, yv), (Xt, _) = time_split(12_000)
    params = {**FAST, "max_epochs": 2, "one_batch_check": False}
    w = np.where(X["channel"].to_numpy() == "branch", 5.0, 1.0)

    def fitted(weights):
        return TorchMLPCandidate(FEATURES, params).fit(X, y, weights, Xv, yv, None).predict_proba(Xt)

    assert np.allclose(fitted(w), fitted(40.0 * w), atol=1e-5)  # normalised to mean 1
    assert not np.allclose(fitted(w), fitted(None), atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def test_normalisation_and_vocabularies_come_from_the_training_rows_only():
    (X, y), (Xv, yv), _ = time_split(12_000)
    shifted = Xv.copy()
    shifted["income"] *= 1000.0
    shifted["credit_score"] = np.nan
    shifted["region"] = "atlantis"  # a category only the validation rows have
    params = {**FAST, "max_epochs": 1, "one_batch_check": False}
    a = TorchMLPCandidate(FEATURES, params).fit(X, y, None, Xv, yv, None)
    b = TorchMLPCandidate(FEATURES, params).fit(X, y, None, shifted, yv, None)
    assert a.encoder_ == b.encoder_
    i = FEATURES.numeric.index("income")
    assert a.encoder_.means[i] == pytest.approx(X["income"].mean())
    assert a.encoder_.medians[i] == pytest.approx(X["income"].median())
    assert "atlantis" not in a.encoder_.vocab["region"]


def test_unseen_and_missing_categories_share_index_zero_and_predict():
    model = fit({"max_epochs": 1, "one_batch_check": False})
    _, _, (Xt, _) = time_split(12_000)
    rows = Xt.head(3).copy()
    unseen, missing = rows.copy(), rows.copy()
    unseen[FEATURES.categorical] = "never-seen"
    missing[FEATURES.categorical] = None
    missing[FEATURES.numeric[:2]] = np.nan
    missing.loc[missing.index[0], "amount"] = np.inf
    codes = model.encoder_.transform(unseen)[1]
    assert (codes == 0).all() and (model.encoder_.transform(missing)[1] == 0).all()
    known = model.encoder_.transform(Xt)[1]
    for j, name in enumerate(FEATURES.categorical):  # a known value is its 1-based place in the vocabulary
        assert np.array_equal(known[:, j], pd.Index(model.encoder_.vocab[name]).get_indexer(Xt[name]) + 1)
    assert np.isfinite(model.predict_proba(missing)).all()
    numeric_only = unseen.copy()
    numeric_only[FEATURES.categorical] = None
    assert np.array_equal(model.predict_proba(unseen), model.predict_proba(numeric_only))


# ---------------------------------------------------------------------------------------------
# One-batch check
# ---------------------------------------------------------------------------------------------


def test_shuffled_labels_fail_the_one_batch_check_with_a_clear_message():
    (X, y), (Xv, yv), _ = time_split(12_000)
    shuffled = np.random.default_rng(0).permutation(y)
    with pytest.raises(TrainingCheckError) as error:
        TorchMLPCandidate(FEATURES, FAST).fit(X, shuffled, None, Xv, yv, None)
    message = str(error.value)
    assert "one-batch check 'held-out signal' failed" in message
    assert "before" in message and "after" in message and "broken labels" in message


def test_real_labels_pass_the_one_batch_check_by_a_wide_margin():
    figures = fit({"max_epochs": 1}).check_
    assert figures["loss_after"] < 0.5 * figures["prior_loss"] and figures["heldout_z"] > 6


def test_a_learning_rate_far_too_low_fails_the_fit_check():
    with pytest.raises(TrainingCheckError, match=r"check 'fit' failed.*bad learning rate \(lr=1e-06"):
        fit({"lr": 1e-6})


# ---------------------------------------------------------------------------------------------
# Checkpoints, warm start, pickling
# ---------------------------------------------------------------------------------------------

RESUME_PARAMS = {**FAST, "max_epochs": 8, "patience": 8, "one_batch_check": False}


def train_for_resume_test(checkpoint_dir: str, on_checkpoint=None) -> TorchMLPCandidate:
    """The run the resume test kills and repeats (also run in a child process)."""
    (X, y), (Xv, yv), _ = time_split(30_000)
    model = TorchMLPCandidate(FEATURES, RESUME_PARAMS, seed=4, checkpoint_dir=checkpoint_dir)
    model.on_checkpoint = on_checkpoint
    return model.fit(X, y, None, Xv, yv, None)


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    code = f"from tests.models.test_network import train_for_resume_test; train_for_resume_test({str(folder)!r})"
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while not _checkpoint_epoch(folder) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.poll() is None, "the training process ended before it could be killed"
        assert _checkpoint_epoch(folder), "no checkpoint within 60 s"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    killed_at = _checkpoint_epoch(folder)
    assert 1 <= killed_at < RESUME_PARAMS["max_epochs"]

    # Every checkpoint saved is handed on as it is written (the trainer uploads it to S3).
    handed_on = []
    resumed = train_for_resume_test(str(folder), lambda path: handed_on.append((path, load_checkpoint(folder)["epoch"])))
    assert handed_on == [(folder / CHECKPOINT_NAME, epoch) for epoch in range(killed_at + 1, RESUME_PARAMS["max_epochs"] + 1)]
    assert pickle.loads(pickle.dumps(resumed)).on_checkpoint is None
    assert resumed.resumed_from_epoch_ == killed_at
    assert [r["epoch"] for r in resumed.history_] == list(range(1, RESUME_PARAMS["max_epochs"] + 1))
    assert load_checkpoint(folder)["finished"] and not list(folder.glob("*.tmp"))

    uninterrupted = train_for_resume_test(str(tmp_path / "fresh"))
    _, _, (Xt, yt) = time_split(30_000)
    assert np.allclose(resumed.predict_proba(Xt), uninterrupted.predict_proba(Xt), atol=1e-6)
    assert roc_auc_score(yt, resumed.predict_proba(Xt)[:, 1]) > 0.72


def _checkpoint_epoch(folder: Path) -> int:
    if not (folder / CHECKPOINT_NAME).is_file():
        return 0
    return load_checkpoint(folder)["epoch"]


def test_a_finished_run_is_reused_and_a_checkpoint_of_other_data_or_format_is_not(tmp_path, caplog):
    save_checkpoint(tmp_path, {"format": 1, "fingerprint": "from-an-older-release", "epoch": 1, "finished": True})
    numpy_state = np.random.get_state()
    first = fit({"max_epochs": 1}, checkpoint_dir=tmp_path)
    assert first.resumed_from_epoch_ is None and "its format is 1" in caplog.text
    # Training draws nothing from numpy's global generator, so the checkpoint does not carry it.
    assert _same_numpy_state(np.random.get_state(), numpy_state)
    assert set(load_checkpoint(tmp_path)["rng"]) == {"torch", "cuda", "shuffle"}
    again = fit({"max_epochs": 1}, checkpoint_dir=tmp_path)
    assert again.resumed_from_epoch_ == 1 and again.check_ == first.check_  # not trained or checked again
    streamed = fit({"max_epochs": 1, "resident": False}, checkpoint_dir=tmp_path)
    assert streamed.resumed_from_epoch_ == 1  # where the same batches come from is not in the fingerprint
    other = fit({"max_epochs": 1}, rows=12_001, checkpoint_dir=tmp_path)
    assert other.resumed_from_epoch_ is None


def _same_numpy_state(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b, strict=True))


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


def test_pickles_with_the_network_on_the_cpu():
    import cloudpickle

    model = fit({"max_epochs": 1, "one_batch_check": False})
    _, _, (Xt, _) = time_split(12_000)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        restored = pickle.loads(dumps(model))
        assert next(restored.model_.parameters()).device.type == "cpu"
        assert np.allclose(restored.predict_proba(Xt), model.predict_proba(Xt), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("resident", [True, False])
def test_trains_on_cuda_resident_or_streamed(resident):
    model = fit({"device": "cuda", "resident": resident, "max_epochs": 2})
    _, _, (Xt, yt) = time_split(12_000)
    assert model.device_.startswith("cuda") and model.resident_ is resident and model.peak_memory_bytes_ > 0
    assert roc_auc_score(yt, model.predict_proba(Xt)[:, 1]) > 0.7
    restored = pickle.loads(pickle.dumps(model))
    assert next(restored.model_.parameters()).device.type == "cpu"
    assert np.allclose(restored.predict_proba(Xt), model.predict_proba(Xt), atol=1e-5)

