"""Spec errors arrive before any data is read, all at once, each at its real field (issue 15,
problem 9), and a required fold test that can never reach significance is refused at load
(the spec side of problem 8).

Real spec files through the real loader and the real ``plan`` stage; nothing is mocked.
"""

from __future__ import annotations

import pytest
import yaml

from ml_tasks import pipeline
from ml_tasks.core.spec import SpecError, load_spec
from ml_tasks.evaluation.statistics import fold_consistency
from tests.conftest import DEMO_SPEC
from tests.core.test_spec import write_variant

NET = {"name": "net", "family": "torch_mlp", "params": {"hidden": "64,32", "epochs": 5}}


def refused(tmp_path, change) -> str:
    with pytest.raises(SpecError) as error:
        load_spec(write_variant(tmp_path, change))
    return str(error.value)


def test_9_an_unknown_candidate_param_is_refused_at_load_naming_its_field_and_the_familys_params(tmp_path):
    message = refused(tmp_path, lambda raw: raw["candidates"].append(NET))
    assert "variant.yaml" in message
    assert ("field 'candidates.2.params.epochs': unknown parameter of torch_mlp (did you mean 'max_epochs'?); "
            "expected one of ['batch_size', 'bf16', 'compile', 'device', 'dropout', 'embedding_dim', 'hidden', 'lr', "
            "'max_epochs', 'min_delta', 'one_batch_check', 'patience', 'resident', 'weight_decay']") in message


def test_9_the_plan_stage_refuses_a_bad_param_before_any_data_is_read(tmp_path, refit_home, monkeypatch):
    # No warehouse at all: extraction would fail loudly; the spec must fail first, and write nothing.
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'absent' / 'none.db'}")
    spec = write_variant(tmp_path, lambda raw: raw["candidates"][1]["params"].update(num_boost_round=100))
    with pytest.raises(SpecError, match=r"field 'candidates\.1\.params\.num_boost_round': unknown parameter of "
                                        r"lightgbm \(write n_estimators, the name Refit uses\)"):
        pipeline.plan_run(str(spec), "2024-06-01")
    assert not (refit_home.home / "artifacts").exists() or not any((refit_home.home / "artifacts").rglob("*.json"))


@pytest.mark.parametrize(("candidate", "expected"), [
    ({"name": "p", "family": "prior", "params": {"C": 1.0}},
     "field 'candidates.2.params.C': unknown parameter: prior takes no parameters"),
    ({"name": "lr2", "family": "logistic_regression", "params": {"C": 0}},
     "field 'candidates.2.params.C': Input should be greater than 0, got 0"),
    ({"name": "gbm2", "family": "lightgbm", "params": {"num_leaves": 1}},
     "field 'candidates.2.params.num_leaves': Input should be greater than or equal to 2, got 1"),
    ({"name": "gbm2", "family": "lightgbm", "params": {"learning_rate": "fast"}},
     "field 'candidates.2.params.learning_rate': Input should be a valid number, got 'fast'"),
    ({"name": "gbm2", "family": "lightgbm", "params": {"n_estimators": 2.5}},
     "field 'candidates.2.params.n_estimators': Input should be a valid integer, got 2.5"),
    ({"name": "net", "family": "torch_mlp", "params": {"hidden": "64,x"}},
     "field 'candidates.2.params.hidden': expected layer widths as whole numbers separated by commas, such as "
     "'256,128', got '64,x'"),
    ({"name": "net", "family": "torch_mlp", "params": {"device": "gpu"}},
     "field 'candidates.2.params.device': expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ({"name": "net", "family": "torch_mlp", "params": {"resident": "sometimes"}},
     "field 'candidates.2.params.resident': expected true, false or auto, got 'sometimes'"),
])
def test_9_each_familys_params_are_typed_and_ranged_at_load(tmp_path, candidate, expected):
    assert expected in refused(tmp_path, lambda raw: raw["candidates"].append(candidate))


def test_9_a_search_space_is_checked_against_its_family(tmp_path):
    def searched(raw):
        raw["candidates"][1]["search"] = {
            "num_leaves": {"low": 7, "high": 63},              # a whole number drawn as a float
            "learning_rate": {"low": 0.0, "high": 0.3},         # 0 is no learning rate
            "min_child_samples": [10, -1],                      # one listed value out of range
            "max_leaves": [7, 15],                              # LightGBM has no such parameter here
        }
    message = refused(tmp_path, searched)
    for part in ["4 problems",
                 "field 'candidates.1.search.num_leaves.integer': num_leaves is a whole number: write integer: true",
                 "field 'candidates.1.search.learning_rate.low': Input should be greater than 0, got 0.0",
                 "field 'candidates.1.search.min_child_samples.1': Input should be greater than or equal to 0, got -1",
                 "field 'candidates.1.search.max_leaves': unknown parameter of lightgbm (did you mean 'num_leaves'?)"]:
        assert part in message, part


