"""Warm start: fine-tuning a new network from the champion's, and naming the champion it came from.

Setting the ``warm_start_from`` attribute before ``fit`` (the trainer does under
``training.mode: warm_start``; the constructor takes it too) fine-tunes from a fitted
``TorchMLPCandidate`` (or a calibrated wrapper of one, unwrapped through its ``candidate``). The
champion's normalisation statistics and vocabularies are reused so every input means what it
meant to the champion's weights (category ``k`` is the same value in both;
:meth:`~ml_tasks.models.network.encoding.FeatureEncoder.extended`); categories new in this
training set are appended after the champion's, and their embedding rows start fresh.
Parameters with the same name and shape are copied; embedding tables copy the champion's rows
(:func:`copy_matching`). Layers whose shape changed (another ``hidden``) start fresh. Feature
lists must match (``can_warm_start_from`` says why not). The one-batch check still runs, on a
fresh network: it is about this run's data and learning rate. ``initial_valid_loss_`` shows
where training started; the champion is not kept in the fitted challenger (``fit`` clears the
attribute).

A checkpoint records which champion its run started from (:func:`warm_start_identity`), so a
retry resumes only a run that warm-started from the same weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Protocol

import torch
from torch import nn

from ml_tasks.models.network.encoding import FeatureEncoder


class FittedNetwork(Protocol):
    """What a warm start takes from a fitted champion (a fitted ``TorchMLPCandidate`` has it)."""

    @property
    def encoder_(self) -> FeatureEncoder: ...

    @property
    def arch_(self) -> dict[str, Any]: ...

    @property
    def model_(self) -> nn.Module: ...


def warm_start_identity(champion: FittedNetwork | None) -> str:
    """A hash of what a warm start takes from the champion (weights and encoder); "none" without one.

    Cheap next to training: one pass over the champion's weights (1.7 MB for the anchor model).
    """
    if champion is None:
        return "none"
    digest = hashlib.sha256(json.dumps([asdict(champion.encoder_), champion.arch_], sort_keys=True,
                                       default=str).encode())
    for name, tensor in champion.model_.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def copy_matching(model: nn.Module, source: nn.Module) -> list[str]:
    """Copy parameters with the same name and shape from ``source``; embeddings copy their shared rows.

    Returns the names of the parameters copied (fully or, for embeddings, the champion's rows).
    """
    own, copied = model.state_dict(), []
    with torch.no_grad():
        for name, value in source.state_dict().items():
            target = own.get(name)
            if target is None:
                continue
            if target.shape == value.shape:
                target.copy_(value)
            elif name.startswith("embeddings.") and target.shape[1:] == value.shape[1:] and len(target) > len(value):
                target[:len(value)].copy_(value)  # the vocabulary was extended at the end
            else:
                continue
            copied.append(name)
    return copied
