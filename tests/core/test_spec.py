"""The model spec rejects bad input with a message naming the field."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import yaml

from ml_tasks.core.spec import SpecError, discover_specs, load_spec, spec_hash
from tests.conftest import DEMO_SPEC


def write_variant(tmp_path, change) -> str:
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    change(raw)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_shipped_spec_is_valid():
    specs = discover_specs(DEMO_SPEC.parent)
    assert specs, "include/models holds no spec"
    for path in specs:
        spec = load_spec(path)
        assert spec.candidates and spec.features.all


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.update(scheduel="@daily"), "field 'scheduel': unknown field"),
        (lambda r: r.update(schedule="every monday"), "field 'schedule': expected a 5-field cron"),
        (lambda r: r.pop("registry_name"), "field 'registry_name': required field is missing"),
        (lambda r: r["candidates"][1].update(family="xgboost"), "field 'candidates.1.family'"),
        (lambda r: r["candidates"].append(copy.deepcopy(r["candidates"][0])), "names must be unique"),
        (lambda r: r["features"]["numeric"].append("defaulted"), "cannot be features"),
        (lambda r: r["acceptance"]["thresholds"].update(accuracy={"min": 0.9}), "unknown metric 'accuracy'"),
        (lambda r: r["split"].update(validation_fraction=0.4, test_fraction=0.4), "at least 40% for training"),
        (lambda r: r["source"].update(streams=[{"name": "recent", "query_file": "a.sql", "weight": 1}]),
         "field 'source': expected either query_file or streams"),
        (lambda r: r["source"].update(query_file=None,
                                      streams=[{"name": "recent", "query_file": "a.sql", "weight": 0}]),
         "field 'source.streams.0.weight': Input should be greater than 0"),
        (lambda r: r["sampling"].update(label_shares={2: 0.5}), "sampling.label_shares: [2] are not in"),
        (lambda r: r["sampling"].update(label_shares={1: 1.5}), "every share must be within [0, 1]"),
        (lambda r: r["sampling"].update(size=0), "field 'sampling.size'"),
        (lambda r: r["sampling"].update(segments=["income"]), "must be categorical features"),
        (lambda r: r["acceptance"]["champion"][0].update(mode="better"), "field 'acceptance.champion.0.mode'"),
        (lambda r: r["acceptance"]["champion"][0].update(metric="f1"), "unknown metric 'f1'"),
        (lambda r: r["acceptance"]["slices"].update(columns=["income"]),
         "acceptance.slices.columns: ['income'] must be"),
        (lambda r: r["acceptance"]["backtest"].update(require_significance=True),
         "with backtest.folds=4 the fold test can never reach alpha=0.05; it needs at least 5"),
    ],
)
def test_bad_spec_names_the_field(tmp_path, change, expected):
    with pytest.raises(SpecError) as error:
        load_spec(write_variant(tmp_path, change))
    assert expected in str(error.value)
    assert "variant.yaml" in str(error.value)


def test_missing_file_and_non_mapping_are_clear(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(tmp_path / "list.yaml")


def test_spec_hash_changes_with_spec_or_query(demo_spec):
    base = spec_hash(demo_spec, "SELECT 1")
    assert base == spec_hash(demo_spec, "SELECT 1")
    assert base != spec_hash(demo_spec, "SELECT 2")
    other = demo_spec.model_copy(update={"selection_metric": "log_loss"})
    assert base != spec_hash(other, "SELECT 1")
    # A field added later hashes, while unset, exactly as before it existed (run keys survive the
    # upgrade); setting it is a new recipe.
    before = demo_spec.model_dump(mode="json")
    del before["trainer"]["cpus"]
    canonical = json.dumps(before, sort_keys=True) + "\nSELECT 1"
    assert base == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    budgeted = demo_spec.model_copy(update={"trainer": demo_spec.trainer.model_copy(update={"cpus": 4})})
    assert spec_hash(budgeted, "SELECT 1") != base
