"""What one epoch of training runs: the optimiser, the step, the epoch over a batch iterator,
and the early stopping that decides whether another epoch follows.

The optimiser is AdamW with a constant learning rate (no scheduler); on CUDA it is the fused
kernel, one launch per step instead of several per parameter. A step computes the per-row
``BCEWithLogits`` loss in float32 (under bfloat16 autocast when ``bf16`` is set), multiplies it
by the row's sample weight (normalised to mean 1 over the training rows by the candidate, so
the learning rate does not depend on the weights' scale) and averages. The step's loss stays on
the device: an epoch reads the sum once, not once per step, so the host never waits on the GPU
mid-epoch.

Early stopping keeps the lowest validation loss seen (lower by more than ``min_delta`` to count)
and a CPU copy of that epoch's weights, and stops after ``patience`` epochs without one; the
candidate ends with the best epoch's weights, not the last one's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ml_tasks.models.network.batches import Batch
from ml_tasks.models.network.checkpoint import cpu_state

Step = Callable[[Batch], torch.Tensor]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; on CUDA the fused kernel (one launch per step instead of several per parameter)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, *,
                    bf16: bool = False, compile: bool = False) -> Step:
    """One optimiser step on a batch; returns the weighted loss, detached and left on the device.

    Leaving the loss on the device avoids a host sync per step; the epoch reads it once.
    """
    forward = torch.compile(model) if compile else model

    def step(batch: Batch) -> torch.Tensor:
        numeric, categorical, label, weight = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(numeric, categorical)
        per_row = nn.functional.binary_cross_entropy_with_logits(logits.float(), label, reduction="none")
        loss = (per_row * weight).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def train_epoch(step: Step, batches: Iterable[Batch]) -> tuple[float, int]:
    """Run ``step`` over ``batches``; return the mean batch loss (one host sync) and the rows seen."""
    total: torch.Tensor | None = None
    steps, rows = 0, 0
    for batch in batches:
        loss = step(batch)
        total = loss if total is None else total + loss
        steps += 1
        rows += len(batch[2])
    return (float(total) / steps if total is not None else math.nan), rows


@dataclass
class EarlyStopping:
    """Keeps the best validation loss and weights; stops after ``patience`` epochs without progress."""

    patience: int
    min_delta: float = 0.0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    best_state: dict[str, Any] | None = None

    def update(self, loss: float, epoch: int, model: nn.Module) -> None:
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self.best_state = cpu_state(model)
        else:
            self.bad_epochs += 1

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience
