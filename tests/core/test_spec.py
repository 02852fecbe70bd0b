"""The model spec rejects bad input with a message naming the field."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from ml_tasks.core.spec import SpecError, discover_specs, load_spec, query_texts, spec_hash
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
        (lambda r: r["features"]["numeric"].append("defaulted"),
         "field 'features.numeric.9': 'defaulted' is columns.label and cannot be a feature"),
        (lambda r: r["acceptance"]["thresholds"].update(accuracy={"min": 0.9}), "unknown metric 'accuracy'"),
        (lambda r: r["split"].update(validation_fraction=0.4, test_fraction=0.4), "at least 40% for training"),
        (lambda r: r["source"].update(streams=[{"name": "recent", "query_file": "a.sql", "weight": 1}]),
         "field 'source': expected either query_file or streams"),
        (lambda r: r["source"].update(query_file=None,
                                      streams=[{"name": "recent", "query_file": "a.sql", "weight": 0}]),
         "field 'source.streams.0.weight': Input should be greater than 0"),
        (lambda r: r["sampling"].update(label_shares={2: 0.5}),
         "field 'sampling.label_shares.2': 2 is not in columns.label_values [0, 1]"),
        (lambda r: r["sampling"].update(label_shares={1: 1.5}), "every share must be within [0, 1]"),
        (lambda r: r["sampling"].update(size=0), "field 'sampling.size'"),
        (lambda r: r["sampling"].update(segments=["income"]),
         "field 'sampling.segments.0': 'income' must be a categorical feature"),
        (lambda r: r["acceptance"]["champion"][0].update(mode="better"), "field 'acceptance.champion.0.mode'"),
        (lambda r: r["acceptance"]["champion"][0].update(metric="f1"), "unknown metric 'f1'"),
        (lambda r: r["acceptance"]["slices"].update(columns=["income"]),
         "field 'acceptance.slices.columns.0': 'income' must be a categorical feature"),
        (lambda r: r["acceptance"]["backtest"].update(require_significance=True),
         "field 'acceptance.backtest.require_significance': the one-sided sign test (acceptance.backtest.test) "
         "can never reach alpha=0.05 with backtest.folds=4"),
        # Crons are parsed by croniter, as Airflow's cron timetables parse them: the shape alone is not enough.
        (lambda r: r.update(schedule="99 99 99 99 99"), "field 'schedule': expected a 5-field cron expression"),
        (lambda r: r.update(schedule="*/0 * * * *"), "step '0' in field 0 is not acceptable"),
        (lambda r: r.update(schedule="0 0 * * 8"), "[0 0 * * 8] is not acceptable, out of range"),
        (lambda r: r.update(schedule="0 0 31 2 *"), "field 'schedule': '0 0 31 2 *' never fires"),
        # Numbers are written as numbers: a boolean or a string is never read as one.
        (lambda r: r["sampling"].update(size=True), "field 'sampling.size': Input should be a valid integer, got True"),
        (lambda r: r["sampling"].update(size=2000.5), "field 'sampling.size': Input should be a valid integer"),
        (lambda r: r["sampling"].update(size=50), "field 'sampling.size': Input should be greater than or equal"),
        (lambda r: r["validation"].update(min_rows=True), "field 'validation.min_rows': Input should be a valid"),
        (lambda r: r["validation"].update(max_null_rate=True), "field 'validation.max_null_rate': Input should be a "
                                                               "valid number, got True"),
        (lambda r: r["trainer"].update(gpus="2"), "field 'trainer.gpus': Input should be a valid integer, got '2'"),
        (lambda r: r["backtest"].update(folds=False), "field 'backtest.folds': Input should be a valid integer"),
        (lambda r: r["sampling"].update(label_shares={True: 0.3}), "field 'sampling.label_shares."),
        (lambda r: r["columns"].update(label_values=[True, False]), "field 'columns.label_values': expected [0, 1]"),
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
    budgeted = demo_spec.model_copy(update={"trainer": demo_spec.trainer.model_copy(update={"cpus": 4})})
    assert spec_hash(budgeted, "SELECT 1") != base


#: The demo spec's recipe hash from before any field was added: its run keys, and so which
#: intervals already have a champion, depend on it.
DEMO_SPEC_HASH = "19818208b05ce96c"


def test_fields_added_since_leave_the_demo_specs_hash_as_it_was(demo_spec):
    assert spec_hash(demo_spec, query_texts(demo_spec, DEMO_SPEC.parents[1])) == DEMO_SPEC_HASH


@pytest.mark.parametrize("schedule", ["@daily", "@once", "@quarterly", "0 3 1 * *", "*/15 2-5 * * 1-5",
                                      "0 6 * * MON-FRI", "0 0 L * *", "0 0 29 2 *"])
def test_presets_and_crons_that_fire_load(tmp_path, schedule):
    assert load_spec(write_variant(tmp_path, lambda r: r.update(schedule=schedule))).schedule == schedule


def test_an_integer_where_a_float_is_meant_loads_as_that_number(tmp_path):
    # Strict types reject booleans and strings, not YAML's "3" for a ratio of 3.0.
    spec = load_spec(write_variant(tmp_path, lambda r: r["acceptance"].update(guardrails={"max_latency_ratio": 3})))
    assert spec.acceptance.guardrails.max_latency_ratio == 3.0
    assert isinstance(spec.model_dump()["acceptance"]["guardrails"]["max_latency_ratio"], float)


def test_how_runs_are_operated_is_no_part_of_the_recipe(demo_spec):
    """Promotion, its approval timeout, stage timeouts and the trainer's queue change no run key."""
    base = spec_hash(demo_spec, "SELECT 1")
    operated = demo_spec.model_copy(update={
        "promotion": "always_approve", "approval_timeout_hours": 2.5, "timeouts": {"train": 30.0},
        "approvers": ["alice"],
        "trainer": demo_spec.trainer.model_copy(update={"queue": "gpu"})})
    assert spec_hash(operated, "SELECT 1") == base
    assert (demo_spec.promotion, demo_spec.approval_timeout_hours, demo_spec.timeouts) == ("auto", 24.0, {})


