"""The network itself: categorical embeddings concatenated with the numerics, Linear-ReLU-Dropout
blocks, one logit; and how its logits and weighted loss are computed outside training.

Two choices at construction save training work and noise:

* row 0 of every embedding (a missing value, or one never seen in training: :mod:`.encoding`)
  starts at zero, so such a value contributes nothing rather than noise when training had no
  missing values to teach row 0;
* the output bias starts at the logit of the training rows' (weighted) positive rate, which
  skips the first epochs' work of learning the intercept.

Prediction and validation run in eval mode without gradients, in batches of
``PREDICT_BATCH_ROWS`` rows (large batches are cheap without gradients); logits are float32
whatever precision training used.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Rows per forward pass when predicting or validating (no gradients: large batches are cheap).
PREDICT_BATCH_ROWS = 65_536


class TabularMLP(nn.Module):
    """Embeddings concatenated with the numerics, then Linear-ReLU-Dropout blocks and one logit."""

    def __init__(self, n_numeric: int, cardinalities: list[int], embedding_dim: int, hidden: tuple[int, ...],
                 dropout: float, prior_rate: float = 0.5) -> None:
        super().__init__()
        tables = [nn.Embedding(c, embedding_dim) for c in cardinalities]
        for table in tables:
            nn.init.zeros_(table.weight[0])  # missing/unseen starts neutral (see module docstring)
        self.embeddings = nn.ModuleList(tables)
        blocks: list[nn.Module] = []
        width = n_numeric + embedding_dim * len(cardinalities)
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
    """The weights' mean of the per-row log loss of ``logits`` (on the logits' device)."""
    per_row = nn.functional.binary_cross_entropy_with_logits(logits.float(), label.to(logits.device),
                                                             reduction="none")
    weight = weight.to(logits.device)
    return float((per_row * weight).sum() / weight.sum())
