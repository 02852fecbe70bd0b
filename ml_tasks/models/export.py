"""Fitted models to and from their served form (:mod:`ml_tasks.models.served`): the folder of
plain state every registered model carries, and the fitted candidate a warm start continues.

>>> write_served(CalibratedCandidate(candidate, calibrator), Path("served"))      # doctest: +SKIP
>>> ServedModel.load("served").probability(X_test)          # what any consumer is served  # doctest: +SKIP
>>> restore_candidate(Path("served"))                       # the fitted candidate again   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_tasks.core.spec import FeaturesSpec
from ml_tasks.models.base import Candidate
from ml_tasks.models.calibrators import CalibratedCandidate, Calibrator, IdentityCalibrator
from ml_tasks.models.families import family_class
from ml_tasks.models.served import DESCRIPTION, ServedModel, write_state


def write_served(model: Candidate | CalibratedCandidate, folder: Path) -> Path:
    """Write ``model`` (a fitted candidate, or a calibrated one) into ``folder`` as served state;
    returns the folder. Refuses a model whose served form would not predict what it does."""
    candidate, calibrator = _parts(model)
    folder.mkdir(parents=True, exist_ok=True)
    description: dict[str, Any] = {
        "family": candidate.family, "params": candidate.params, "seed": candidate.seed,
        "features": {"numeric": candidate.numeric, "categorical": candidate.categorical},
        "model": candidate.served_state(folder), "calibrator": calibrator.served_params(),
    }
    write_state(folder, description)
    return folder


def restore_candidate(folder: Path) -> Candidate:
    """The fitted, uncalibrated candidate back from a served folder (what a warm start continues)."""
    served = ServedModel.load(folder)
    description = served.description
    features = FeaturesSpec(numeric=served.numeric, categorical=served.categorical)
    family = family_class(description["family"])
    candidate = family(features, description.get("params"), seed=description.get("seed", 0))
    return candidate.restore_served(description["model"], folder)


def is_served_folder(folder: Path) -> bool:
    return (folder / DESCRIPTION).is_file()


def _parts(model: Candidate | CalibratedCandidate) -> tuple[Candidate, Calibrator]:
    if isinstance(model, CalibratedCandidate):
        return model.candidate, model.calibrator
    return model, IdentityCalibrator()