@pytest.mark.parametrize(("change", "field", "says"), [
    (lambda r: r.update(promotion="ask_bob"), "promotion", "'auto', 'approve_on_fail' or 'always_approve'"),
    (lambda r: r.update(approval_timeout_hours=0), "approval_timeout_hours", "greater than 0"),
    (lambda r: r.update(timeouts={"training": 30}), "timeouts.training.[key]", "'default', 'plan'"),
    (lambda r: r.update(timeouts={"train": -1}), "timeouts.train", "greater than 0"),
    (lambda r: r.update(timeouts={"train": 20_000}), "timeouts.train", "less than or equal to 10080"),
    (lambda r: r["trainer"].update(queue="gpu queue"), "trainer.queue", "should match pattern"),
    (lambda r: r.update(approvers=["alice"]), "approvers", "promotion 'auto' asks no one"),
    (lambda r: r.update(promotion="always_approve", approvers=["al ice"]), "approvers.0", "should match pattern"),
    (lambda r: r.update(promotion="always_approve", approvers=["bob", "bob"]), "approvers", "more than once"),
])
def test_operating_settings_are_checked_at_their_field(tmp_path, change, field, says):
    with pytest.raises(SpecError, match=re.escape(f"field '{field}'")) as raised:
        load_spec(write_variant(tmp_path, change))
    assert says in str(raised.value)


def test_operating_settings_load(tmp_path):
    spec = load_spec(write_variant(tmp_path, lambda r: r.update(
        promotion="approve_on_fail", approval_timeout_hours=None, timeouts={"train": 90, "default": 10},
        approvers=["alice", "7"])))
    assert (spec.promotion, spec.approval_timeout_hours, spec.timeouts, spec.approvers) == (
        "approve_on_fail", None, {"train": 90.0, "default": 10.0}, ["alice", "7"])
