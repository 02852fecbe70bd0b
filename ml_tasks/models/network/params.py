"""The network family's hyper-parameters: the spec's ``params``, checked and converted before any
data is read, so a typo fails the run at once rather than after an hour of extraction.

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
one_batch_check : true   run the one-batch check (:mod:`.checks`) before training.

An unknown parameter name or a bad value raises ``ValueError`` naming the parameter:

>>> TorchMLPParams.from_spec({"hidden": "64, 32", "bf16": "no"}).hidden
(64, 32)
>>> TorchMLPParams.from_spec({"batch_size": 0})
Traceback (most recent call last):
...
ValueError: torch_mlp: param 'batch_size': expected a value in [1, inf], got 0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

#: The family name a spec gives for this candidate.
FAMILY = "torch_mlp"


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
    def from_spec(cls, raw: dict[str, Any]) -> TorchMLPParams:
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


def _hidden(value: Any) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise ValueError(f"expected layer widths like '256,128', got {value!r}")
    widths: tuple[int, ...]
    if isinstance(value, int):
        widths = (value,)
    else:
        widths = tuple(int(part) for part in str(value).replace(" ", "").split(",") if part)
    if any(w < 1 for w in widths):
        raise ValueError(f"layer widths must be >= 1, got {value!r}")
    return widths


def _bounded(kind: type[int] | type[float], low: float, high: float = math.inf) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        # A bool is an int to Python, and 2.5 would silently become 2: both are spec mistakes.
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected {kind.__name__}, got {value!r}")
        number = kind(value)
        if not low <= number <= high:
            raise ValueError(f"expected a value in [{low}, {high}], got {value!r}")
        return number
    return convert


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in {"true", "yes", "1"}:
        return True
    if str(value).lower() in {"false", "no", "0"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _auto_flag(value: Any) -> bool | None:
    return None if str(value).lower() == "auto" else _flag(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "hidden": _hidden, "embedding_dim": _bounded(int, 1), "dropout": _bounded(float, 0.0, 0.95),
    "lr": _bounded(float, 1e-12, 10.0), "weight_decay": _bounded(float, 0.0), "batch_size": _bounded(int, 1),
    "max_epochs": _bounded(int, 1), "patience": _bounded(int, 1), "min_delta": _bounded(float, 0.0),
    "device": str, "resident": _auto_flag, "compile": _flag, "bf16": _flag, "one_batch_check": _flag,
}
