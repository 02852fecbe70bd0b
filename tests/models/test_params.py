"""The families read their params through the spec's schemas (``ml_tasks.core.spec.families``):
what a schema documents is what the model trains with, and a bad name fails when the model is
built, before any data is read."""

from __future__ import annotations

import re
from dataclasses import asdict, fields

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.spec import FeaturesSpec, LightGBMParamsSpec, TorchMLPParamsSpec
from ml_tasks.models import LightGBMCandidate, LogisticRegressionCandidate, PriorCandidate

FEATURES = FeaturesSpec(numeric=["a", "b"], categorical=["c"])
#: LightGBM's own name for each schema param it receives (the schema uses its scikit-learn names).
NATIVE = {"learning_rate": "learning_rate", "num_leaves": "num_leaves", "max_depth": "max_depth",
          "min_child_samples": "min_data_in_leaf", "min_child_weight": "min_sum_hessian_in_leaf",
          "subsample": "bagging_fraction", "subsample_freq": "bagging_freq", "colsample_bytree": "feature_fraction",
          "reg_alpha": "lambda_l1", "reg_lambda": "lambda_l2", "min_split_gain": "min_gain_to_split"}


def frame(rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows),
                      "c": rng.choice(["x", "y", "z"], size=rows)})
    return X, (X["a"] + 0.5 * (X["c"] == "x") + rng.normal(size=rows) > 0.3).to_numpy(dtype=int)


def trained_params(booster: lgb.Booster) -> dict[str, str]:
    text = booster.model_to_string()
    return dict(re.findall(r"\[(\w+): ([^\]]*)\]", text[text.index("parameters:"):]))


def test_every_lightgbm_param_the_schema_names_but_refits_own_is_a_native_one():
    assert set(LightGBMParamsSpec.model_fields) - set(NATIVE) == set(LightGBMCandidate._REFIT_PARAMS)


def test_lightgbms_documented_defaults_are_the_ones_it_trains_with_when_a_param_is_left_unset():
    X, y = frame()
    used = trained_params(LightGBMCandidate(FEATURES, {"n_estimators": 3}).fit(X, y).booster_)
    for name, native in NATIVE.items():
        assert float(used[native]) == LightGBMParamsSpec.model_fields[name].default, name


def test_every_lightgbm_param_a_spec_sets_reaches_lightgbm_under_its_native_name():
    X, y = frame()
    chosen = {"learning_rate": 0.07, "num_leaves": 9, "max_depth": 5, "min_child_samples": 13,
              "min_child_weight": 0.01, "subsample": 0.8, "subsample_freq": 2, "colsample_bytree": 0.5,
              "reg_alpha": 0.3, "reg_lambda": 0.4, "min_split_gain": 0.02}
    used = trained_params(LightGBMCandidate(FEATURES, {**chosen, "n_estimators": 3}).fit(X, y).booster_)
    assert {name: float(used[NATIVE[name]]) for name in chosen} == chosen


def test_lightgbm_trains_exactly_as_a_bare_lightgbm_call_with_the_spec_params():
    # The demo spec's params: the same trees as lightgbm.train given them under LightGBM's names.
    X, y = frame(2_000)
    Xv, yv = frame(500, seed=1)
    spec_params = {"learning_rate": 0.05, "num_leaves": 15, "n_estimators": 400, "min_child_samples": 40,
                   "num_threads": 1}
    model = LightGBMCandidate(FEATURES, spec_params, seed=7).fit(X, y, None, Xv, yv, None)
    dataset = model._dataset_frame
    bare = {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 40, "objective": "binary", "seed": 7,
            "deterministic": True, "verbosity": -1, "num_threads": 1}
    train = lgb.Dataset(dataset(X), label=y, categorical_feature=["c"], free_raw_data=False)
    valid = lgb.Dataset(dataset(Xv), label=yv, reference=train, categorical_feature=["c"])
    booster = lgb.train(bare, train, num_boost_round=400, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(50, verbose=False)])
    assert model.best_iteration_ == booster.best_iteration
    np.testing.assert_array_equal(model.predict_proba(Xv)[:, 1],
                                  booster.predict(dataset(Xv), num_iteration=booster.best_iteration))


@pytest.mark.parametrize(("family", "params", "expected"), [
    (PriorCandidate, {"C": 1.0}, "prior: param 'C': unknown parameter: prior takes no parameters"),
    (LogisticRegressionCandidate, {"penalty": "l1"}, "logistic_regression: param 'penalty': unknown parameter"),
    (LogisticRegressionCandidate, {"C": -1.0}, "logistic_regression: param 'C': Input should be greater than 0"),
    (LightGBMCandidate, {"num_boost_round": 10}, "lightgbm: param 'num_boost_round': unknown parameter of lightgbm "
                                                 "(write n_estimators, the name Refit uses)"),
])
def test_a_family_refuses_a_bad_param_when_built_before_any_data(family, params, expected):
    with pytest.raises(ValueError) as error:
        family(FEATURES, params)
    assert str(error.value).startswith(expected)


def test_the_logistic_baseline_takes_c_and_max_iter_from_the_schema():
    X, y = frame()
    model = LogisticRegressionCandidate(FEATURES, {"C": 0.5}).fit(X, y)
    classifier = model.pipeline_.named_steps["classifier"]
    assert (classifier.C, classifier.max_iter) == (0.5, 2000)


def test_the_networks_params_are_the_schemas_fields_with_the_schemas_defaults():
    from ml_tasks.models.network import TorchMLPParams

    assert [f.name for f in fields(TorchMLPParams)] == list(TorchMLPParamsSpec.model_fields)
    assert TorchMLPParamsSpec().resident == "auto"
    assert asdict(TorchMLPParams.from_spec({})) == {**TorchMLPParamsSpec().model_dump(), "resident": None}
