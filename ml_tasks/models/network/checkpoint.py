"""Per-epoch checkpoints: what one holds, how it is written, and when a fit may resume from it.

After every epoch ``<checkpoint_dir>/checkpoint.pt`` is replaced atomically (written to a
temporary file in the same folder, fsynced, then ``os.replace``). It is a ``torch.save`` dict
loadable with ``weights_only=True``::

    format, fingerprint, epoch (completed), finished,
    model, optimizer, scheduler (None: the learning rate is constant),
    best_state, best_valid_loss, best_epoch, bad_epochs,      # early stopping
    history, initial_valid_loss, check, encoder, arch, warm_started,
    rng: {torch, cuda, shuffle}                               # global torch/CUDA + shuffling

Training draws random numbers only from torch: the global CPU/CUDA generators (initial weights,
dropout) and the shuffling generator; the one-batch check uses a local ``numpy`` generator
seeded with ``seed``. So those three states are all a resume needs (format 1 also saved numpy's
global state; format 2 does not).

When ``fit`` starts and finds a checkpoint with the same fingerprint it resumes after its epoch
instead of starting over (``resumed_from_epoch_``), with the encoder, weights, optimiser,
early-stopping counters and random states it saved, so a resumed run continues the run that was
killed; a checkpoint with another fingerprint or of another ``CHECKPOINT_FORMAT`` (an older
release) is ignored with a warning and overwritten. The fingerprint covers what changes the
trained model: the parameters, features, seed, a hash of the training and validation data
(values and weights), the format, and the warm-start source (a hash of the champion's weights
and encoder, or "none": :func:`~ml_tasks.models.network.warmstart.warm_start_identity`), so a
retry that warm-starts from another champion starts over. It leaves out ``device`` and
``resident``: they choose where the same steps run, not which steps (both data paths yield the
same batches), and the checkpoint holds CPU tensors, so a run resumed on another device
continues the same training (on CUDA only the last bits differ, as between any two CUDA runs).
The trainer (``ml_tasks.training.train``) sets ``checkpoint_dir`` to a folder under the run's
artifact prefix (on S3, a local folder whose checkpoints ``on_checkpoint`` uploads there as they
are saved).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ml_tasks.models.network.encoding import LabelledRows
from ml_tasks.models.network.params import FAMILY, TorchMLPParams

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
#: Bumped when the checkpoint's content changes; a checkpoint of another format is ignored.
#: 2: no numpy global random state; the fingerprint covers the warm-start source and leaves out
#: device/resident.
CHECKPOINT_FORMAT = 2


# -- the file -------------------------------------------------------------------------------------


def save_checkpoint(folder: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``folder/checkpoint.pt`` atomically: temporary file, fsync, rename."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / CHECKPOINT_NAME
    temporary = folder / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)  # readers see the old checkpoint or the new one, never half of one
    return final


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` (tensors on the CPU), or None when there is none."""
    path = Path(folder) / CHECKPOINT_NAME
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def remove_partial_checkpoints(folder: str | Path) -> None:
    """Delete temporary files a killed writer left behind (only the trainer that owns the folder may)."""
    for leftover in Path(folder).glob(f".{CHECKPOINT_NAME}.*.tmp"):
        leftover.unlink(missing_ok=True)


# -- what it holds --------------------------------------------------------------------------------


def cpu_state(module_or_optimizer: torch.nn.Module | torch.optim.Optimizer, copy: bool = True) -> dict[str, Any]:
    """The state dict with tensors on the CPU: copies, or (``copy=False``, for a state written out
    before training continues) the tensors themselves where they already are on the CPU."""
    return _to_cpu(module_or_optimizer.state_dict(), copy)


def _to_cpu(value: Any, copy: bool = True) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=copy)
    if isinstance(value, dict):
        return {k: _to_cpu(v, copy) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v, copy) for v in value)
    return value


def rng_state(shuffle: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random state training draws from (numpy's global one is not among them)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "shuffle": shuffle.get_state(),
    }


def restore_rng(state: dict[str, Any], shuffle: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    shuffle.set_state(state["shuffle"])


# -- when it is resumed ---------------------------------------------------------------------------


def run_fingerprint(params: TorchMLPParams, numeric: list[str], categorical: list[str], seed: int, warm_start: str,
                    train: LabelledRows, valid: LabelledRows | None) -> str:
    """What a checkpoint must match to be resumed: the parameters (all but ``device`` and
    ``resident``, which only choose where training runs), features, seed, format, the warm-start
    source's identity, and the training and validation rows: feature values, labels and weights
    (module docstring)."""
    kept = {k: v for k, v in asdict(params).items() if k not in ("device", "resident")}
    digest = hashlib.sha256(json.dumps([FAMILY, kept, numeric, categorical, seed, CHECKPOINT_FORMAT, warm_start],
                                       sort_keys=True, default=str).encode())
    rows = [train] if valid is None else [train, valid]
    for part in rows:
        digest.update(pd.util.hash_pandas_object(part.X[numeric + categorical], index=False).to_numpy().tobytes())
    for part in rows:
        for array in (part.y, part.w):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def matching_checkpoint(folder: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` when a fit with ``fingerprint`` may resume from it; None (with a
    warning saying why, when there is one) otherwise. Clears a killed writer's leftovers first."""
    remove_partial_checkpoints(folder)
    try:
        saved = load_checkpoint(folder)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:  # not loadable by this torch
        log.warning("torch_mlp: ignoring the checkpoint in %s: it cannot be loaded (%s); training starts over",
                    folder, error)
        return None
    if saved is None:
        return None
    if saved.get("format") != CHECKPOINT_FORMAT:
        log.warning("torch_mlp: ignoring the checkpoint in %s: its format is %s, this release writes %s; "
                    "training starts over", folder, saved.get("format"), CHECKPOINT_FORMAT)
        return None
    if saved.get("fingerprint") != fingerprint:
        log.warning("torch_mlp: ignoring the checkpoint in %s: it belongs to other data, parameters or "
                    "warm-start champion (fingerprint %s, this run %s)", folder, saved.get("fingerprint"),
                    fingerprint)
        return None
    return saved
