"""Per-epoch checkpoints (``ml_tasks.models.network.checkpoint``): a killed run resumes where it
stopped and ends as if never killed; only a checkpoint of the same run and format is resumed."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.models.network import CHECKPOINT_NAME, TorchMLPCandidate, load_checkpoint, save_checkpoint
from tests.models.network.demo_data import FAST, FEATURES, fit, time_split

RESUME_PARAMS = {**FAST, "max_epochs": 8, "patience": 8, "one_batch_check": False}


def train_for_resume_test(checkpoint_dir: str, on_checkpoint: Callable[[Path], None] | None = None,
                          ) -> TorchMLPCandidate:
    """The run the resume test kills and repeats (also run in a child process)."""
    (X, y), (Xv, yv), _ = time_split(30_000)
    model = TorchMLPCandidate(FEATURES, RESUME_PARAMS, seed=4, checkpoint_dir=checkpoint_dir)
    model.on_checkpoint = on_checkpoint
    return model.fit(X, y, None, Xv, yv, None)


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    code = ("from tests.models.network.test_checkpoint import train_for_resume_test; "
            f"train_for_resume_test({str(folder)!r})")
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
    resumed = train_for_resume_test(str(folder),
                                    lambda path: handed_on.append((path, load_checkpoint(folder)["epoch"])))
    later_epochs = range(killed_at + 1, RESUME_PARAMS["max_epochs"] + 1)
    assert handed_on == [(folder / CHECKPOINT_NAME, epoch) for epoch in later_epochs]
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
