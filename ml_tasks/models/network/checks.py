"""The one-batch check: before the first epoch, prove that the network can learn from these rows
at this learning rate, and that the labels carry signal the features can predict.

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
``CHECK_MIN_CLASS`` rows of either class: with very rare positives one batch says nothing. The
held-out check is also skipped where it has no power: when even a held-out AUC of
``CHECK_DETECTABLE_AUC``, a modest real signal, would stay below ``z = CHECK_MIN_Z`` on these rows
(a null standard error above 0.0375, e.g. 688 held-out rows with 36 positives). Otherwise a small
training set, such as an early backtest fold, would fail with good labels: seen on the deployed
stack, a fold of 607 rows whose probe reached AUC 0.726 (z = 3.2) was refused as "no better than
chance". Shuffled labels still fail wherever the check runs.
A resumed run does not repeat the check. The check draws its rows from a local ``numpy``
generator seeded with the candidate's seed, so it leaves every generator training uses alone.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ml_tasks.evaluation.metrics import weighted_roc_auc
from ml_tasks.models.network.batches import TensorData, map_batch
from ml_tasks.models.network.loop import make_optimizer, make_train_step
from ml_tasks.models.network.net import predict_logits, weighted_log_loss
from ml_tasks.models.network.params import TorchMLPParams

log = logging.getLogger(__name__)

CHECK_FIT_ROWS = 512
CHECK_HELDOUT_ROWS = 4096
CHECK_EVAL_EVERY = 25
CHECK_MAX_STEPS = 500
CHECK_FIT_RATIO = 0.5
CHECK_MIN_Z = 4.0
CHECK_MIN_CLASS = 10
#: The held-out check runs only where an AUC this high could reach CHECK_MIN_Z (its power).
CHECK_DETECTABLE_AUC = 0.65
#: The fit check needs at least this many parameters per batch row to memorise the batch.
CHECK_CAPACITY_FACTOR = 2


class TrainingCheckError(RuntimeError):
    """A training check failed (the one-batch check, or a non-finite training loss); the message
    names the check, the figures and likely causes."""


def one_batch_check(model: nn.Module, data: TensorData, params: TorchMLPParams, device: torch.device,
                    seed: int) -> dict[str, Any]:
    """Train a copy of ``model`` on one batch, then check fit and held-out signal (module docstring).

    Returns the figures (``skipped`` maps a skipped check to the reason); raises
    :class:`TrainingCheckError` when a check fails.
    """
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data)))
    fit_rows = min(CHECK_FIT_ROWS, len(data) // 2)
    fit = map_batch(lambda t: t.to(device), data.take(order[:fit_rows]))
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
    skipped = _skipped_checks(probe, fit[2], held[2])
    figures: dict[str, Any] = {"fit_rows": fit_rows, "heldout_rows": len(held[2]), "steps": steps,
                               "prior_loss": prior, "loss_before": before, "loss_after": after,
                               "heldout_roc_auc": auc, "heldout_z": z, "skipped": skipped}

    if not math.isfinite(after) or ("fit" not in skipped and not after <= CHECK_FIT_RATIO * prior):
        raise TrainingCheckError(_fit_failure(figures, params))
    if "held-out signal" not in skipped and not z >= CHECK_MIN_Z:
        raise TrainingCheckError(_signal_failure(figures))
    for name, reason in skipped.items():
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
    elif (detectable := 0.5 + CHECK_MIN_Z * _null_auc_se(held_label)) > CHECK_DETECTABLE_AUC:
        skipped["held-out signal"] = (
            f"too few held-out rows to tell signal from chance: {len(held_label)} rows with "
            f"{int(held_label.sum())} positives need a ROC AUC of {detectable:.3f} for z >= {CHECK_MIN_Z:g}")
    return skipped


def _null_auc_se(label: torch.Tensor | np.ndarray) -> float:
    """The Mann-Whitney null standard error of the ROC AUC, sqrt((n1 + n0 + 1) / (12 n1 n0))."""
    positives = int(label.sum())
    negatives = len(label) - positives
    return math.sqrt((positives + negatives + 1) / (12.0 * positives * negatives))


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
    return auc, (auc - 0.5) / _null_auc_se(label)


def _class_counts_below(label: torch.Tensor, minimum: int) -> bool:
    positives = int(label.sum())
    return min(positives, len(label) - positives) < minimum


def _fit_failure(f: dict[str, Any], params: TorchMLPParams) -> str:
    return (
        f"torch_mlp one-batch check 'fit' failed: after {f['steps']} steps on one batch of {f['fit_rows']} "
        f"training rows the loss went from {f['loss_before']:.4f} (before) to {f['loss_after']:.4f} (after); it must "
        f"fall below {CHECK_FIT_RATIO} x {f['prior_loss']:.4f}, the loss of predicting the batch's positive rate. "
        f"Likely causes: a bad learning rate (lr={params.lr:g}: too low barely moves, too high diverges), "
        f"a dead network (no gradient reaches the hidden layers), non-finite or unscaled inputs, or broken labels. "
        f"If this learning rate is intended (e.g. slow fine-tuning), set the param one_batch_check: false."
    )


def _signal_failure(f: dict[str, Any]) -> str:
    return (
        f"torch_mlp one-batch check 'held-out signal' failed: the network fit one batch of {f['fit_rows']} training "
        f"rows (loss {f['loss_before']:.4f} before, {f['loss_after']:.4f} after; predicting the positive rate gives "
        f"{f['prior_loss']:.4f}) but cannot be shown to rank {f['heldout_rows']} other training rows better than "
        f"chance (ROC AUC {f['heldout_roc_auc']:.3f}, z = {f['heldout_z']:.1f}; needs z >= {CHECK_MIN_Z:g}). It "
        f"memorised labels it cannot predict. Likely causes: broken labels (shuffled, or misaligned with the feature "
        f"rows by a join or sort), features that carry no signal about the label, or a dead network giving every "
        f"row one score."
    )