def test_9_every_problem_of_a_spec_is_reported_at_once_each_at_its_own_field(tmp_path):
    def broken(raw):
        raw["scheduel"] = "@daily"                                   # a schema error
        raw["candidates"].append(NET)                                # a family's param
        raw["sampling"]["segments"] = ["channel", "income"]          # the checks across sections
        raw["acceptance"]["slices"]["columns"] = ["region", "age"]
        raw["validation"]["null_rate"] = {"salary": 0.1}
        raw["features"]["categorical"].append("application_id")
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    broken(raw)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # the sections in the demo spec's order
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    expected = [
        "field 'features.categorical.3': 'application_id' is columns.id and cannot be a feature",
        "field 'validation.null_rate.salary': 'salary' is not a feature",
        "field 'sampling.segments.1': 'income' must be a categorical feature",
        "field 'candidates.2.params.epochs': unknown parameter of torch_mlp",
        "field 'acceptance.slices.columns.1': 'age' must be a categorical feature",
        "field 'scheduel': unknown field (check the spelling)",
    ]
    assert message.startswith(f"spec {path}: {len(expected)} problems: ")
    positions = [message.find(part) for part in expected]
    assert all(p >= 0 for p in positions), [part for part, p in zip(expected, positions, strict=True) if p < 0]
    assert positions == sorted(positions)  # in the order the spec's sections are written
    assert "(top level)" not in message


def test_9_two_candidates_of_one_name_point_at_the_second(tmp_path):
    message = refused(tmp_path, lambda raw: raw["candidates"].append({"name": "lightgbm", "family": "prior"}))
    assert "field 'candidates.2.name': 'lightgbm' is already the name of candidates.1; names must be unique" in message


@pytest.mark.parametrize(("test", "alpha", "folds", "needed"), [("sign", 0.05, 4, 5), ("wilcoxon", 0.05, 4, 5),
                                                               ("sign", 0.02, 5, 6), ("wilcoxon", 0.01, 6, 7)])
def test_8_a_required_fold_test_that_can_never_reach_alpha_is_refused_naming_test_folds_and_folds_needed(
        tmp_path, test, alpha, folds, needed):
    # The statistics behind the rule: with every fold won the test's p-value is 2^-folds, above
    # alpha here, and at or below it with the folds the message asks for.
    assert fold_consistency([0.01] * folds, alpha=alpha, test=test).p_value > alpha
    assert fold_consistency([0.01] * needed, alpha=alpha, test=test).p_value <= alpha

    def requiring(raw, n=folds):
        raw["backtest"]["folds"] = n
        raw["acceptance"]["alpha"] = alpha
        raw["acceptance"]["backtest"] = {"metric": "roc_auc", "test": test, "require_significance": True}
    message = refused(tmp_path, requiring)
    assert (f"field 'acceptance.backtest.require_significance': the one-sided {test} test (acceptance.backtest.test) "
            f"can never reach alpha={alpha} with backtest.folds={folds}: its smallest p-value, every fold won, is "
            f"2^-{folds} = {0.5 ** folds:.4g}; it needs backtest.folds of at least {needed}") in message
    assert load_spec(write_variant(tmp_path, lambda raw: requiring(raw, needed))).backtest.folds == needed


def test_8_a_fold_test_that_is_only_reported_does_not_block_the_default_four_folds(tmp_path):
    # Without require_significance the fold check decides on the share of folds won; its test
    # cannot block a promotion, so the defaults (4 folds, a sign test) stay a valid spec.
    spec = load_spec(write_variant(tmp_path, lambda raw: raw["acceptance"]["backtest"].update(test="wilcoxon")))
    assert spec.backtest.folds == 4 and not spec.acceptance.backtest.require_significance


def test_9_a_loaded_spec_loads_again_from_its_own_dump(demo_spec):
    # What the loader accepted, written out whole (every default spelt out), is accepted again.
    assert type(demo_spec).model_validate(demo_spec.model_dump()) == demo_spec
