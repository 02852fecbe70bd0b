"""The trainer's CPU thread budget: the setting, else the CPUs the process may really use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ml_tasks.core.resources import (
    POOL_SETTINGS,
    available_cpus,
    cgroup_cpu_limit,
    limit_thread_pools,
    trainer_threads,
)
from ml_tasks.core.settings import REPO_ROOT


def cgroups(tmp_path, path: str, quotas: dict[str, str]) -> dict:
    """A cgroup v2 tree under ``tmp_path`` (``quotas``: folder -> cpu.max) and this process in ``path``."""
    root = tmp_path / "cgroup"
    for folder, quota in quotas.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(quota + "\n")
    (tmp_path / "self").write_text(f"0::{path}\n")
    return {"cgroup_root": root, "self_cgroup": tmp_path / "self"}


def test_a_cgroup_quota_caps_the_cpus_and_an_unlimited_one_does_not(tmp_path):
    cores = len(os.sched_getaffinity(0))
    assert available_cpus(**cgroups(tmp_path / "a", "/", {"": "50000 100000"})) == 1  # half a CPU: one thread
    assert available_cpus(**cgroups(tmp_path / "b", "/", {"": "max 100000"})) == cores
    assert available_cpus(tmp_path / "missing", tmp_path / "missing") == cores  # no cgroup v2 at all


def test_the_tightest_quota_on_the_way_up_from_the_processs_own_cgroup_counts(tmp_path):
    tree = cgroups(tmp_path, "/system.slice/trainer.service",
                   {"": "max 100000", "system.slice": "100000 100000", "system.slice/trainer.service": "max 100000"})
    assert cgroup_cpu_limit(**tree) == 1
    odd = cgroups(tmp_path / "odd", "/x", {"": "max 100000", "x": "lots 100000"})
    assert cgroup_cpu_limit(**odd) is None  # an unknown value is no limit, not a crash


def test_the_setting_wins_and_a_bad_one_is_named(tmp_path):
    nothing = {"cgroup_root": tmp_path / "missing", "self_cgroup": tmp_path / "missing"}
    assert trainer_threads({"REFIT_TRAINER_THREADS": "3"}, **nothing) == 3
    assert trainer_threads({}, **nothing) == len(os.sched_getaffinity(0))
    for bad in ("0", "-2", "two"):
        with pytest.raises(ValueError, match=f"REFIT_TRAINER_THREADS='{bad}': expected a positive number"):
            trainer_threads({"REFIT_TRAINER_THREADS": bad})


def test_an_explicit_budget_overrides_inherited_pool_sizes_and_none_keeps_them():
    inherited = {"REFIT_TRAINER_THREADS": "1", "OMP_NUM_THREADS": "4"}
    assert limit_thread_pools(inherited) == 1
    assert all(inherited[name] == "1" for name in POOL_SETTINGS)
    sized_by_hand = {"OMP_NUM_THREADS": "4"}
    limit_thread_pools(sized_by_hand)
    assert sized_by_hand["OMP_NUM_THREADS"] == "4" and sized_by_hand["OPENBLAS_NUM_THREADS"].isdigit()


def test_torch_in_a_trainer_process_starts_with_the_budget():
    code = ("from ml_tasks.core.resources import limit_thread_pools; limit_thread_pools(); "
            "import torch; print(torch.get_num_threads())")
    # The parent's own pool sizes (a worker's, or a CLI process's) must not win over the budget.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "REFIT_TRAINER_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "1"
    bad = subprocess.run([sys.executable, "-m", "ml_tasks", "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**os.environ, "REFIT_TRAINER_THREADS": "many"}, timeout=120)
    assert bad.returncode != 0 and "REFIT_TRAINER_THREADS='many'" in bad.stderr and "Traceback" not in bad.stderr


def test_lightgbm_trains_with_the_budget_unless_the_spec_sets_its_threads(monkeypatch):
    import numpy as np
    import pandas as pd

    from ml_tasks.core.spec import FeaturesSpec
    from ml_tasks.models import LightGBMCandidate

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = (X.a + rng.normal(size=400) > 0).astype(int).to_numpy()
    features = FeaturesSpec(numeric=["a", "b"])
    monkeypatch.setenv("REFIT_TRAINER_THREADS", "1")
    assert LightGBMCandidate(features, {"n_estimators": 5}).fit(X, y).booster_.params["num_threads"] == 1
    pinned = LightGBMCandidate(features, {"n_estimators": 5, "num_threads": 2}).fit(X, y)
    assert pinned.booster_.params["num_threads"] == 2
