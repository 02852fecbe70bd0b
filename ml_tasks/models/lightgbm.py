"""LightGBM: gradient-boosted trees with native categoricals, early stopping and warm start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd

from ml_tasks.core.resources import trainer_threads
from ml_tasks.core.spec import FeaturesSpec, LightGBMParamsSpec
from ml_tasks.models.base import Candidate, category_vocabulary
from ml_tasks.models.served import LIGHTGBM_FILE, lightgbm_frame

if TYPE_CHECKING:
    import lightgbm as lgb


class LightGBMCandidate(Candidate):
    """Gradient-boosted trees with native categoricals and early stopping on the validation split."""

    family = LightGBMParamsSpec.family
    supports_warm_start = True
    reports_steps = True
    #: Spec names LightGBM's ``train`` knows by another name (the others are its aliases already).
    _RENAMED: dict[str, str] = {"min_child_samples": "min_data_in_leaf"}
    #: Spec params that steer Refit's call rather than being passed to LightGBM.
    _REFIT_PARAMS = ("n_estimators", "early_stopping_rounds", "num_threads")

    # Set by fit: the frozen categories, the trees, how many of them predict, and whether they
    # continued the champion's.
    categories_: dict[str, list[str]]
    booster_: lgb.Booster
    best_iteration_: int
    warm_started_: bool

    def __init__(self, features: FeaturesSpec, params: dict[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(features, params, seed)
        LightGBMParamsSpec.of(self.params)  # fail on a bad param before any data is read

    def _native_params(self) -> tuple[dict[str, Any], int, int]:
        """LightGBM's params (those the spec sets, under LightGBM's names), the most rounds and the
        early-stopping patience. Unset parameters are left to LightGBM's own defaults."""
        spec = LightGBMParamsSpec.of(self.params)
        params = {self._RENAMED.get(name, name): getattr(spec, name)
                  for name in self.params if name not in self._REFIT_PARAMS}
        params.update(objective="binary", seed=self.seed, deterministic=True, verbosity=-1,
                      num_threads=spec.num_threads or trainer_threads())
        return params, spec.n_estimators, spec.early_stopping_rounds

    def _dataset_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        # Built column by column without copying the numerics: conversion is the only overhead
        # over a bare lightgbm.train (bench/bench_lightgbm.py keeps it under 10 %). The served
        # form builds the same frame.
        return lightgbm_frame(X, self.numeric, {name: self.categories_[name] for name in self.categorical})

    def fit(self, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None,
            X_valid: pd.DataFrame | None = None, y_valid: np.ndarray | None = None,
            w_valid: np.ndarray | None = None) -> Self:
        import lightgbm as lgb

        champion = self._take_warm_start()
        on_step = self._take_on_step()
        # Warm start keeps the champion's category codes, or its trees would split on other values.
        self.categories_ = (dict(champion.categories_) if champion is not None else
                            {n: category_vocabulary(X[n]) for n in self.categorical})
        params, rounds, stopping = self._native_params()
        train = lgb.Dataset(self._dataset_frame(X), label=np.asarray(y), weight=sample_weight,
                            categorical_feature=self.categorical, free_raw_data=False)
        valid_sets: list[lgb.Dataset] = []
        callbacks: list[Callable[..., Any]] = []
        if X_valid is not None:
            valid_sets = [lgb.Dataset(self._dataset_frame(X_valid), label=np.asarray(y_valid), weight=w_valid,
                                      reference=train, categorical_feature=self.categorical)]
            callbacks = [lgb.early_stopping(stopping, verbose=False)]
            if on_step is not None:
                callbacks.append(_reporting(on_step))
        init_model = None
        if champion is not None:
            # Continue from the champion's chosen trees; ``rounds`` more at most, early stopping still applies.
            chosen = champion.booster_.model_to_string(num_iteration=champion.best_iteration_)
            init_model = lgb.Booster(model_str=chosen)
        self.booster_ = lgb.train(params, train, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks,
                                  init_model=init_model)
        # best_iteration counts the champion's trees too, so it is the right cut for predict.
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        self.warm_started_ = champion is not None
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.booster_.predict(self._dataset_frame(X), num_iteration=self.best_iteration_)
        return self._two_columns(np.asarray(p))

    def served_state(self, folder: Path) -> dict[str, Any]:
        """LightGBM's own model file (every tree; ``best_iteration`` says how many predict) and
        the frozen categories."""
        self.booster_.save_model(str(folder / LIGHTGBM_FILE))
        return {"best_iteration": self.best_iteration_, "categories": self.categories_,
                "warm_started": self.warm_started_}

    def restore_served(self, state: dict[str, Any], folder: Path) -> Self:
        import lightgbm as lgb

        self.booster_ = lgb.Booster(model_file=str(folder / LIGHTGBM_FILE))
        self.best_iteration_, self.categories_ = int(state["best_iteration"]), dict(state["categories"])
        self.warm_started_ = bool(state.get("warm_started", False))
        return self


def _reporting(on_step: Callable[[int, float], None]) -> Callable[..., None]:
    """A LightGBM callback handing ``on_step`` each round's validation log loss (the binary
    objective's metric, weighted by the validation weights); rounds count from 1 after a warm
    start's champion trees."""

    def report(env: Any) -> None:
        for data, metric, value, _ in env.evaluation_result_list:
            if data == "valid_0" and metric == "binary_logloss":
                on_step(env.iteration - env.begin_iteration + 1, float(value))

    return report
