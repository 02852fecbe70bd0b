"""The PyTorch candidate: a multi-layer perceptron over scaled numerics and categorical embeddings.

``TorchMLPCandidate`` (family ``torch_mlp``) has the interface of every other candidate in
:mod:`ml_tasks.models`; this module is imported only when a spec asks for the family, so the
rest of Refit never pays for importing torch.

>>> model = TorchMLPCandidate(features, {"hidden": "256,128"}, seed=7, checkpoint_dir="/tmp/ck")  # doctest: +SKIP
>>> model.fit(X_train, y_train, w_train, X_valid, y_valid, w_valid).predict_proba(X_test)[:, 1]  # doctest: +SKIP
>>> model.history_[-1]["valid_roc_auc"], model.device_, model.peak_memory_bytes_                 # doctest: +SKIP

Parameters (spec ``params``; values are scalars, so layer widths are a comma-separated string)
-----------------------------------------------------------------------------------------------
hidden : "256,128"       widths of the hidden layers ("" is a linear model on the embeddings).
embedding_dim : 8        width of every categorical embedding.
dropout : 0.1            dropout after every hidden layer.
lr : 1e-3                AdamW learning rate (constant: there is no scheduler).
weight_decay : 1e-4      AdamW decoupled weight decay.
batch_size : 1024        rows per optimiser step (capped at the number of training rows).
max_epochs : 50          passes over the training rows.
patience : 5             epochs without a better validation loss before training stops (the
                         best epoch's weights are kept; without validation rows the training
                         loss steers).
min_delta : 0.0          how much lower the validation loss must be to count as better.
device : "auto"          "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
resident : "auto"        keep the training rows on the device ("auto": when they fit), or stream.
compile : false          ``torch.compile`` the network for training (slow to start; the
                         benchmark shows whether it pays on the target GPU; needs a C++
                         compiler on the CPU).
bf16 : false             bfloat16 autocast in training. Off until ``bench/bench_torch.py`` shows
                         it pays on the target GPU; probabilities are always computed in float32.
one_batch_check : true   run the one-batch check (below) before training.

An unknown parameter name or a bad value raises ``ValueError`` naming the parameter.

Inputs
------
Numerics are float64 and may hold NaN (or inf, treated as missing): each column is imputed with
its training median, then standardised with the training mean and standard deviation.
Categoricals are text or None: each column's vocabulary is frozen from the training rows and a
value maps to its 1-based position; a missing or unseen value maps to index 0 (the codes of
:func:`ml_tasks.models.frozen_categorical` over :func:`~ml_tasks.models.category_vocabulary`,
which the LightGBM candidate uses too, plus one).
Row 0 of every embedding starts at zero, so a value never seen in training (when training had
no missing values to teach row 0) contributes nothing rather than noise. Every transform is fitted on the
training rows only; the validation rows only steer early stopping.

Sample weights are normalised to mean 1 over the training rows and multiply the per-row
``BCEWithLogits`` loss, so the learning rate does not depend on the weights' scale.

Data path
---------
When the encoded training rows fit in device memory (CPU: always, they already sit in host
memory; CUDA: up to half the free memory) they stay resident as tensors and each epoch slices
batches out of one ``torch.randperm`` permutation on the device: no DataLoader, no per-row Python.
Otherwise batches are gathered on the host into pinned staging buffers and copied with
``non_blocking`` on a side stream, one batch ahead, so the copy overlaps the previous step. The
permutation comes from a CPU generator in both cases, so both paths see the same batches. The
ragged last batch of an epoch is dropped: every step has the same shape, which keeps a compiled
graph from recompiling; the dropped rows differ every epoch.

One-batch check
---------------
Before the first epoch a copy of the fresh network trains on one batch of ``CHECK_FIT_ROWS``
training rows with the configured optimiser, ``CHECK_EVAL_EVERY`` full-batch steps at a time,
until its loss on the batch meets the fit criterion or ``CHECK_MAX_STEPS`` steps have run. Then
two things are checked (``TrainingCheckError`` names the failed check, the loss before and
after, and the likely causes):

1. *fit*: the loss on that batch must fall below ``CHECK_FIT_RATIO`` times the loss of predicting
   the batch's positive rate (the label entropy). The output bias alone reaches the entropy, so
   falling well below it takes working gradients through the whole network. A learning rate
   far too low (AdamW at 1e-5) or too high (1.0), a dead network or non-finite inputs fail here.
   Only a network with ``CHECK_CAPACITY_FACTOR`` parameters per batch row can memorise the batch;
   a smaller one (e.g. ``hidden: ""``) only fails on a non-finite loss.
2. *held-out signal*: the probe must rank ``CHECK_HELDOUT_ROWS`` other training rows better than
   chance: ROC AUC at least ``CHECK_MIN_Z`` standard errors above 0.5 (the Mann-Whitney null
   standard error ``sqrt((n1 + n0 + 1) / (12 n1 n0))``). A network can memorise any single
   batch, shuffled labels included, so fitting alone proves little; but with real labels what it
   learns first carries over to unseen rows (Arpit et al., 2017, "A closer look at memorization
   in deep networks"), while with labels unrelated to the features the held-out AUC is a pure
   null draw (the probe never saw those rows) and ``z >= 4`` passes by chance about 3 times in
   100,000. Shuffled or misaligned labels fail here. AUC, not log loss, because a probe that
   memorised its batch is overconfident: its held-out loss can be worse than the prior's even
   when its ranking is good. On the demo data the probe reaches z = 9-13 (AUC 0.67-0.75) with
   the default parameters, lr from 1e-4 to 5e-2 and hidden from "32" to "512,512,256"; with
   shuffled labels |z| < 2.

A check is skipped (``check_["skipped"]`` says which and why) when its rows hold fewer than
``CHECK_MIN_CLASS`` rows of either class: with very rare positives one batch says nothing.
A resumed run does not repeat the check.

Checkpoints (``checkpoint_dir``)
--------------------------------
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
and encoder, or "none"), so a retry that warm-starts from another champion starts over. It
leaves out ``device`` and ``resident``: they choose where the same steps run, not which steps
(both data paths yield the same batches), and the checkpoint holds CPU tensors, so a run
resumed on another device continues the same training (on CUDA only the last bits differ, as
between any two CUDA runs). The trainer (``ml_tasks.training.train``) sets ``checkpoint_dir`` to a folder
under the run's artifact prefix (on S3, a local folder whose checkpoints ``on_checkpoint``
uploads there as they are saved).

Warm start
----------
Setting the ``warm_start_from`` attribute before ``fit`` (the trainer does under
``training.mode: warm_start``; the constructor takes it too) fine-tunes from a fitted
``TorchMLPCandidate`` (or a calibrated wrapper of one, unwrapped through its ``candidate``). The
champion's normalisation statistics and vocabularies are reused so every input means what it
meant to the champion's weights (category ``k`` is the same value in both); categories new in
this training set are appended after the champion's, and their embedding rows start fresh.
Parameters with the same name and shape are copied; embedding tables copy the champion's rows.
Layers whose shape changed (another ``hidden``) start fresh. Feature lists must match
(``can_warm_start_from`` says why not). The one-batch check still runs, on a fresh network: it
is about this run's data and learning rate. ``initial_valid_loss_`` shows where training
started; the champion is not kept in the fitted challenger (``fit`` clears the attribute).

Fitted attributes
-----------------
model_ (the network, left on the training device; pickling moves it to the CPU), encoder_,
device_ ("cpu", "cuda:0"), resident_ (bool), history_ (per epoch: epoch, train_loss, valid_loss,
valid_roc_auc, rows_per_s, train_seconds, epoch_seconds), initial_valid_loss_, best_epoch_,
epochs_run_, stopped_early_, resumed_from_epoch_ (None unless resumed), warm_started_ (copied
parameter names or None), check_ (the one-batch check's figures, None when switched off),
arch_ (what rebuilds the network), peak_memory_bytes_ (``torch.cuda.max_memory_allocated`` on
CUDA since ``fit`` started; the process's peak RSS on the CPU).

Determinism: with the same seed and inputs, CPU training gives the same model bit for bit;
CUDA kernels (embedding backward) may differ in the last bits between runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import pickle
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ml_tasks.core.spec import FeaturesSpec
from ml_tasks.evaluation.metrics import weighted_roc_auc
from ml_tasks.models.base import Candidate, category_vocabulary, frozen_categorical

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
#: Bumped when the checkpoint's content changes; a checkpoint of another format is ignored.
#: 2: no numpy global random state; the fingerprint covers the warm-start source and leaves out
#: device/resident.
CHECKPOINT_FORMAT = 2

CHECK_FIT_ROWS = 512
CHECK_HELDOUT_ROWS = 4096
CHECK_EVAL_EVERY = 25
CHECK_MAX_STEPS = 500
CHECK_FIT_RATIO = 0.5
CHECK_MIN_Z = 4.0
CHECK_MIN_CLASS = 10
#: The fit check needs at least this many parameters per batch row to memorise the batch.
CHECK_CAPACITY_FACTOR = 2

#: Fraction of free GPU memory the resident training rows may take; the rest is for activations.
RESIDENT_MEMORY_FRACTION = 0.5
#: Rows per forward pass when predicting or validating (no gradients: large batches are cheap).
PREDICT_BATCH_ROWS = 65_536

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # numeric, categorical, label, weight


class TrainingCheckError(RuntimeError):
    """A pre-training check failed; the message names the check, the figures and likely causes."""


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchMLPParams:
    """The family's hyper-parameters with their defaults (see the module docstring)."""

    hidden: tuple[int, ...] = (256, 128)
    embedding_dim: int = 8
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 1024
    max_epochs: int = 50
    patience: int = 5
    min_delta: float = 0.0
    device: str = "auto"
    resident: bool | None = None  # None: "auto"
    compile: bool = False
    bf16: bool = False
    one_batch_check: bool = True

    @classmethod
    def from_spec(cls, raw: dict) -> TorchMLPParams:
        """Validate and convert spec params; a bad name or value raises ``ValueError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"torch_mlp: unknown param(s) {unknown}; expected some of {sorted(known)}")
        values = {}
        for name, value in raw.items():
            try:
                values[name] = _CONVERTERS[name](value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"torch_mlp: param {name!r}: {exc}") from None
        return cls(**values)


def _hidden(value) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise ValueError(f"expected layer widths like '256,128', got {value!r}")
    if isinstance(value, int):
        widths = (value,)
    else:
        widths = tuple(int(part) for part in str(value).replace(" ", "").split(",") if part)
    if any(w < 1 for w in widths):
        raise ValueError(f"layer widths must be >= 1, got {value!r}")
    return widths


def _bounded(kind: type, low: float, high: float = math.inf) -> Callable:
    def convert(value):
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected {kind.__name__}, got {value!r}")
        number = kind(value)
        if not low <= number <= high:
            raise ValueError(f"expected a value in [{low}, {high}], got {value!r}")
        return number
    return convert


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in {"true", "yes", "1"}:
        return True
    if str(value).lower() in {"false", "no", "0"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _auto_flag(value) -> bool | None:
    return None if str(value).lower() == "auto" else _flag(value)


_CONVERTERS: dict[str, Callable] = {
    "hidden": _hidden, "embedding_dim": _bounded(int, 1), "dropout": _bounded(float, 0.0, 0.95),
    "lr": _bounded(float, 1e-12, 10.0), "weight_decay": _bounded(float, 0.0), "batch_size": _bounded(int, 1),
    "max_epochs": _bounded(int, 1), "patience": _bounded(int, 1), "min_delta": _bounded(float, 0.0),
    "device": str, "resident": _auto_flag, "compile": _flag, "bf16": _flag, "one_batch_check": _flag,
}


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when present, else the CPU; asking for an absent CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"torch_mlp: param 'device' is {name!r} but torch sees no CUDA device")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


# ---------------------------------------------------------------------------------------------
# Inputs: frame -> arrays, fitted on the training rows only
# ---------------------------------------------------------------------------------------------


@dataclass
class FeatureEncoder:
    """Median imputation and standardisation of numerics; frozen vocabularies for categoricals.

    Plain lists only, so it round-trips through a ``weights_only`` checkpoint and JSON.
    """

    numeric: list[str]
    categorical: list[str]
    medians: list[float]
    means: list[float]
    stds: list[float]
    vocab: dict[str, list[str]]

    @classmethod
    def fit(cls, X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> FeatureEncoder:
        raw = _numeric_matrix(X, numeric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: its median becomes 0
            medians = np.nan_to_num(np.nanmedian(raw, axis=0), nan=0.0) if len(numeric) else np.zeros(0)
        imputed = np.where(np.isnan(raw), medians, raw)
        stds = imputed.std(axis=0)
        stds[~(stds > 0)] = 1.0  # a constant column is centred, not blown up
        vocab = {name: category_vocabulary(X[name]) for name in categorical}
        return cls(list(numeric), list(categorical), medians.tolist(), imputed.mean(axis=0).tolist(),
                   stds.tolist(), vocab)

    def extended(self, X: pd.DataFrame) -> FeatureEncoder:
        """The same encoder with categories first seen in ``X`` appended (for warm starts)."""
        vocab = {}
        for name, known in self.vocab.items():
            seen = set(known)
            vocab[name] = known + [v for v in category_vocabulary(X[name]) if v not in seen]
        return FeatureEncoder(self.numeric, self.categorical, self.medians, self.means, self.stds, vocab)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows per categorical: the vocabulary plus index 0 for missing/unseen."""
        return [len(self.vocab[name]) + 1 for name in self.categorical]

    def transform(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(numeric float32 (n, p), categorical int64 (n, c))``, vectorised per column."""
        raw = _numeric_matrix(X, self.numeric)
        imputed = np.where(np.isnan(raw), np.asarray(self.medians), raw)
        numeric = ((imputed - np.asarray(self.means)) / np.asarray(self.stds)).astype(np.float32)
        codes = np.zeros((len(X), len(self.categorical)), dtype=np.int64)
        for j, name in enumerate(self.categorical):
            # The frozen codes are -1 for missing and unseen values: +1 makes both index 0.
            codes[:, j] = frozen_categorical(X[name], self.vocab[name]).codes
            codes[:, j] += 1
        return numeric, codes


def _numeric_matrix(X: pd.DataFrame, columns: list[str]) -> np.ndarray:
    if not columns:
        return np.zeros((len(X), 0))
    raw = X[columns].to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isfinite(raw), raw, np.nan)  # inf is as unusable to a network as a gap


# ---------------------------------------------------------------------------------------------
# Network and tensors
# ---------------------------------------------------------------------------------------------


class TabularMLP(nn.Module):
    """Embeddings concatenated with the numerics, then Linear-ReLU-Dropout blocks and one logit."""

    def __init__(self, n_numeric: int, cardinalities: list[int], embedding_dim: int, hidden: tuple[int, ...],
                 dropout: float, prior_rate: float = 0.5) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim) for c in cardinalities)
        for table in self.embeddings:
            nn.init.zeros_(table.weight[0])  # missing/unseen starts neutral (see module docstring)
        blocks, width = [], n_numeric + embedding_dim * len(cardinalities)
        for size in hidden:
            blocks += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            width = size
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, 1)
        # Starting at the base rate skips the first epochs' work of learning the intercept.
        rate = min(max(prior_rate, 1e-6), 1 - 1e-6)
        nn.init.constant_(self.head.bias, math.log(rate / (1 - rate)))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [table(categorical[:, j]) for j, table in enumerate(self.embeddings)]
        inputs = torch.cat(parts, dim=1) if len(parts) > 1 else numeric
        return self.head(self.body(inputs)).squeeze(-1)


@dataclass
class TensorData:
    """Encoded rows as four aligned tensors on one device."""

    numeric: torch.Tensor
    categorical: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def from_arrays(cls, numeric: np.ndarray, categorical: np.ndarray, label, weight) -> TensorData:
        return cls(torch.from_numpy(np.ascontiguousarray(numeric, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(categorical, dtype=np.int64)),
                   torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)))

    def __len__(self) -> int:
        return len(self.label)

    @property
    def tensors(self) -> Batch:
        return self.numeric, self.categorical, self.label, self.weight

    @property
    def device(self) -> torch.device:
        return self.label.device

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self.tensors)

    def to(self, device: torch.device) -> TensorData:
        return TensorData(*(t.to(device) for t in self.tensors))

    def take(self, index: torch.Tensor) -> Batch:
        return tuple(t.index_select(0, index) for t in self.tensors)


@dataclass
class ValidationRows:
    """The validation rows where the network reads them, with host copies of their labels and
    weights made once per ``fit`` (not once per epoch): the epoch's only copy is its logits."""

    rows: TensorData  # on the training device when resident, else on the host
    label: torch.Tensor  # host, float32
    weight: torch.Tensor  # host, float32
    label_f64: np.ndarray
    weight_f64: np.ndarray
    one_class: bool

    @classmethod
    def of(cls, host: TensorData, device: torch.device | None) -> ValidationRows:
        """``host`` rows (on the CPU), moved to ``device`` when given."""
        label_f64 = host.label.numpy().astype(np.float64)
        return cls(host.to(device) if device is not None else host, host.label, host.weight, label_f64,
                   host.weight.numpy().astype(np.float64), bool(label_f64.min() == label_f64.max()))


def resident_batches(data: TensorData, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """One epoch of shuffled full batches sliced from tensors that stay on their device.

    The permutation is drawn on the CPU ``generator`` (same batches on every device and data
    path) and moved once per epoch; the ragged last batch is dropped so every step has one shape.
    """
    order = torch.randperm(len(data), generator=generator).to(data.device, non_blocking=True)
    for start in range(0, len(data) - batch_size + 1, batch_size):
        yield data.take(order[start:start + batch_size])


def streamed_batches(data: TensorData, batch_size: int, generator: torch.Generator,
                     device: torch.device) -> Iterator[Batch]:
    """One epoch of shuffled full batches gathered on the host and copied to ``device`` ahead of use.

    For rows that do not fit on the GPU. Two pinned staging buffers take turns: while the model
    computes on batch k, batch k+1 is gathered into the other buffer and copied with
    ``non_blocking`` on a side stream. On the CPU there is nothing to overlap and the batches
    are plain gathers (the same batches :func:`resident_batches` yields).
    """
    order = torch.randperm(len(data), generator=generator)
    starts = range(0, len(data) - batch_size + 1, batch_size)
    if device.type != "cuda":
        for start in starts:
            yield data.take(order[start:start + batch_size])
        return
    copy_stream = torch.cuda.Stream(device)
    staging = [tuple(torch.empty((batch_size, *t.shape[1:]), dtype=t.dtype, pin_memory=True) for t in data.tensors)
               for _ in range(2)]
    copied = [None, None]  # the event after the last copy out of each staging buffer

    def stage(k: int) -> Batch:
        slot = k % 2
        if copied[slot] is not None:
            copied[slot].synchronize()  # the buffer's previous batch has left for the device
        index = order[starts[k]:starts[k] + batch_size]
        for source, buffer in zip(data.tensors, staging[slot]):
            torch.index_select(source, 0, index, out=buffer)
        with torch.cuda.stream(copy_stream):
            batch = tuple(buffer.to(device, non_blocking=True) for buffer in staging[slot])
            copied[slot] = torch.cuda.Event()
            copied[slot].record(copy_stream)
        return batch

    upcoming = stage(0) if len(starts) else None
    for k in range(len(starts)):
        batch = upcoming
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(copy_stream)  # before the next copy is queued, so only this one is awaited
        for tensor in batch:
            tensor.record_stream(compute)  # allocated on the copy stream, freed after use on this one
        if k + 1 < len(starts):
            upcoming = stage(k + 1)
        yield batch


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, *,
                    bf16: bool = False, compile: bool = False) -> Callable[[Batch], torch.Tensor]:
    """One optimiser step on a batch; returns the weighted loss, detached and left on the device.

    Leaving the loss on the device avoids a host sync per step; the epoch reads it once.
    """
    forward = torch.compile(model) if compile else model

    def step(batch: Batch) -> torch.Tensor:
        numeric, categorical, label, weight = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(numeric, categorical)
        per_row = F.binary_cross_entropy_with_logits(logits.float(), label, reduction="none")
        loss = (per_row * weight).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def train_epoch(step: Callable[[Batch], torch.Tensor], batches: Iterator[Batch]) -> tuple[float, int]:
    """Run ``step`` over ``batches``; return the mean batch loss (one host sync) and the rows seen."""
    total, steps, rows = None, 0, 0
    for batch in batches:
        loss = step(batch)
        total = loss if total is None else total + loss
        steps += 1
        rows += len(batch[2])
    return (float(total) / steps if steps else math.nan), rows


@torch.inference_mode()
def predict_logits(model: nn.Module, numeric: torch.Tensor, categorical: torch.Tensor,
                   batch_rows: int = PREDICT_BATCH_ROWS) -> torch.Tensor:
    """Float32 logits of all rows in eval mode, in large batches, on the model's device."""
    device = next(model.parameters()).device
    model.eval()
    out = [model(numeric[i:i + batch_rows].to(device, non_blocking=True),
                 categorical[i:i + batch_rows].to(device, non_blocking=True)).float()
           for i in range(0, len(numeric), batch_rows)]
    return torch.cat(out) if out else torch.zeros(0, device=device)


def weighted_log_loss(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> float:
    per_row = F.binary_cross_entropy_with_logits(logits.float(), label.to(logits.device), reduction="none")
    weight = weight.to(logits.device)
    return float((per_row * weight).sum() / weight.sum())


# ---------------------------------------------------------------------------------------------
# One-batch check
# ---------------------------------------------------------------------------------------------


def one_batch_check(model: nn.Module, data: TensorData, params: TorchMLPParams, device: torch.device,
                    seed: int) -> dict:
    """Train a copy of ``model`` on one batch, then check fit and held-out signal (module docstring).

    Returns the figures (``skipped`` maps a skipped check to the reason); raises
    :class:`TrainingCheckError` when a check fails.
    """
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data)))
    fit_rows = min(CHECK_FIT_ROWS, len(data) // 2)
    fit = tuple(t.to(device) for t in data.take(order[:fit_rows]))
    held = data.take(order[fit_rows:fit_rows + CHECK_HELDOUT_ROWS])
    probe = copy.deepcopy(model).to(device)
    step = make_train_step(probe, make_optimizer(probe, params.lr, params.weight_decay, device), device)

    def batch_loss() -> float:
        return weighted_log_loss(predict_logits(probe, fit[0], fit[1]), fit[2], fit[3])

    prior = _entropy(fit[2], fit[3])
    before = after = batch_loss()
    steps = 0
    while steps < CHECK_MAX_STEPS and not after <= CHECK_FIT_RATIO * prior and math.isfinite(after):
        probe.train()
        for _ in range(CHECK_EVAL_EVERY):
            step(fit)
        steps += CHECK_EVAL_EVERY
        after = batch_loss()
    auc, z = _auc_z(predict_logits(probe, held[0], held[1]).cpu().numpy(), held[2].numpy())
    figures = {"fit_rows": fit_rows, "heldout_rows": len(held[2]), "steps": steps, "prior_loss": prior,
               "loss_before": before, "loss_after": after, "heldout_roc_auc": auc, "heldout_z": z,
               "skipped": _skipped_checks(probe, fit[2], held[2])}

    if not math.isfinite(after) or ("fit" not in figures["skipped"] and not after <= CHECK_FIT_RATIO * prior):
        raise TrainingCheckError(_fit_failure(figures, params))
    if "held-out signal" not in figures["skipped"] and not z >= CHECK_MIN_Z:
        raise TrainingCheckError(_signal_failure(figures))
    for name, reason in figures["skipped"].items():
        log.warning("torch_mlp: one-batch check %r skipped: %s", name, reason)
    return figures


def _skipped_checks(probe: nn.Module, fit_label: torch.Tensor, held_label: torch.Tensor) -> dict[str, str]:
    """The checks that cannot tell anything on these rows or with this network, and why."""
    skipped = {}
    parameters = sum(p.numel() for p in probe.parameters())
    if parameters < CHECK_CAPACITY_FACTOR * len(fit_label):
        skipped["fit"] = (f"the network has {parameters} parameters, too few to memorise {len(fit_label)} rows "
                          "(only non-finite losses fail)")
    elif _class_counts_below(fit_label, CHECK_MIN_CLASS):
        skipped["fit"] = f"the batch has fewer than {CHECK_MIN_CLASS} rows of a class"
    if _class_counts_below(held_label, CHECK_MIN_CLASS):
        skipped["held-out signal"] = f"the held-out rows have fewer than {CHECK_MIN_CLASS} rows of a class"
    return skipped


def _entropy(label: torch.Tensor, weight: torch.Tensor) -> float:
    """Weighted log loss of predicting the weighted positive rate for every row."""
    rate = float((label * weight).sum() / weight.sum())
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def _auc_z(scores: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """ROC AUC and its distance from 0.5 in null standard errors, sqrt((n1 + n0 + 1) / (12 n1 n0))."""
    positives, negatives = int(label.sum()), int(len(label) - label.sum())
    if not positives or not negatives:
        return math.nan, math.nan
    if not np.isfinite(scores).all():
        return math.nan, -math.inf
    auc = float(weighted_roc_auc(scores.astype(np.float64), label, np.ones(len(label))))
    return auc, (auc - 0.5) / math.sqrt((positives + negatives + 1) / (12.0 * positives * negatives))


def _class_counts_below(label: torch.Tensor, minimum: int) -> bool:
    positives = int(label.sum())
    return min(positives, len(label) - positives) < minimum


def _fit_failure(f: dict, params: TorchMLPParams) -> str:
    return (
        f"torch_mlp one-batch check 'fit' failed: after {f['steps']} steps on one batch of {f['fit_rows']} "
        f"training rows the loss went from {f['loss_before']:.4f} (before) to {f['loss_after']:.4f} (after); it must "
        f"fall below {CHECK_FIT_RATIO} x {f['prior_loss']:.4f}, the loss of predicting the batch's positive rate. "
        f"Likely causes: a bad learning rate (lr={params.lr:g}: too low barely moves, too high diverges), "
        f"a dead network (no gradient reaches the hidden layers), non-finite or unscaled inputs, or broken labels. "
        f"If this learning rate is intended (e.g. slow fine-tuning), set the param one_batch_check: false."
    )


def _signal_failure(f: dict) -> str:
    return (
        f"torch_mlp one-batch check 'held-out signal' failed: the network fit one batch of {f['fit_rows']} training "
        f"rows (loss {f['loss_before']:.4f} before, {f['loss_after']:.4f} after; predicting the positive rate gives "
        f"{f['prior_loss']:.4f}) but ranks {f['heldout_rows']} other training rows no better than chance "
        f"(ROC AUC {f['heldout_roc_auc']:.3f}, z = {f['heldout_z']:.1f}; needs z >= {CHECK_MIN_Z:g}). It memorised "
        f"labels it cannot predict. Likely causes: broken labels (shuffled, or misaligned with the feature rows by a "
        f"join or sort), features that carry no signal about the label, or a dead network giving every row one score."
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints and early stopping
# ---------------------------------------------------------------------------------------------


def save_checkpoint(folder: str | Path, payload: dict) -> Path:
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


def load_checkpoint(folder: str | Path) -> dict | None:
    """The checkpoint in ``folder`` (tensors on the CPU), or None when there is none."""
    path = Path(folder) / CHECKPOINT_NAME
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def remove_partial_checkpoints(folder: str | Path) -> None:
    """Delete temporary files a killed writer left behind (only the trainer that owns the folder may)."""
    for leftover in Path(folder).glob(f".{CHECKPOINT_NAME}.*.tmp"):
        leftover.unlink(missing_ok=True)


def _cpu_state(module_or_optimizer, copy: bool = True) -> dict:
    """The state dict with tensors on the CPU: copies, or (``copy=False``, for a state written out
    before training continues) the tensors themselves where they already are on the CPU."""
    return _to_cpu(module_or_optimizer.state_dict(), copy)


def _to_cpu(value, copy: bool = True):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=copy)
    if isinstance(value, dict):
        return {k: _to_cpu(v, copy) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v, copy) for v in value)
    return value


@dataclass
class EarlyStopping:
    """Keeps the best validation loss and weights; stops after ``patience`` epochs without progress."""

    patience: int
    min_delta: float = 0.0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    best_state: dict | None = None

    def update(self, loss: float, epoch: int, model: nn.Module) -> None:
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self.best_state = _cpu_state(model)
        else:
            self.bad_epochs += 1

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def _rng_state(shuffle: torch.Generator, device: torch.device) -> dict:
    """Every random state training draws from (numpy's global one is not among them)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "shuffle": shuffle.get_state(),
    }


def _restore_rng(state: dict, shuffle: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    shuffle.set_state(state["shuffle"])


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; on CUDA the fused kernel (one launch per step instead of several per parameter)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


# ---------------------------------------------------------------------------------------------
# The candidate
# ---------------------------------------------------------------------------------------------


class TorchMLPCandidate(Candidate):
    """An MLP with categorical embeddings, trained with early stopping, checkpoints and warm starts.

    Parameters
    ----------
    features, params, seed : as for every :class:`~ml_tasks.models.Candidate`; ``params`` are
        listed in the module docstring.
    checkpoint_dir : local folder for per-epoch checkpoints (None: no checkpoints). A ``fit``
        that finds a matching checkpoint there resumes from it.
    warm_start_from : a fitted ``TorchMLPCandidate`` to fine-tune from (the attribute of the same
        name, which the trainer sets; ``fit`` uses it once and clears it).
    on_checkpoint : called with the path of every checkpoint just saved (the trainer uploads it
        to an S3 artifact store, so a retry on another host resumes); never pickled.
    """

    family = "torch_mlp"
    supports_warm_start = True

    def __init__(self, features: FeaturesSpec, params: dict | None = None, seed: int = 0, *,
                 checkpoint_dir: str | Path | None = None, warm_start_from: TorchMLPCandidate | None = None) -> None:
        super().__init__(features, params, seed)
        self.config = TorchMLPParams.from_spec(self.params)  # fail on a bad spec before any data is read
        self.checkpoint_dir = checkpoint_dir
        self.warm_start_from = warm_start_from
        self.on_checkpoint: Callable[[Path], None] | None = None

    # -- fit --------------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None, X_valid=None, y_valid=None, w_valid=None) -> TorchMLPCandidate:
        """Train on ``(X, y)``, early-stopping on the validation rows when given; fine-tune from
        ``warm_start_from`` when it is set (module docstring, "Warm start")."""
        champion = self._take_warm_start()
        device = resolve_device(self.config.device)
        cuda_devices = [device.index] if device.type == "cuda" else []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.random.fork_rng(devices=cuda_devices):  # seeding here leaves the caller's RNGs alone
            torch.manual_seed(self.seed)
            self._fit(X, y, sample_weight, X_valid, y_valid, w_valid, champion, device)
        self.peak_memory_bytes_ = _peak_memory_bytes(device)
        return self

    def _fit(self, X, y, w, X_valid, y_valid, w_valid, champion, device) -> None:
        y, w = _labels(y, "y"), _weights(w, len(X), "sample_weight")
        has_valid = X_valid is not None
        if has_valid:
            y_valid, w_valid = _labels(y_valid, "y_valid"), _weights(w_valid, len(X_valid), "w_valid")
        if champion is not None:  # before any checkpoint is resumed, so a bad champion always fails
            reason = self.can_warm_start_from(champion) or (None if hasattr(champion, "model_") else "it is not fitted")
            if reason is not None:
                raise ValueError(f"torch_mlp: cannot warm start from {type(champion).__name__}: {reason}")
        fingerprint = self._fingerprint(X, y, w, X_valid, y_valid, w_valid, champion)
        saved = self._matching_checkpoint(fingerprint)

        self.encoder_ = self._encoder(X, champion, saved)
        w = w / w.mean()  # the loss scale, and so the effective learning rate, ignores the weights' scale
        train = TensorData.from_arrays(*self.encoder_.transform(X), y, w)
        valid = TensorData.from_arrays(*self.encoder_.transform(X_valid), y_valid, w_valid) if has_valid else None
        self.arch_ = {"n_numeric": len(self.numeric), "cardinalities": self.encoder_.cardinalities,
                      "embedding_dim": self.config.embedding_dim, "hidden": list(self.config.hidden),
                      "dropout": self.config.dropout, "prior_rate": float(np.average(y, weights=w))}
        model = TabularMLP(**self.arch_)
        self.check_ = self._run_check(model, train, device) if saved is None else saved["check"]
        torch.manual_seed(self.seed)  # the check used random numbers; training starts the same without it
        self.warm_started_ = _copy_matching(model, champion.model_) if champion is not None and saved is None else None

        self.device_ = str(device)
        self.resident_ = self._resident(train, device)
        validation = ValidationRows.of(valid, device if self.resident_ else None) if has_valid else None
        if self.resident_:
            train = train.to(device)
        self.model_ = model.to(device)
        self._train(train, validation, device, fingerprint, saved)

    def _train(self, train: TensorData, valid: ValidationRows | None, device: torch.device, fingerprint: str,
               saved: dict | None) -> None:
        """The epoch loop: train, validate, early-stop, checkpoint; ends with the best weights."""
        cfg, model = self.config, self.model_
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
        shuffle = torch.Generator().manual_seed(self.seed)
        stopper = EarlyStopping(cfg.patience, cfg.min_delta)
        batch_size = min(cfg.batch_size, len(train))
        step = make_train_step(model, optimizer, device, bf16=cfg.bf16, compile=cfg.compile)
        self.history_, self.resumed_from_epoch_, finished = [], None, False
        if saved is not None:
            finished = self._resume(saved, optimizer, stopper, shuffle, device)
        else:
            self.initial_valid_loss_ = self._validate(valid, auc=False)[0] if valid is not None else None

        epoch = len(self.history_)
        while not finished:
            epoch += 1
            started = time.perf_counter()
            model.train()
            batches = (resident_batches(train, batch_size, shuffle) if self.resident_
                       else streamed_batches(train, batch_size, shuffle, device))
            train_loss, rows = train_epoch(step, batches)
            train_seconds = time.perf_counter() - started
            if not math.isfinite(train_loss):
                raise TrainingCheckError(f"torch_mlp: the training loss is {train_loss} in epoch {epoch}; likely "
                                         f"causes: a learning rate too high (lr={cfg.lr:g}) or non-finite inputs")
            valid_loss, valid_auc = self._validate(valid) if valid is not None else (train_loss, None)
            stopper.update(valid_loss, epoch, model)
            finished = stopper.should_stop or epoch >= cfg.max_epochs
            self.history_.append({
                "epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss if valid is not None else None,
                "valid_roc_auc": valid_auc, "rows_per_s": rows / train_seconds, "train_seconds": train_seconds,
                "epoch_seconds": time.perf_counter() - started,
            })
            log.info("torch_mlp epoch %d: train loss %.5f, validation loss %s, AUC %s, %.0f rows/s", epoch,
                     train_loss, valid_loss if valid is not None else "-", valid_auc, rows / train_seconds)
            if self.checkpoint_dir is not None:
                saved_path = save_checkpoint(self.checkpoint_dir, self._checkpoint(fingerprint, epoch, finished,
                                                                                   optimizer, stopper, shuffle, device))
                if getattr(self, "on_checkpoint", None) is not None:  # absent from earlier pickles
                    self.on_checkpoint(saved_path)
        model.load_state_dict(stopper.best_state)
        model.eval()
        self.best_epoch_, self.epochs_run_ = stopper.best_epoch, len(self.history_)
        self.stopped_early_ = self.epochs_run_ < cfg.max_epochs

    def _validate(self, valid: ValidationRows, auc: bool = True) -> tuple[float, float | None]:
        """Weighted log loss and ROC AUC (None when the validation rows hold one class, or not
        asked for) in eval mode. The logits come to the host once; the labels and weights are
        already there, so both figures are computed from that one copy."""
        logits = predict_logits(self.model_, valid.rows.numeric, valid.rows.categorical).cpu()
        loss = weighted_log_loss(logits, valid.label, valid.weight)
        if not auc or valid.one_class:
            return loss, None
        return loss, float(weighted_roc_auc(logits.numpy().astype(np.float64), valid.label_f64, valid.weight_f64))

    # -- pieces of fit ------------------------------------------------------------------------
    def _encoder(self, X: pd.DataFrame, champion: TorchMLPCandidate | None, saved: dict | None) -> FeatureEncoder:
        if saved is not None:
            return FeatureEncoder(**saved["encoder"])
        if champion is None:
            return FeatureEncoder.fit(X, self.numeric, self.categorical)
        return champion.encoder_.extended(X)

    def _run_check(self, model: TabularMLP, train: TensorData, device: torch.device) -> dict | None:
        if not self.config.one_batch_check:
            return None
        figures = one_batch_check(model, train, self.config, device, self.seed)
        log.info("torch_mlp one-batch check passed: %s", figures)
        return figures

    def _resident(self, train: TensorData, device: torch.device) -> bool:
        if self.config.resident is not None:
            return self.config.resident
        if device.type != "cuda":
            return True  # the rows already sit in host memory, which is this device's memory
        free, _ = torch.cuda.mem_get_info(device)
        return train.nbytes <= RESIDENT_MEMORY_FRACTION * free

    def _fingerprint(self, X, y, w, X_valid, y_valid, w_valid, champion: TorchMLPCandidate | None) -> str:
        """What a checkpoint must match to be resumed: the parameters (all but ``device`` and
        ``resident``, which only choose where training runs), features, seed, the data and the
        warm-start source (module docstring, "Checkpoints")."""
        params = {k: v for k, v in asdict(self.config).items() if k not in ("device", "resident")}
        digest = hashlib.sha256(json.dumps([self.family, params, self.numeric, self.categorical, self.seed,
                                            CHECKPOINT_FORMAT, _warm_start_identity(champion)],
                                           sort_keys=True, default=str).encode())
        for frame in (X, X_valid):
            if frame is not None:
                digest.update(pd.util.hash_pandas_object(frame[self.numeric + self.categorical], index=False)
                              .to_numpy().tobytes())
        for array in (y, w, y_valid, w_valid):
            if array is not None:
                digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        return digest.hexdigest()[:16]

    def _matching_checkpoint(self, fingerprint: str) -> dict | None:
        if self.checkpoint_dir is None:
            return None
        remove_partial_checkpoints(self.checkpoint_dir)
        try:
            saved = load_checkpoint(self.checkpoint_dir)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:  # not loadable by this torch
            log.warning("torch_mlp: ignoring the checkpoint in %s: it cannot be loaded (%s); training starts over",
                        self.checkpoint_dir, error)
            return None
        if saved is None:
            return None
        if saved.get("format") != CHECKPOINT_FORMAT:
            log.warning("torch_mlp: ignoring the checkpoint in %s: its format is %s, this release writes %s; "
                        "training starts over", self.checkpoint_dir, saved.get("format"), CHECKPOINT_FORMAT)
            return None
        if saved.get("fingerprint") != fingerprint:
            log.warning("torch_mlp: ignoring the checkpoint in %s: it belongs to other data, parameters or "
                        "warm-start champion (fingerprint %s, this run %s)", self.checkpoint_dir,
                        saved.get("fingerprint"), fingerprint)
            return None
        return saved

    def _checkpoint(self, fingerprint: str, epoch: int, finished: bool, optimizer: torch.optim.Optimizer,
                    stopper: EarlyStopping, shuffle: torch.Generator, device: torch.device) -> dict:
        """The checkpoint payload; written at once, so tensors already on the CPU are not copied, and
        an epoch that just became the best shares its weights with ``best_state`` (saved once)."""
        weights = stopper.best_state if stopper.best_epoch == epoch else _cpu_state(self.model_, copy=False)
        return {
            "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": epoch, "finished": finished,
            "model": weights, "optimizer": _cpu_state(optimizer, copy=False), "scheduler": None,
            "best_state": stopper.best_state, "best_valid_loss": stopper.best_loss, "best_epoch": stopper.best_epoch,
            "bad_epochs": stopper.bad_epochs, "history": self.history_, "initial_valid_loss": self.initial_valid_loss_,
            "check": self.check_, "encoder": asdict(self.encoder_), "arch": self.arch_,
            "warm_started": self.warm_started_, "rng": _rng_state(shuffle, device),
        }

    def _resume(self, saved: dict, optimizer: torch.optim.Optimizer, stopper: EarlyStopping,
                shuffle: torch.Generator, device: torch.device) -> bool:
        """Restore the state after the checkpoint's epoch; True when that run had already finished."""
        self.model_.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])  # moves the moments to the parameters' device
        stopper.best_state, stopper.best_loss = saved["best_state"], saved["best_valid_loss"]
        stopper.best_epoch, stopper.bad_epochs = saved["best_epoch"], saved["bad_epochs"]
        self.history_ = list(saved["history"])
        self.initial_valid_loss_ = saved["initial_valid_loss"]
        self.warm_started_ = saved["warm_started"]
        _restore_rng(saved["rng"], shuffle, device)
        self.resumed_from_epoch_ = saved["epoch"]
        log.info("torch_mlp: resuming from the checkpoint of epoch %d in %s", saved["epoch"], self.checkpoint_dir)
        return bool(saved["finished"])

    # -- predict and pickle -------------------------------------------------------------------
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        numeric, categorical = self.encoder_.transform(X)
        logits = predict_logits(self.model_, torch.from_numpy(numeric), torch.from_numpy(categorical))
        return self._two_columns(torch.sigmoid(logits).cpu().numpy().astype(np.float64))

    def __getstate__(self) -> dict:
        """Pickle (MLflow uses cloudpickle) with the network on the CPU, so any machine can load it."""
        state = self.__dict__.copy()
        state["warm_start_from"] = state["on_checkpoint"] = None
        if "model_" in state:
            state["model_"] = copy.deepcopy(self.model_).to("cpu")
        return state


def _labels(y, name: str) -> np.ndarray:
    values = np.asarray(y, dtype=np.float64)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"torch_mlp: {name} must hold only 0 and 1, got {np.unique(values)[:5].tolist()}...")
    if name == "y" and values.min() == values.max():
        raise ValueError(f"torch_mlp: every training label is {int(values[0])}; there is nothing to learn")
    return values


def _weights(w, n: int, name: str) -> np.ndarray:
    if w is None:
        return np.ones(n)
    values = np.asarray(w, dtype=np.float64)
    if values.shape != (n,) or not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"torch_mlp: {name} must be {n} finite non-negative numbers with a positive sum")
    return values


def _warm_start_identity(champion: TorchMLPCandidate | None) -> str:
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


def _copy_matching(model: nn.Module, source: nn.Module) -> list[str]:
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
