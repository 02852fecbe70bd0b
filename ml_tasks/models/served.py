"""The served form of a fitted model: plain state, and the arithmetic that turns it into
probabilities with numpy and pandas alone (plus LightGBM's own library for trees).

Every model Refit registers is written as one folder of plain state (:func:`write_state` writes
``model.json`` and the files it names):

* ``model.json``: the format, the family, the feature lists, the family's fitted parameters and
  the calibrator's (all JSON);
* ``lightgbm.txt``: a LightGBM model in LightGBM's own text format (family ``lightgbm``);
* ``network.npz``: the network's weights as named arrays (family ``torch_mlp``).

:class:`ServedModel` reads that folder and predicts. This file imports nothing else of Refit, on
purpose: MLflow ships it inside every logged model (``code_paths``, as ``refit_served.py``) and the
model's entry point (:mod:`ml_tasks.registry.model_code`) imports it from there, so
``mlflow.pyfunc.load_model("models:/credit_default@champion")`` works in an environment holding
only the model's logged requirements (mlflow, numpy, pandas, and lightgbm for trees; not torch,
scikit-learn or Refit). Refit's own classes use the same functions where they predict (the
categorical codes, the network's inputs and forward pass, the calibrators' maps), so what the gate
measured is what a consumer is served.

Written here rather than taken from a library: MLflow's native flavors pickle the estimator's
classes (``mlflow.sklearn``, ``mlflow.pytorch``), which for Refit's candidates means Refit's
classes, and none of them carries a calibrator; LightGBM's model file is used as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: The served state's format; a reader refuses a newer one rather than misread it.
FORMAT = 1
#: What a missing categorical becomes for the logistic regression's one-hot columns.
MISSING = "<missing>"
#: Probabilities are clipped this far from 0 and 1 before taking logits (see the calibrators).
LOGIT_CLIP = 1e-12
DESCRIPTION = "model.json"
LIGHTGBM_FILE = "lightgbm.txt"
NETWORK_FILE = "network.npz"


# -- shared arithmetic ------------------------------------------------------------------------------

def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with p clipped to ``[LOGIT_CLIP, 1 - LOGIT_CLIP]``, written as
    ``log(p) - log1p(-p)`` so that probabilities near 1 keep their resolution."""
    p = np.clip(np.asarray(p, dtype=float), LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def expit(z: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow warnings for large ``|z|``."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def frozen_codes(values: pd.Series, categories: list[str]) -> np.ndarray:
    """Positions of ``values`` in ``categories`` frozen at fit time, compared as text; -1 for a
    missing or unseen value. Factorising first maps each distinct value once, not each row."""
    codes, uniques = pd.factorize(values)
    positions = pd.Index(categories).get_indexer(pd.Index(uniques).astype(str))
    return np.where(codes >= 0, positions[np.maximum(codes, 0)] if len(positions) else -1, -1).astype(np.int64)


def numeric_matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The columns as float64 ``(n, p)``; missing values (None, NaN) as NaN."""
    if not columns:
        return np.zeros((len(frame), 0))
    return frame[columns].to_numpy(dtype="float64", na_value=np.nan)


def network_inputs(frame: pd.DataFrame, encoder: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The network's inputs: numerics imputed with the training medians (inf counts as missing),
    standardised and rounded to float32 as training saw them; categoricals as 1-based codes with
    0 for a missing or unseen value. ``(numeric float32 (n, p), codes int64 (n, c))``."""
    raw = numeric_matrix(frame, encoder["numeric"])
    raw = np.where(np.isfinite(raw), raw, np.nan)
    imputed = np.where(np.isnan(raw), np.asarray(encoder["medians"], dtype=float), raw)
    numeric = ((imputed - np.asarray(encoder["means"], dtype=float))
               / np.asarray(encoder["stds"], dtype=float)).astype(np.float32)
    codes = np.zeros((len(frame), len(encoder["categorical"])), dtype=np.int64)
    for j, name in enumerate(encoder["categorical"]):
        codes[:, j] = frozen_codes(frame[name], encoder["vocab"][name]) + 1
    return numeric, codes


def network_logits(weights: dict[str, np.ndarray], numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The network's forward pass in float64: embeddings (``embeddings.<j>.weight``) next to the
    numerics, each ``body.<i>`` Linear followed by ReLU (dropout is off when predicting), then
    ``head``. The names are the PyTorch module's ``state_dict`` keys."""
    parts = [numeric.astype(np.float64)]
    j = 0
    while f"embeddings.{j}.weight" in weights:
        parts.append(weights[f"embeddings.{j}.weight"].astype(np.float64)[codes[:, j]])
        j += 1
    hidden = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    layers = sorted({int(name.split(".")[1]) for name in weights if name.startswith("body.")})
    for index in layers:
        hidden = hidden @ weights[f"body.{index}.weight"].astype(np.float64).T + weights[f"body.{index}.bias"]
        hidden = np.maximum(hidden, 0.0)
    logits: np.ndarray = (hidden @ weights["head.weight"].astype(np.float64).T).reshape(-1) + float(
        weights["head.bias"].reshape(-1)[0])
    return logits


def calibrate(p: np.ndarray, calibrator: dict[str, Any]) -> np.ndarray:
    """A calibrator's map (``method`` and its parameters, :mod:`ml_tasks.models.calibrators`)."""
    method = calibrator["method"]
    if method == "none":
        return np.asarray(p, dtype=float)
    if method == "temperature":
        return expit(logit(p) / calibrator["temperature"])
    if method == "sigmoid":
        return expit(calibrator["slope"] * logit(p) + calibrator["intercept"])
    if method == "isotonic":
        # Linear between the fitted points, clipped outside them (IsotonicRegression's clip mode),
        # then kept within [clip, 1 - clip].
        x, y = np.asarray(calibrator["x"], dtype=float), np.asarray(calibrator["y"], dtype=float)
        flat = np.asarray(p, dtype=float).reshape(-1)
        return np.clip(np.interp(flat, x, y), calibrator["clip"], 1.0 - calibrator["clip"]).reshape(np.shape(p))
    raise ValueError(f"calibrator: unknown method {method!r} (a newer Refit wrote this model?)")


# -- the served model -------------------------------------------------------------------------------

def write_state(folder: Path, description: dict[str, Any]) -> Path:
    """Write ``model.json`` into ``folder`` (the family's files are already there); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DESCRIPTION
    path.write_text(json.dumps({"format": FORMAT, **description}, indent=1))
    return path


class ServedModel:
    """A fitted model read back from its served state: ``probability(frame)`` is P(label = 1).

    ``frame`` holds the feature columns (numerics as numbers, categoricals as text or None);
    other columns are ignored, a missing one is an error naming it.
    """

    def __init__(self, description: dict[str, Any], folder: Path) -> None:
        if description.get("format", 0) > FORMAT:
            raise ValueError(f"{folder / DESCRIPTION}: format {description.get('format')} is newer than this "
                             f"reader's {FORMAT}; load it with the Refit release that wrote it")
        self.description, self.folder = description, folder
        self.family: str = description["family"]
        self.numeric: list[str] = description["features"]["numeric"]
        self.categorical: list[str] = description["features"]["categorical"]
        self._booster: Any = None
        self._weights: dict[str, np.ndarray] | None = None

    @classmethod
    def load(cls, folder: str | Path) -> ServedModel:
        folder = Path(folder)
        return cls(json.loads((folder / DESCRIPTION).read_text()), folder)

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [name for name in self.numeric + self.categorical if name not in frame.columns]
        if missing:
            raise ValueError(f"model input: missing feature column(s) {missing}; "
                             f"expected {self.numeric + self.categorical}")
        raw = getattr(self, f"_{self.family}")(frame, self.description["model"])
        return calibrate(raw, self.description["calibrator"])

    def _prior(self, frame: pd.DataFrame, model: dict[str, Any]) -> np.ndarray:
        return np.full(len(frame), float(model["rate"]))

    def _logistic_regression(self, frame: pd.DataFrame, model: dict[str, Any]) -> np.ndarray:
        """Median-imputed, standardised numerics and one-hot categoricals (an unseen value: no
        column), times the coefficients, plus the intercept."""
        raw = numeric_matrix(frame, self.numeric)
        imputed = np.where(np.isnan(raw), np.asarray(model["medians"], dtype=float), raw)
        scaled = (imputed - np.asarray(model["means"], dtype=float)) / np.asarray(model["scales"], dtype=float)
        z = scaled @ np.asarray(model["numeric_coefficients"], dtype=float) + float(model["intercept"])
        for name in self.categorical:
            text = frame[name].astype(object).where(frame[name].notna(), MISSING).astype(str)
            codes = frozen_codes(text, model["categories"][name])
            coefficients = np.append(np.asarray(model["categorical_coefficients"][name], dtype=float), 0.0)
            z = z + coefficients[codes]  # code -1 picks the appended 0: an unseen value adds nothing
        return expit(z)

    def _lightgbm(self, frame: pd.DataFrame, model: dict[str, Any]) -> np.ndarray:
        if self._booster is None:
            import lightgbm

            self._booster = lightgbm.Booster(model_file=str(self.folder / LIGHTGBM_FILE))
        return np.asarray(self._booster.predict(lightgbm_frame(frame, self.numeric, model["categories"]),
                                                num_iteration=model["best_iteration"]), dtype=float)

    def _torch_mlp(self, frame: pd.DataFrame, model: dict[str, Any]) -> np.ndarray:
        if self._weights is None:
            with np.load(self.folder / NETWORK_FILE) as arrays:
                self._weights = {name: arrays[name] for name in arrays.files}
        return expit(network_logits(self._weights, *network_inputs(frame, model["encoder"])))


def lightgbm_frame(frame: pd.DataFrame, numeric: list[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    """LightGBM's input: numerics as float64, categoricals coded against the frozen categories
    (an unseen value is missing), column by column without copying the numerics."""
    columns: dict[str, Any] = {name: frame[name].astype("float64") for name in numeric}
    for name, known in categories.items():
        columns[name] = pd.Categorical.from_codes(frozen_codes(frame[name], known), categories=known)
    return pd.DataFrame(columns, index=frame.index)
