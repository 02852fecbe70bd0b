"""Which class trains each ``family`` a spec names: the one place a new family is registered.

>>> model = build_candidate(spec.candidate("lightgbm"), spec.features)   # doctest: +SKIP
>>> model.fit(X_train, y_train, w_train, X_valid, y_valid).predict_proba(X_test)[:, 1]  # doctest: +SKIP
"""

from __future__ import annotations

from ml_tasks.core.spec import CandidateSpec, FeaturesSpec
from ml_tasks.models.base import Candidate
from ml_tasks.models.lightgbm import LightGBMCandidate
from ml_tasks.models.linear import LogisticRegressionCandidate, PriorCandidate

_FAMILIES: dict[str, type[Candidate]] = {
    cls.family: cls for cls in (PriorCandidate, LogisticRegressionCandidate, LightGBMCandidate)
}


def _torch_mlp() -> type[Candidate]:
    from ml_tasks.models.network import (
        TorchMLPCandidate,  # imports torch: only when a spec asks for it
    )

    return TorchMLPCandidate


#: Families whose module is imported on first use, so importing this module stays light.
_LAZY_FAMILIES = {"torch_mlp": _torch_mlp}


def family_class(family: str) -> type[Candidate]:
    """The class that trains ``family``."""
    if family not in _FAMILIES and family not in _LAZY_FAMILIES:
        raise ValueError(f"family: unknown {family!r}, expected one of {sorted([*_FAMILIES, *_LAZY_FAMILIES])}")
    return _FAMILIES.get(family) or _LAZY_FAMILIES[family]()


def build_candidate(spec: CandidateSpec, features: FeaturesSpec, seed: int = 0) -> Candidate:
    """The untrained candidate a spec entry describes."""
    return family_class(spec.family)(features, spec.params, seed=seed)
