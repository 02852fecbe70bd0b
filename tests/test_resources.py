"""The trainer's CPU thread budget: the setting, else the CPUs the process may really use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ml_tasks.resources import POOL_SETTINGS, available_cpus, limit_thread_pools, trainer_threads
from ml_tasks.settings import REPO_ROOT


def test_a_cgroup_quota_caps_the_cpus_and_an_unlimited_one_does_not(tmp_path):
    cores = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("50000 100000\n")  # half a CPU: one thread, never zero
    assert available_cpus(quota) == 1
    quota.write_text("max 100000\n")
    assert available_cpus(quota) == cores
    assert available_cpus(tmp_path / "missing") == cores  # cgroup v1 or no cgroup file


def test_the_setting_wins_and_a_bad_one_is_named(tmp_path):
    assert trainer_threads({"REFIT_TRAINER_THREADS": "3"}, tmp_path / "missing") == 3
    assert trainer_threads({}, tmp_path / "missing") == len(os.sched_getaffinity(0))
    for bad in ("0", "-2", "two"):
        with pytest.raises(ValueError, match=f"REFIT_TRAINER_THREADS='{bad}': expected a positive number"):
            trainer_threads({"REFIT_TRAINER_THREADS": bad})


def test_pools_get_the_budget_unless_already_sized():
    env = {"REFIT_TRAINER_THREADS": "1", "OMP_NUM_THREADS": "4"}
    assert limit_thread_pools(env) == 1
    assert env["OMP_NUM_THREADS"] == "4" and all(env[name] == "1" for name in POOL_SETTINGS[1:])


def test_torch_in_a_trainer_process_starts_with_the_budget():
    code = ("from ml_tasks.resources import limit_thread_pools; limit_thread_pools(); "
            "import torch; print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in POOL_SETTINGS} | {"REFIT_TRAINER_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "1"


def test_lightgbm_trains_with_the_budget_unless_the_spec_sets_its_threads(monkeypatch):
    import numpy as np
    import pandas as pd

    from ml_tasks.models import LightGBMCandidate
    from ml_tasks.spec import FeaturesSpec

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = (X.a + rng.normal(size=400) > 0).astype(int).to_numpy()
    features = FeaturesSpec(numeric=["a", "b"])
    monkeypatch.setenv("REFIT_TRAINER_THREADS", "1")
    assert LightGBMCandidate(features, {"n_estimators": 5}).fit(X, y).booster_.params["num_threads"] == 1
    pinned = LightGBMCandidate(features, {"n_estimators": 5, "num_threads": 2}).fit(X, y)
    assert pinned.booster_.params["num_threads"] == 2
