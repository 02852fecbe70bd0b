"""The network family's hyper-parameters: the spec's ``params``, checked and converted before any
data is read, so a typo fails the run at once rather than after an hour of extraction.

Names, types, defaults and ranges are those of the family's schema,
:class:`ml_tasks.core.spec.TorchMLPParamsSpec`, which the spec loader checks every ``torch_mlp``
candidate against (``python -m ml_tasks spec-reference`` lists them). :class:`TorchMLPParams`
is what the network reads: the same values, with ``resident: auto`` as ``None``. It stays a
plain dataclass because trained models pickle it (a model loads without pydantic's help).

An unknown parameter name or a bad value raises ``ValueError`` naming the parameter:

>>> TorchMLPParams.from_spec({"hidden": "64, 32", "bf16": False}).hidden
(64, 32)
>>> TorchMLPParams.from_spec({"batch_size": 0})
Traceback (most recent call last):
...
ValueError: torch_mlp: param 'batch_size': Input should be greater than or equal to 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ml_tasks.core.spec import TorchMLPParamsSpec

#: The family name a spec gives for this candidate.
FAMILY = TorchMLPParamsSpec.family


@dataclass(frozen=True)
class TorchMLPParams:
    """The family's hyper-parameters, as :meth:`from_spec` resolves them (see the module docstring)."""

    hidden: tuple[int, ...]
    embedding_dim: int
    dropout: float
    lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    min_delta: float
    device: str
    resident: bool | None  # None: "auto"
    compile: bool
    bf16: bool
    one_batch_check: bool

    @classmethod
    def from_spec(cls, raw: dict[str, Any]) -> TorchMLPParams:
        """Validate spec params against the family's schema, defaults filled in; a bad name or
        value raises ``ValueError`` naming it."""
        spec = TorchMLPParamsSpec.of(raw)
        values = {field.name: getattr(spec, field.name) for field in fields(cls)}
        return cls(**{**values, "resident": None if spec.resident == "auto" else spec.resident})
