"""The PyTorch candidate: a multi-layer perceptron over scaled numerics and categorical embeddings,
trained with a one-batch check, early stopping, per-epoch checkpoints and warm starts.

``TorchMLPCandidate`` (family ``torch_mlp``) has the interface of every other candidate in
:mod:`ml_tasks.models`; the family is imported only when a spec asks for it, so the rest of
Refit never pays for importing torch.

>>> model = TorchMLPCandidate(features, {"hidden": "256,128"}, seed=7, checkpoint_dir="/tmp/ck")  # doctest: +SKIP
>>> model.fit(X_train, y_train, w_train, X_valid, y_valid, w_valid).predict_proba(X_test)[:, 1]  # doctest: +SKIP
>>> model.history_[-1]["valid_roc_auc"], model.device_, model.peak_memory_bytes_                 # doctest: +SKIP

What ``fit`` does, in order (the module named says how and why):

1. checks the labels, weights (:mod:`.encoding`) and the warm-start champion, if any;
2. fingerprints the run and looks for a checkpoint of the same run to resume (:mod:`.checkpoint`);
3. fits the encoder on the training rows (:mod:`.encoding`; a warm start extends the
   champion's) and builds the network (:mod:`.net`; a warm start copies the champion's weights,
   :mod:`.warmstart`);
4. runs the one-batch check on a copy of the fresh network (:mod:`.checks`);
5. decides whether the training rows stay on the device (:mod:`.batches`) and trains epoch after
   epoch (:mod:`.loop`), validating, early-stopping and checkpointing after each one;
6. ends with the best epoch's weights, in eval mode.

Sample weights are normalised to mean 1 over the training rows before they weight the loss, so
the learning rate does not depend on the weights' scale (the fingerprint hashes them as given).

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
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import torch

from ml_tasks.core.spec import FeaturesSpec
from ml_tasks.evaluation.metrics import weighted_roc_auc
from ml_tasks.models.base import Candidate
from ml_tasks.models.network.batches import (
    TensorData,
    ValidationRows,
    resident_batches,
    stays_resident,
    streamed_batches,
)
from ml_tasks.models.network.checkpoint import (
    CHECKPOINT_FORMAT,
    cpu_state,
    matching_checkpoint,
    restore_rng,
    rng_state,
    run_fingerprint,
    save_checkpoint,
)
from ml_tasks.models.network.checks import TrainingCheckError, one_batch_check
from ml_tasks.models.network.device import peak_memory_bytes, resolve_device
from ml_tasks.models.network.encoding import FeatureEncoder, LabelledRows
from ml_tasks.models.network.loop import EarlyStopping, make_optimizer, make_train_step, train_epoch
from ml_tasks.models.network.net import TabularMLP, predict_logits, weighted_log_loss
from ml_tasks.models.network.params import FAMILY, TorchMLPParams
from ml_tasks.models.network.warmstart import copy_matching, warm_start_identity
from ml_tasks.models.served import NETWORK_FILE, expit, network_logits

log = logging.getLogger(__name__)


class TorchMLPCandidate(Candidate):
    """An MLP with categorical embeddings, trained with early stopping, checkpoints and warm starts.

    Parameters
    ----------
    features, params, seed : as for every :class:`~ml_tasks.models.Candidate`; ``params`` are
        listed in :mod:`ml_tasks.models.network.params`.
    checkpoint_dir : local folder for per-epoch checkpoints (None: no checkpoints). A ``fit``
        that finds a matching checkpoint there resumes from it.
    warm_start_from : a fitted ``TorchMLPCandidate`` to fine-tune from (the attribute of the same
        name, which the trainer sets; ``fit`` uses it once and clears it).
    on_checkpoint : called with the path of every checkpoint just saved (the trainer uploads it
        to an S3 artifact store, so a retry on another host resumes); never pickled.
    """

    family = FAMILY
    supports_warm_start = True
    reports_steps = True

    # Set by fit (module docstring, "Fitted attributes").
    model_: TabularMLP
    encoder_: FeatureEncoder
    arch_: dict[str, Any]
    device_: str
    resident_: bool
    history_: list[dict[str, Any]]
    initial_valid_loss_: float | None
    best_epoch_: int
    epochs_run_: int
    stopped_early_: bool
    resumed_from_epoch_: int | None
    warm_started_: list[str] | None
    check_: dict[str, Any] | None
    peak_memory_bytes_: int

    def __init__(self, features: FeaturesSpec, params: dict[str, Any] | None = None, seed: int = 0, *,
                 checkpoint_dir: str | Path | None = None, warm_start_from: TorchMLPCandidate | None = None) -> None:
        super().__init__(features, params, seed)
        self.config = TorchMLPParams.from_spec(self.params)  # fail on a bad spec before any data is read
        self.checkpoint_dir = checkpoint_dir
        self.warm_start_from = warm_start_from
        self.on_checkpoint: Callable[[Path], None] | None = None

    # -- fit --------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None,
            X_valid: pd.DataFrame | None = None, y_valid: np.ndarray | None = None,
            w_valid: np.ndarray | None = None) -> Self:
        """Train on ``(X, y)``, early-stopping on the validation rows when given; fine-tune from
        ``warm_start_from`` when it is set (:mod:`.warmstart`)."""
        champion = self._take_warm_start()
        on_step = self._take_on_step()
        device = resolve_device(self.config.device)
        cuda_devices = [device.index] if device.type == "cuda" else []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.random.fork_rng(devices=cuda_devices):  # seeding here leaves the caller's RNGs alone
            torch.manual_seed(self.seed)
            rows = LabelledRows.checked(X, y, sample_weight, ("y", "sample_weight"))
            valid_rows = (LabelledRows.checked(X_valid, y_valid, w_valid, ("y_valid", "w_valid"))
                          if X_valid is not None else None)
            self._fit(rows, valid_rows, champion, device, on_step)
        self.peak_memory_bytes_ = peak_memory_bytes(device)
        return self

    def _fit(self, rows: LabelledRows, valid_rows: LabelledRows | None, champion: TorchMLPCandidate | None,
             device: torch.device, on_step: Callable[[int, float], None] | None = None) -> None:
        self._check_champion(champion)  # before any checkpoint is resumed, so a bad champion always fails
        fingerprint = run_fingerprint(self.config, self.numeric, self.categorical, self.seed,
                                      warm_start_identity(champion), rows, valid_rows)
        saved = matching_checkpoint(self.checkpoint_dir, fingerprint) if self.checkpoint_dir is not None else None

        self.encoder_ = self._encoder(rows.X, champion, saved)
        w = rows.w / rows.w.mean()  # the loss scale, and so the effective learning rate, ignores the weights' scale
        train = TensorData.from_arrays(*self.encoder_.transform(rows.X), rows.y, w)
        valid = (TensorData.from_arrays(*self.encoder_.transform(valid_rows.X), valid_rows.y, valid_rows.w)
                 if valid_rows is not None else None)
        self.arch_ = {"n_numeric": len(self.numeric), "cardinalities": self.encoder_.cardinalities,
                      "embedding_dim": self.config.embedding_dim, "hidden": list(self.config.hidden),
                      "dropout": self.config.dropout, "prior_rate": float(np.average(rows.y, weights=w))}
        model = TabularMLP(**self.arch_)
        self.check_ = self._run_check(model, train, device) if saved is None else saved["check"]
        torch.manual_seed(self.seed)  # the check used random numbers; training starts the same without it
        self.warm_started_ = copy_matching(model, champion.model_) if champion is not None and saved is None else None

        self.device_ = str(device)
        self.resident_ = stays_resident(train, device, self.config.resident)
        validation = ValidationRows.of(valid, device if self.resident_ else None) if valid is not None else None
        if self.resident_:
            train = train.to(device)
        self.model_ = model.to(device)
        self._train(train, validation, device, fingerprint, saved, on_step)

    def _train(self, train: TensorData, valid: ValidationRows | None, device: torch.device, fingerprint: str,
               saved: dict[str, Any] | None, on_step: Callable[[int, float], None] | None = None) -> None:
        """The epoch loop: train, validate, early-stop, checkpoint, report the validation loss to
        ``on_step`` (which may raise to stop); ends with the best weights."""
        cfg, model = self.config, self.model_
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
        shuffle = torch.Generator().manual_seed(self.seed)
        stopper = EarlyStopping(cfg.patience, cfg.min_delta)
        batch_size = min(cfg.batch_size, len(train))
        step = make_train_step(model, optimizer, device, bf16=cfg.bf16, compile=cfg.compile)
        self.history_, self.resumed_from_epoch_, finished = [], None, False
        if saved is not None:
            finished = self._resume(saved, optimizer, stopper, shuffle, device)
            if on_step is not None and valid is not None:  # a resumed trial is pruned as it was
                for record in self.history_:
                    on_step(record["epoch"], record["valid_loss"])
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
            self._record_epoch(epoch, train_loss, valid_loss if valid is not None else None, valid_auc, rows,
                               train_seconds, started)
            if self.checkpoint_dir is not None:
                self._save_checkpoint(self.checkpoint_dir, self._checkpoint(fingerprint, epoch, finished, optimizer,
                                                                            stopper, shuffle, device))
            if on_step is not None and valid is not None:
                on_step(epoch, valid_loss)
        # Set by the first epoch whose loss is finite, which a finite training loss ensures unless
        # every validation loss was infinite.
        assert stopper.best_state is not None, "torch_mlp: no epoch had a finite validation loss"
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

    def _record_epoch(self, epoch: int, train_loss: float, valid_loss: float | None, valid_auc: float | None,
                      rows: int, train_seconds: float, started: float) -> None:
        """Append the epoch's figures to ``history_`` and log them."""
        self.history_.append({
            "epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "valid_roc_auc": valid_auc,
            "rows_per_s": rows / train_seconds, "train_seconds": train_seconds,
            "epoch_seconds": time.perf_counter() - started,
        })
        log.info("torch_mlp epoch %d: train loss %.5f, validation loss %s, AUC %s, %.0f rows/s", epoch,
                 train_loss, valid_loss if valid_loss is not None else "-", valid_auc, rows / train_seconds)

    # -- pieces of fit ------------------------------------------------------------------------
    def _check_champion(self, champion: TorchMLPCandidate | None) -> None:
        """Refuse a champion this run cannot continue (another family, other features, unfitted)."""
        if champion is None:
            return
        reason = self.can_warm_start_from(champion) or (None if hasattr(champion, "model_") else "it is not fitted")
        if reason is not None:
            raise ValueError(f"torch_mlp: cannot warm start from {type(champion).__name__}: {reason}")

    def _encoder(self, X: pd.DataFrame, champion: TorchMLPCandidate | None,
                 saved: dict[str, Any] | None) -> FeatureEncoder:
        if saved is not None:
            return FeatureEncoder(**saved["encoder"])
        if champion is None:
            return FeatureEncoder.fit(X, self.numeric, self.categorical)
        return champion.encoder_.extended(X)

    def _run_check(self, model: TabularMLP, train: TensorData, device: torch.device) -> dict[str, Any] | None:
        if not self.config.one_batch_check:
            return None
        figures = one_batch_check(model, train, self.config, device, self.seed)
        log.info("torch_mlp one-batch check passed: %s", figures)
        return figures

    # -- checkpoints --------------------------------------------------------------------------
    def _checkpoint(self, fingerprint: str, epoch: int, finished: bool, optimizer: torch.optim.Optimizer,
                    stopper: EarlyStopping, shuffle: torch.Generator, device: torch.device) -> dict[str, Any]:
        """The checkpoint payload; written at once, so tensors already on the CPU are not copied, and
        an epoch that just became the best shares its weights with ``best_state`` (saved once)."""
        weights = stopper.best_state if stopper.best_epoch == epoch else cpu_state(self.model_, copy=False)
        return {
            "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": epoch, "finished": finished,
            "model": weights, "optimizer": cpu_state(optimizer, copy=False), "scheduler": None,
            "best_state": stopper.best_state, "best_valid_loss": stopper.best_loss, "best_epoch": stopper.best_epoch,
            "bad_epochs": stopper.bad_epochs, "history": self.history_, "initial_valid_loss": self.initial_valid_loss_,
            "check": self.check_, "encoder": asdict(self.encoder_), "arch": self.arch_,
            "warm_started": self.warm_started_, "rng": rng_state(shuffle, device),
        }

    def _save_checkpoint(self, folder: str | Path, payload: dict[str, Any]) -> None:
        """Write the checkpoint, then hand its path to ``on_checkpoint`` (the trainer uploads it)."""
        saved_path = save_checkpoint(folder, payload)
        on_checkpoint = getattr(self, "on_checkpoint", None)  # absent from earlier pickles
        if on_checkpoint is not None:
            on_checkpoint(saved_path)

    def _resume(self, saved: dict[str, Any], optimizer: torch.optim.Optimizer, stopper: EarlyStopping,
                shuffle: torch.Generator, device: torch.device) -> bool:
        """Restore the state after the checkpoint's epoch; True when that run had already finished."""
        self.model_.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])  # moves the moments to the parameters' device
        stopper.best_state, stopper.best_loss = saved["best_state"], saved["best_valid_loss"]
        stopper.best_epoch, stopper.bad_epochs = saved["best_epoch"], saved["bad_epochs"]
        self.history_ = list(saved["history"])
        self.initial_valid_loss_ = saved["initial_valid_loss"]
        self.warm_started_ = saved["warm_started"]
        restore_rng(saved["rng"], shuffle, device)
        self.resumed_from_epoch_ = saved["epoch"]
        # A warning: the run before this one died, which whoever reads the task log should know.
        log.warning("torch_mlp: resuming from the checkpoint of epoch %d in %s", saved["epoch"], self.checkpoint_dir)
        return bool(saved["finished"])

    # -- predict and pickle -------------------------------------------------------------------
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """The served form's float64 forward pass over this network's weights
        (:func:`~ml_tasks.models.served.network_logits`): what the gate measures is, to the last
        bits, what a consumer of the registered model is served, on any machine and thread count
        (torch's float32 kernels differ in the last bits between them)."""
        logits = network_logits(self._weights(), *self.encoder_.transform(X))
        return self._two_columns(expit(logits))

    def _weights(self) -> dict[str, np.ndarray]:
        return {name: tensor.detach().to("cpu").numpy() for name, tensor in self.model_.state_dict().items()}

    def served_state(self, folder: Path) -> dict[str, Any]:
        """The weights as named float32 arrays (``network.npz``, the ``state_dict``'s names), the
        encoder and what rebuilds the network."""
        weights: dict[str, Any] = self._weights()
        np.savez(folder / NETWORK_FILE, **weights)
        return {"encoder": asdict(self.encoder_), "arch": self.arch_, "best_epoch": self.best_epoch_}

    def restore_served(self, state: dict[str, Any], folder: Path) -> Self:
        self.encoder_, self.arch_ = FeatureEncoder(**state["encoder"]), dict(state["arch"])
        self.best_epoch_ = int(state.get("best_epoch", 0))
        model = TabularMLP(**self.arch_)
        with np.load(folder / NETWORK_FILE) as arrays:
            model.load_state_dict({name: torch.from_numpy(arrays[name]) for name in arrays.files})
        self.model_ = model.eval()
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Pickle (MLflow uses cloudpickle) with the network on the CPU, so any machine can load it."""
        state = self.__dict__.copy()
        state["warm_start_from"] = state["on_checkpoint"] = None
        if "model_" in state:
            state["model_"] = copy.deepcopy(self.model_).to("cpu")
        return state
