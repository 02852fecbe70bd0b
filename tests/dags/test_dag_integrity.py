"""DAG integrity: every spec gets a DAG that imports cleanly, is safe to schedule, and reads as the stage list."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.core.spec import SpecError, discover_specs, load_spec
from tests.conftest import DEMO_SPEC

DAGS = REPO_ROOT / "dags"
PLUGINS = REPO_ROOT / "plugins"
STAGES = ["plan", "extract", "validate", "sample", "split", "candidates", "train", "backtest_jobs", "backtest",
          "backtest_summary", "evaluate", "gate", "register", "announce_champion", "report"]

# Airflow reads its configuration at import: point it at a throwaway home first.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(PLUGINS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def include_with_specs(folder: Path, specs: dict[str, str]) -> Path:
    """A copy of ``include/`` with extra spec files (``{file name: YAML text}``) in its models folder."""
    include = folder / "include"
    shutil.copytree(REPO_ROOT / "include", include)
    for name, text in specs.items():
        (include / "models" / name).write_text(text)
    return include


def demo_spec_text(**changes) -> str:
    """The demo spec's YAML with top-level fields replaced (e.g. a new ``name``)."""
    return yaml.safe_dump(yaml.safe_load(DEMO_SPEC.read_text()) | changes)


def dagbag_of(include, monkeypatch):
    """A real DagBag of ``dags/`` reading its specs from ``include`` (REFIT_INCLUDE_DIR)."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))
    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def specs():
    return [load_spec(path) for path in discover_specs(REPO_ROOT / "include" / "models")]


def test_dags_import_without_errors_one_per_spec(dagbag, specs):
    from refit_airflow.spec_dags import SPEC_ERROR_TAG

    assert dagbag.import_errors == {}
    assert not [dag_id for dag_id, dag in dagbag.dags.items() if SPEC_ERROR_TAG in dag.tags]
    assert set(dagbag.dag_ids) == ({f"retrain_{spec.name}" for spec in specs}
                                   | {f"registry_{spec.name}" for spec in specs}
                                   | {f"score_{spec.name}" for spec in specs if spec.scoring is not None}
                                   | {f"monitor_{spec.name}" for spec in specs if spec.monitoring is not None})


def test_registry_dag_is_manual_and_asks_for_a_reason(dagbag, specs):
    for spec in specs:
        dag = dagbag.dags[f"registry_{spec.name}"]
        assert "refit" in dag.tags and all(task.retries >= 1 for task in dag.tasks)
        assert dag.schedule is None or dag.timetable.summary in {"None", None}
        assert dag.params.get_param("action").schema["enum"] == ["promote", "rollback"]
        assert dag.params.get_param("reason").schema["minLength"] >= 10


def test_every_dag_is_tagged_retried_and_scheduled_from_its_spec(dagbag, specs):
    for spec in specs:
        dag = dagbag.dags[f"retrain_{spec.name}"]
        assert "refit" in dag.tags and set(spec.tags) <= set(dag.tags)
        assert dag.max_active_runs == 1 and dag.catchup is False
        # A monitored model's retrain runs on its cron or its monitor's retrain-trigger Asset.
        cron = dag.timetable.timetable if spec.monitoring is not None else dag.timetable
        assert cron.expression == spec.schedule
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retry"


def test_tasks_run_in_stage_order(dagbag):
    dag = dagbag.dags["retrain_credit_default"]
    order = [task.task_id for task in dag.topological_sort()]
    assert sorted(order) == sorted(STAGES)
    positions = {task_id: order.index(task_id) for task_id in STAGES}
    chain = ["plan", "extract", "validate", "sample", "split", "train", "evaluate", "gate", "register", "report"]
    assert [positions[s] for s in chain] == sorted(positions[s] for s in chain)
    backtest = ["train", "backtest_jobs", "backtest", "backtest_summary", "gate"]
    assert [positions[s] for s in backtest] == sorted(positions[s] for s in backtest)
    assert "validate" in dag.get_task("sample").upstream_task_ids
    assert dag.get_task("announce_champion").upstream_task_ids == {"register"}  # the Asset follows registration


@pytest.mark.parametrize(
    ("name", "value"),
    [("sample_size", 5), ("sample_size", "lots"), ("candidates", ["xgboost"]), ("candidates", []),
     ("as_of", "next tuesday"), ("dry_run", "yes")],
)
def test_trigger_form_rejects_bad_values(dagbag, name, value):
    from airflow.sdk.exceptions import ParamValidationError

    param = dagbag.dags["retrain_credit_default"].params.get_param(name)
    with pytest.raises(ParamValidationError):
        param.resolve(value)


def test_trigger_form_accepts_good_values(dagbag):
    params = dagbag.dags["retrain_credit_default"].params
    assert params.get_param("as_of").resolve("2024-05-01") == "2024-05-01"
    assert params.get_param("as_of").resolve(None) is None
    assert params.get_param("candidates").resolve(["lightgbm"]) == ["lightgbm"]
    assert params.get_param("sample_size").resolve(5_000) == 5_000


@pytest.mark.parametrize("dag_file", ["refit_retrain.py", "refit_registry.py", "refit_score.py", "refit_monitor.py"])
def test_parsing_the_dags_does_not_import_mlflow(dag_file):
    code = (f"import sys, json; sys.path.insert(0, {str(PLUGINS)!r}); import runpy; "
            f"runpy.run_path({str(DAGS / dag_file)!r}); print(json.dumps('mlflow' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_the_score_dag_plans_then_scores_on_its_cron_or_the_champion_asset(dagbag):
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag.dags["score_credit_default"]
    assert [task.task_id for task in dag.topological_sort()] == ["plan", "score"]
    assert "refit" in dag.tags and "score" in dag.tags and all(task.retries >= 1 for task in dag.tasks)
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert isinstance(dag.timetable, AssetOrTimeSchedule)  # spec: schedule and on_champion
    assert dag.timetable.timetable.expression == "0 5 1 * *"
    assert [asset.uri for asset in dag.timetable.asset_condition.objects] == ["refit://credit_default/champion"]


@pytest.mark.parametrize(("scoring", "expected"), [
    ({"schedule": "0 4 * * *"}, "cron"),
    ({"on_champion": True}, "asset"),
    ({"schedule": "@daily", "on_champion": True}, "both"),
    ({}, "manual"),
])
def test_a_score_dag_runs_on_what_its_spec_asks_for(scoring, expected):
    from airflow.sdk import Asset, AssetOrTimeSchedule

    from refit_airflow.assets import champion_asset

    schedule = score_dag_module().score_schedule(
        load_spec(DEMO_SPEC).scoring.model_copy(update={"schedule": None, "on_champion": False} | scoring),
        "credit_default")
    kind = {str: "cron", list: "asset", AssetOrTimeSchedule: "both", type(None): "manual"}[type(schedule)]
    assert kind == expected
    if kind == "asset":
        assert schedule == [champion_asset("credit_default")] and isinstance(schedule[0], Asset)


def score_dag_module():
    import runpy

    return type("ScoreDags", (), runpy.run_path(str(DAGS / "refit_score.py")))


def test_only_specs_with_a_scoring_section_get_a_score_dag_and_a_broken_one_a_placeholder(tmp_path, monkeypatch):
    without = yaml.safe_load(DEMO_SPEC.read_text())
    without.pop("scoring")
    include = include_with_specs(tmp_path, {
        "plain.yaml": yaml.safe_dump(without | {"name": "plain"}),
        "broken_scoring.yaml": demo_spec_text(name="broken_scoring", scoring={"destination": "x"}),
    })
    bag = dagbag_of(include, monkeypatch)
    score_ids = {dag_id for dag_id in bag.dag_ids if dag_id.startswith("score_")}
    assert score_ids == {"score_credit_default", "score_broken_scoring"}
    placeholder = bag.dags["score_broken_scoring"]
    assert "spec-error" in placeholder.tags and "scoring" in placeholder.doc_md
    # The broken spec's other DAGs are placeholders too; the spec without scoring keeps its own.
    assert "spec-error" in bag.dags["retrain_broken_scoring"].tags
    assert "spec-error" not in bag.dags["retrain_plain"].tags


@pytest.mark.parametrize("schedule", ["0 3 1 * *", "*/15 2-5 * * 1-5", "0 6 * * MON-FRI", "0 0 L * *", "0 0 ? * *",
                                      "99 99 99 99 99", "*/0 * * * *", "0 0 1-40 * *", "0 0 * * 8", "H 0 * * *"])
def test_a_spec_schedule_loads_exactly_when_airflow_accepts_it(tmp_path, schedule):
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowTimetableInvalid

    path = tmp_path / "variant.yaml"
    path.write_text(demo_spec_text(schedule=schedule))
    try:
        DAG("schedule_check", schedule=schedule).validate()
        airflow_accepts = True
    except AirflowTimetableInvalid:
        airflow_accepts = False
    try:
        load_spec(path)
        spec_loads = True
    except SpecError as error:
        assert "field 'schedule'" in str(error)
        spec_loads = False
    assert spec_loads == airflow_accepts


def test_a_spec_whose_dag_fails_to_build_or_reuses_a_name_becomes_a_placeholder_and_takes_no_other_dag(tmp_path):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from refit_airflow.spec_dags import SPEC_ERROR_TAG, dags_per_spec

    models = tmp_path / "models"
    models.mkdir()
    (models / "a.yaml").write_text(demo_spec_text())                       # good: credit_default
    (models / "credit_default.yaml").write_text("name: [unclosed\n")      # its stem is a good DAG's model name
    (models / "dup.yaml").write_text(demo_spec_text())                     # credit_default again
    (models / "second.yaml").write_text(demo_spec_text(name="second"))     # its DAG raises half-built

    def build(path, spec):
        with DAG(dag_id=f"t_{spec.name}", schedule=None, auto_register=False) as dag:
            EmptyOperator(task_id="stage")
            if spec.name == "second":
                raise RuntimeError("trainer image missing")
        return dag

    dags = dags_per_spec(build, lambda name: f"t_{name}", kind="test", models_dir=models)
    assert set(dags) == {"t_credit_default", "t_credit_default_spec_error", "t_dup", "t_second"}
    assert [task.task_id for task in dags["t_credit_default"].tasks] == ["stage"]
    expected = {"t_credit_default_spec_error": ["credit_default.yaml: not valid YAML"],
                "t_dup": ["dup.yaml: field 'name': 'credit_default' is already the name of", "a.yaml"],
                "t_second": ["second.yaml: its test DAG could not be built: RuntimeError: trainer image missing"]}
    for dag_id, parts in expected.items():
        placeholder = dags[dag_id]
        assert SPEC_ERROR_TAG in placeholder.tags and placeholder.schedule is None
        assert [task.task_id for task in placeholder.tasks] == ["spec_error"]
        assert all(part in placeholder.doc_md for part in parts), placeholder.doc_md


def test_the_monitor_dag_runs_on_its_own_cron_and_announces_a_retrain_through_the_trigger_asset(dagbag):
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag.dags["monitor_credit_default"]
    assert [task.task_id for task in dag.topological_sort()] == ["monitor", "announce_retrain"]
    assert "refit" in dag.tags and "monitor" in dag.tags and all(task.retries >= 1 for task in dag.tasks)
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.timetable.expression == load_spec(DEMO_SPEC).monitoring.schedule == "0 4 * * *"
    assert [asset.uri for asset in dag.get_task("announce_retrain").outlets] == ["refit://credit_default/retrain-trigger"]
    retrain = dagbag.dags["retrain_credit_default"]
    assert isinstance(retrain.timetable, AssetOrTimeSchedule) and retrain.max_active_runs == 1
    assert [asset.uri for asset in retrain.timetable.asset_condition.objects] == \
        ["refit://credit_default/retrain-trigger"]


def test_only_specs_with_a_monitoring_section_get_a_monitor_dag_and_keep_a_plain_cron(tmp_path, monkeypatch):
    without = yaml.safe_load(DEMO_SPEC.read_text())
    without.pop("monitoring")
    include = include_with_specs(tmp_path, {
        "plain.yaml": yaml.safe_dump(without | {"name": "plain"}),
        "broken_monitoring.yaml": demo_spec_text(name="broken_monitoring", monitoring={"triggers": {"decay": 1}}),
    })
    bag = dagbag_of(include, monkeypatch)
    monitors = {dag_id for dag_id in bag.dag_ids if dag_id.startswith("monitor_")}
    assert monitors == {"monitor_credit_default", "monitor_broken_monitoring"}
    assert "spec-error" in bag.dags["monitor_broken_monitoring"].tags
    assert bag.dags["retrain_plain"].timetable.expression == without["schedule"]  # no monitor: cron only


def test_an_auto_promotion_has_no_approval_task(dagbag, specs):
    for spec in specs:
        if spec.promotion == "auto":
            assert not {"approve", "apply_approval"} & set(dagbag.dags[f"retrain_{spec.name}"].task_ids)


@pytest.mark.parametrize("promotion", ["approve_on_fail", "always_approve"])
def test_a_held_promotion_waits_in_an_approval_task_after_the_report(tmp_path, monkeypatch, promotion):
    from airflow.providers.standard.operators.hitl import HITLOperator

    include = include_with_specs(tmp_path, {
        "held.yaml": demo_spec_text(name="held", promotion=promotion, approval_timeout_hours=8)})
    dag = dagbag_of(include, monkeypatch).dags["retrain_held"]
    order = [task.task_id for task in dag.topological_sort()]
    assert order.index("report") < order.index("approve") < order.index("apply_approval") < order.index(
        "announce_champion")
    approve = dag.get_task("approve")
    assert isinstance(approve, HITLOperator)
    assert {"register", "report", "gate", "plan"} <= approve.upstream_task_ids
    assert (approve.options, approve.defaults, approve.multiple) == (["Approve", "Reject"], ["Reject"], False)
    assert list(approve.serialized_params) == ["reason"]  # not the DAG's trigger params
    assert approve.response_timeout == timedelta(hours=8) and approve.execution_timeout is None
    assert dag.get_task("apply_approval").upstream_task_ids >= {"approve", "register", "validate", "gate"}
    # The champion Asset follows the decision, not the held registration.
    assert dag.get_task("announce_champion").upstream_task_ids == {"apply_approval"}


def test_trainer_tasks_take_the_gpu_pool_and_the_queue_of_their_spec(dagbag, specs, tmp_path, monkeypatch):
    for spec in specs:
        dag = dagbag.dags[f"retrain_{spec.name}"]
        for task_id in ("train", "backtest"):
            task = dag.get_task(task_id)
            if spec.trainer.gpus:
                assert (task.pool, task.pool_slots) == ("refit_gpu", spec.trainer.gpus), task_id
            else:
                assert task.pool == "default_pool"
    trainer = yaml.safe_load(DEMO_SPEC.read_text())["trainer"]
    include = include_with_specs(tmp_path, {
        "queued.yaml": demo_spec_text(name="queued", trainer={**trainer, "gpus": 2, "queue": "gpu_a100"}),
        "cpu.yaml": demo_spec_text(name="cpu", trainer={**trainer, "gpus": 0})})
    monkeypatch.setenv("REFIT_TRAINER_QUEUE", "gpu")
    bag = dagbag_of(include, monkeypatch)
    for task_id in ("train", "backtest"):
        queued, cpu = bag.dags["retrain_queued"].get_task(task_id), bag.dags["retrain_cpu"].get_task(task_id)
        assert (queued.pool, queued.pool_slots, queued.queue) == ("refit_gpu", 2, "gpu_a100")
        # No queue in the spec: the deployment's REFIT_TRAINER_QUEUE; a CPU trainer takes no GPU slot.
        assert (cpu.pool, cpu.pool_slots, cpu.queue) == ("default_pool", 1, "gpu")
    assert bag.dags["retrain_queued"].get_task("evaluate").queue == "default"  # only trainers move


def test_every_task_has_the_timeout_of_its_stage_from_the_spec(dagbag, specs, tmp_path, monkeypatch):
    from ml_tasks.core.spec import DEFAULT_TIMEOUT_MINUTES

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.execution_timeout is not None, f"{dag.dag_id}.{task.task_id} has no timeout"
    retrain = dagbag.dags["retrain_credit_default"]
    assert retrain.get_task("train").execution_timeout == timedelta(minutes=DEFAULT_TIMEOUT_MINUTES["train"])
    assert retrain.get_task("candidates").execution_timeout == timedelta(minutes=DEFAULT_TIMEOUT_MINUTES["default"])

    include = include_with_specs(tmp_path, {
        "bounded.yaml": demo_spec_text(name="bounded", timeouts={"train": 45, "extract": 5.5, "default": 3})})
    bag = dagbag_of(include, monkeypatch)
    retrain, registry = bag.dags["retrain_bounded"], bag.dags["registry_bounded"]
    assert retrain.get_task("train").execution_timeout == timedelta(minutes=45)
    assert retrain.get_task("extract").execution_timeout == timedelta(minutes=5.5)
    assert retrain.get_task("candidates").execution_timeout == timedelta(minutes=3)  # the spec's default
    assert retrain.get_task("gate").execution_timeout == timedelta(minutes=DEFAULT_TIMEOUT_MINUTES["gate"])
    assert registry.get_task("apply").execution_timeout == timedelta(minutes=3)
    assert bag.dags["score_bounded"].get_task("score").execution_timeout == timedelta(
        minutes=DEFAULT_TIMEOUT_MINUTES["score"])


def test_a_timeout_of_no_stage_is_a_spec_error_naming_the_field(tmp_path, monkeypatch):
    include = include_with_specs(tmp_path, {"typo.yaml": demo_spec_text(name="typo", timeouts={"trian": 10})})
    placeholder = dagbag_of(include, monkeypatch).dags["retrain_typo"]
    assert "spec-error" in placeholder.tags and "timeouts.trian" in placeholder.doc_md
