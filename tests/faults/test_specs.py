"""A broken spec removes only itself; spec and CLI inputs that used to slip through are refused
naming the field or parameter (issue 14, failures 4, 8 and two of 9).

Real spec files, a real DagBag of ``dags/`` and the real CLI parser; nothing is mocked.
"""

from __future__ import annotations

import shutil

import pytest

from ml_tasks import cli
from ml_tasks.core.spec import SpecError, load_spec
from tests.conftest import DEMO_SPEC
from tests.core.test_spec import write_variant
from tests.dags.test_dag_integrity import STAGES, dagbag_of, demo_spec_text, include_with_specs


def test_4_a_malformed_spec_and_a_bad_cron_remove_only_their_own_dags(tmp_path, monkeypatch):
    # Airflow is imported once test_dag_integrity has pointed AIRFLOW_HOME at a throwaway folder.
    from airflow.sdk.exceptions import AirflowFailException

    from refit_airflow.spec_dags import SPEC_ERROR_TAG

    include = include_with_specs(tmp_path, {
        "broken.yaml": "name: broken\nschedule: [unclosed\n",
        "bad_cron.yaml": demo_spec_text(name="bad_cron", schedule="99 99 99 99 99"),
        "second.yaml": demo_spec_text(name="second"),
    })
    dagbag = dagbag_of(include, monkeypatch)

    assert dagbag.import_errors == {}
    good = {f"{kind}_{model}" for kind in ("retrain", "registry", "score", "monitor")
            for model in ("credit_default", "second")}
    broken = {f"{kind}_{model}" for kind in ("retrain", "registry") for model in ("broken", "bad_cron")}
    # The demo spec scores and monitors, so bad_cron's file asks for those DAGs too; broken.yaml does not say.
    assert set(dagbag.dag_ids) == good | broken | {"score_bad_cron", "monitor_bad_cron"}
    for model in ("credit_default", "second"):
        assert sorted(t.task_id for t in dagbag.dags[f"retrain_{model}"].tasks) == sorted(STAGES)
        assert dagbag.dags[f"retrain_{model}"].timetable.timetable.expression == "0 3 1 * *"  # or the monitor's Asset
    named = {"broken": ["broken.yaml", "not valid YAML", "line 2"],
             "bad_cron": ["bad_cron.yaml", "field 'schedule'", "'99 99 99 99 99'", "out of range"]}
    for model, parts in named.items():
        for kind in ("retrain", "registry", "score")[:3 if model == "bad_cron" else 2]:
            placeholder = dagbag.dags[f"{kind}_{model}"]
            assert SPEC_ERROR_TAG in placeholder.tags and placeholder.schedule is None
            assert all(part in placeholder.doc_md and part in placeholder.description for part in parts)
            [only] = placeholder.tasks
            with pytest.raises(AirflowFailException) as failure:
                only.python_callable()
            assert all(part in str(failure.value) for part in parts)


@pytest.mark.parametrize("label_values", [[1, 2], [0, 2], ["no", "yes"]])
def test_8_label_values_other_than_0_and_1_are_refused_at_load_saying_how_to_map_them_in_sql(tmp_path,
                                                                                             label_values):
    with pytest.raises(SpecError) as error:
        load_spec(write_variant(tmp_path, lambda raw: raw["columns"].update(label_values=label_values)))
    message = str(error.value)
    assert "variant.yaml" in message and "field 'columns.label_values': expected [0, 1]" in message
    assert f"got {label_values!r}" in message
    assert "CASE WHEN status = 'yes' THEN 1 ELSE 0 END AS defaulted" in message


def test_9_sampling_size_true_is_refused_not_read_as_1(tmp_path):
    with pytest.raises(SpecError, match=r"field 'sampling\.size': Input should be a valid integer, got True"):
        load_spec(write_variant(tmp_path, lambda raw: raw["sampling"].update(size=True)))


@pytest.mark.parametrize("command", [["status"], ["plan", "--as-of", "2024-03-01"], ["rollback", "--reason", "r"],
                                     ["promote", "--run-key", "20240301T000000-1a2b3c4d", "--reason", "r"]])
def test_9_a_model_given_as_a_path_is_refused_naming_the_parameter(refit_home, tmp_path, monkeypatch, capsys,
                                                                   command):
    # A real spec sits where the path leads, so a CLI that joined the path would find and use it.
    include = tmp_path / "include"
    shutil.copytree(DEMO_SPEC.parents[1], include)
    shutil.copytree(include / "models", include / "elsewhere")
    monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))
    with pytest.raises(SystemExit) as exit_:
        cli.main([command[0], "--model", "../elsewhere/credit_default", *command[1:]])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --model: expected a model name" in err and "not a path" in err
    assert "'../elsewhere/credit_default'" in err
