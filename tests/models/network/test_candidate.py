"""The network as a candidate (``ml_tasks.models.network.candidate``): built from a spec, it
beats the prior, trains reproducibly, weights rows, and pickles for any machine."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.models import PriorCandidate
from ml_tasks.models.network import TorchMLPCandidate
from tests.models.network.demo_data import FAST, FEATURES, fit, time_split


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


def test_same_seed_gives_the_same_model_and_another_seed_does_not():
    _, _, (Xt, _) = time_split(12_000)
    params = {"max_epochs": 2, "one_batch_check": False}
    first, second, other = fit(params, seed=1), fit(params, seed=1), fit(params, seed=2)
    assert np.array_equal(first.predict_proba(Xt), second.predict_proba(Xt))
    assert not np.allclose(first.predict_proba(Xt), other.predict_proba(Xt))


def test_sample_weights_enter_the_loss_whatever_their_scale():
    (X, y), (Xv, yv), (Xt, _) = time_split(12_000)
    params = {**FAST, "max_epochs": 2, "one_batch_check": False}
    w = np.where(X["channel"].to_numpy() == "branch", 5.0, 1.0)

    def fitted(weights):
        return TorchMLPCandidate(FEATURES, params).fit(X, y, weights, Xv, yv, None).predict_proba(Xt)

    assert np.allclose(fitted(w), fitted(40.0 * w), atol=1e-5)  # normalised to mean 1
    assert not np.allclose(fitted(w), fitted(None), atol=1e-3)


def test_pickles_with_the_network_on_the_cpu():
    import cloudpickle

    model = fit({"max_epochs": 1, "one_batch_check": False})
    _, _, (Xt, _) = time_split(12_000)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        restored = pickle.loads(dumps(model))
        assert next(restored.model_.parameters()).device.type == "cpu"
        assert np.allclose(restored.predict_proba(Xt), model.predict_proba(Xt), atol=1e-6)


def test_every_class_a_pickled_model_names_is_exported_by_the_package():
    """Models logged before the split name their classes under ``ml_tasks.models.network`` (and the
    flat layout's ``ml_tasks.torch_mlp`` maps there): each class a fitted model holds stays there."""
    import ml_tasks.models.network as package

    model = fit({"max_epochs": 1, "one_batch_check": False})
    held = {type(model), type(model.config), type(model.encoder_), type(model.model_)}
    assert all(getattr(package, cls.__name__) is cls for cls in held)
    assert {cls.__name__ for cls in held} == {"TorchMLPCandidate", "TorchMLPParams", "FeatureEncoder", "TabularMLP"}


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
