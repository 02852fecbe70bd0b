"""The family's params (``ml_tasks.models.network.params``): spec values convert, mistakes fail by name."""

from __future__ import annotations

import pytest

from ml_tasks.core.spec import CandidateSpec
from ml_tasks.models import build_candidate
from ml_tasks.models.network import TorchMLPCandidate
from tests.models.network.demo_data import FEATURES


def test_build_candidate_passes_spec_params_and_rejects_bad_ones():
    spec = CandidateSpec(name="net", family="torch_mlp", params={"hidden": "32, 16", "dropout": 0.0, "bf16": False})
    model = build_candidate(spec, FEATURES, seed=3)
    assert isinstance(model, TorchMLPCandidate) and model.config.hidden == (32, 16) and model.seed == 3
    with pytest.raises(ValueError, match=r"param 'hiden': unknown parameter of torch_mlp \(did you mean 'hidden'\?\)"):
        TorchMLPCandidate(FEATURES, {"hiden": "32"})
    with pytest.raises(ValueError, match="param 'hidden'"):
        TorchMLPCandidate(FEATURES, {"hidden": "32,x"})
    with pytest.raises(ValueError, match="param 'batch_size'"):
        TorchMLPCandidate(FEATURES, {"batch_size": 0})
