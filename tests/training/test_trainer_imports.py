"""A trainer process imports what its family and step need, no more (issue 19, cold start).

Every Airflow train task and backtest job is a fresh ``python -m ml_tasks train`` process, so an
import it does not need is paid once per task. Each test runs the real command in a fresh
interpreter and reads ``sys.modules`` at two moments: when it first reads a data frame (its
inputs) and when it exits. ``bench/bench_cold_start.py`` times the same processes. That the
network family does import torch when a spec asks for it is checked beside the network
(``tests/models/network/test_candidate.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs ``python -m ml_tasks <argv>`` and writes the modules imported by the first read of a frame
# ("ready") and at exit ("end") to $PROBE_OUT.
PROBE = """
import atexit, json, os, runpy, sys
from ml_tasks.io.store import ArtifactStore

seen = {}
read_frame = ArtifactStore.read_frame

def first_read(self, *args, **kwargs):
    seen.setdefault("ready", sorted(sys.modules))
    return read_frame(self, *args, **kwargs)

def write():
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump({**seen, "end": sorted(sys.modules)}, out)

ArtifactStore.read_frame = first_read
atexit.register(write)
sys.argv = ["ml_tasks", *sys.argv[1:]]
runpy.run_module("ml_tasks", run_name="__main__", alter_sys=True)
"""

#: Nothing of these before a LightGBM/logistic trainer reads its inputs: the metrics are numpy's,
#: and MLflow is imported by the code that logs, after the work.
NOT_BEFORE_INPUTS = ("torch", "sklearn", "mlflow", "lightgbm", "airflow")
#: Nothing of these in the whole process.
NEVER = ("torch", "airflow")


def trainer_modules(tmp_path: Path, *args: str) -> dict[str, set[str]]:
    """``ready`` and ``end``: the modules of ``python -m ml_tasks train <args>`` at those moments."""
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", PROBE, "train", *args], env={**os.environ, "PROBE_OUT": str(out)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return {moment: set(modules) for moment, modules in json.loads(out.read_text()).items()}


def imported(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` (or of their subpackages, e.g. ``sklearn.metrics``) were imported."""
    return [name for name in packages if name in modules]


@pytest.mark.parametrize("candidate", ["lightgbm", "logistic_baseline"])
def test_a_lightgbm_or_logistic_trainer_never_imports_torch_and_reads_its_inputs_before_sklearn_or_mlflow(
        demo_run, tmp_path, candidate):
    _, plan, split = demo_run
    plan_uri = f"{plan['run_prefix']}/plan.json"
    train = trainer_modules(tmp_path, "--plan", plan_uri, "--split", split["uri"], "--candidate", candidate)
    assert imported(train["ready"], NOT_BEFORE_INPUTS) == []
    assert imported(train["end"], NEVER) == []
    assert "mlflow" in train["end"]  # it logs its run: imported after the work, by the code that logs
    # A backtest job of the same candidate logs nothing: no MLflow at all.
    fold = trainer_modules(tmp_path, "--plan", plan_uri, "--candidate", candidate, "--fold", "0")
    assert imported(fold["ready"], NOT_BEFORE_INPUTS) == []
    assert imported(fold["end"], (*NEVER, "mlflow")) == []

