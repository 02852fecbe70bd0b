"""The command line fails in one line that names the file, field or parameter (a traceback only
with ``--debug``), ends quietly when its reader stops early, and keeps MLflow's routine messages
out of the terminal but in its log (issue 15, problem 9).

The real ``python -m ml_tasks`` in a subprocess, on real spec files; the one in-process test
stands in for an MLflow server only to make MLflow's "View run" line appear.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import yaml

from ml_tasks import cli, pipeline
from tests.conftest import DEMO_SPEC


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml_tasks", *args], capture_output=True, text=True, env=os.environ)


@pytest.fixture
def include_with_bad_spec(refit_home, tmp_path, monkeypatch):
    """An include folder whose ``bad`` spec has a misspelt network param and a segment that is no feature."""
    include = tmp_path / "include"
    shutil.copytree(DEMO_SPEC.parents[1], include)
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    raw["name"] = "bad"
    raw["candidates"].append({"name": "net", "family": "torch_mlp", "params": {"epochs": 5}})
    raw["sampling"]["segments"] = ["income"]
    (include / "models" / "bad.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))
    return include


def test_9_a_bad_spec_is_one_line_naming_the_file_and_every_field_and_exits_1(include_with_bad_spec):
    done = run_cli("plan", "--model", "bad", "--as-of", "2024-06-01")
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: SpecError: spec {include_with_bad_spec / 'models' / 'bad.yaml'}: 2 problems: ")
    assert "field 'sampling.segments.0': 'income' must be a categorical feature" in line
    assert "field 'candidates.2.params.epochs': unknown parameter of torch_mlp (did you mean 'max_epochs'?)" in line


def test_9_debug_adds_the_traceback_before_the_same_line(include_with_bad_spec):
    for args in (["--debug", "plan", "--model", "bad", "--as-of", "2024-06-01"],
                 ["plan", "--model", "bad", "--as-of", "2024-06-01", "--debug"]):
        done = run_cli(*args)
        assert done.returncode == 1
        assert "Traceback (most recent call last):" in done.stderr and "load_spec" in done.stderr
        assert done.stderr.splitlines()[-1].startswith("error: SpecError: spec ")


@pytest.mark.parametrize(("args", "expected", "code"), [
    (["plan", "--model", "credit_default"], "python -m ml_tasks plan: error: the following arguments are required: "
                                            "--as-of (see --help)", 2),
    (["status", "--model", "no_such_model"], "error: --model 'no_such_model': no spec at ", 1),
    (["gate", "--plan", "/elsewhere/plan.json"], "error: StoreError: /elsewhere/plan.json is outside the artifact "
                                                 "store root ", 1),
])
def test_9_usage_and_input_errors_are_one_line_naming_the_parameter(refit_home, args, expected, code):
    done = run_cli(*args)
    assert done.returncode == code
    [line] = done.stderr.splitlines()
    assert line.startswith(expected) and "Traceback" not in done.stderr


def test_9_a_reader_that_stops_early_ends_status_quietly(refit_home):
    # ``status --json | head -1``: the reader is gone before status writes a byte.
    process = subprocess.Popen([sys.executable, "-m", "ml_tasks", "status", "--model", "credit_default", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait() == cli.EXIT_BROKEN_PIPE
    assert stderr == ""


def test_9_the_spec_reference_command_prints_the_generated_reference(refit_home):
    from ml_tasks.core.spec import spec_reference

    done = run_cli("spec-reference")
    assert done.returncode == 0 and done.stdout == spec_reference()


def test_9_mlflow_routine_messages_stay_out_of_the_terminal_but_reach_the_log(refit_home, monkeypatch, capsys):
    def noisy_plan(*args, **kwargs):
        # What MLflow says on every run: a warning, a log record, and a line it prints itself.
        warnings.warn("Hint: Inferred schema contains integer column(s). Integer columns in Python cannot "
                      "represent missing values.", UserWarning, stacklevel=1)
        logging.getLogger("mlflow.pyfunc").warning("Passing a Python object as `python_model` causes it to be "
                                                   "serialized using CloudPickle")
        sys.stdout.write("🏃 View run skittish-owl at: http://mlflow:5000/#/experiments/1/runs/abc\n")
        warnings.warn("the sample is small", UserWarning, stacklevel=1)  # not routine: shown
        return {"run_prefix": "runs/credit_default/x"}

    monkeypatch.setattr(pipeline, "plan_run", noisy_plan)
    assert cli.main(["plan", "--model", "credit_default", "--as-of", "2024-06-01"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [json.dumps({"run_prefix": "runs/credit_default/x"})]  # the manifest, alone
    assert "the sample is small" in err
    for routine in ("Hint: Inferred schema", "Passing a Python object", "View run"):
        assert routine not in err + out
    logged = (refit_home.home / "logs" / "ml_tasks.log").read_text()
    for message in ("Hint: Inferred schema", "Passing a Python object", "View run skittish-owl", "the sample is small"):
        assert message in logged
