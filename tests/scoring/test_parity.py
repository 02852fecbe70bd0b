"""The scoring query computes every feature as the training query does (training/serving skew):
the demo spec's two queries agree on the tiny warehouse, and an edit to one of them is caught,
named by feature with example ids, by the check and by ``python -m ml_tasks check-scoring``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.scoring.parity import check_feature_parity

WINDOW = (datetime(2023, 6, 1), datetime(2024, 6, 1))


@pytest.fixture
def include(tmp_path) -> Path:
    """A copy of the include folder, whose scoring query a test may edit."""
    copied = tmp_path / "include"
    shutil.copytree(REPO_ROOT / "include", copied)
    return copied


def edit_scoring_query(include: Path, old: str, new: str) -> None:
    path = include / "sql" / "credit_default_score.sql"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_demo_specs_scoring_query_computes_every_feature_as_its_training_query(demo_spec, tiny_warehouse_url):
    report = check_feature_parity(demo_spec, REPO_ROOT / "include", tiny_warehouse_url, *WINDOW)

    assert report.ok, report.problems()
    assert report.compared_rows == report.training_rows > 1_000
    assert report.scoring_rows > report.training_rows  # it also returns the rows whose labels are not in yet


def test_at_most_max_rows_training_rows_are_compared_and_the_query_is_stopped_there(demo_spec, tiny_warehouse_url):
    report = check_feature_parity(demo_spec, REPO_ROOT / "include", tiny_warehouse_url, *WINDOW, max_rows=500)

    assert report.ok and report.training_rows == report.compared_rows == 500
    assert report.scoring_rows > 1_000  # the scoring query is read whole; only the 500 ids are kept


def test_a_feature_computed_differently_is_named_with_example_ids(demo_spec, tiny_warehouse_url, include):
    edit_scoring_query(include, "    c.income,", "    c.income * 1.01 AS income,")

    report = check_feature_parity(demo_spec, include, tiny_warehouse_url, *WINDOW)

    assert not report.ok
    found = {m.feature: m for m in report.mismatches}
    assert found["income"].rows == report.compared_rows  # every row: a different formula
    some_id, in_training, in_scoring = found["income"].examples[0]
    assert in_scoring == pytest.approx(in_training * 1.01)
    assert set(found) == {"income"}
    assert report.problems()[0].startswith(f"feature 'income' differs on {report.compared_rows} row(s), e.g. "
                                           f"id {some_id}: ")


def test_labelled_rows_the_scoring_query_leaves_out_are_counted(demo_spec, tiny_warehouse_url, include):
    edit_scoring_query(include, "WHERE a.applied_at >= :window_start", "WHERE a.channel <> 'branch'\n"
                                                                       "  AND a.applied_at >= :window_start")

    report = check_feature_parity(demo_spec, include, tiny_warehouse_url, *WINDOW)

    assert not report.ok and not report.mismatches
    assert 0 < report.missing_in_scoring < report.training_rows
    assert report.compared_rows == report.training_rows - report.missing_in_scoring
    assert "would never be scored" in report.problems()[0]


def test_the_cli_fails_naming_the_feature(tiny_warehouse_url, include, tmp_path):
    edit_scoring_query(include, "    a.amount,", "    a.amount / 100.0 AS amount,")
    env = {"REFIT_HOME": str(tmp_path / "home"), "REFIT_INCLUDE_DIR": str(include),
           "REFIT_WAREHOUSE_URL": tiny_warehouse_url, "PATH": "/usr/bin:/bin"}

    done = subprocess.run([sys.executable, "-m", "ml_tasks", "check-scoring", "--model", "credit_default",
                           "--as-of", "2024-06-01", "--days", "365"], capture_output=True, text=True, env=env,
                          timeout=300)

    assert done.returncode == 1, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["ok"] is False
    assert "error: --model credit_default: the scoring query does not compute the features as the training query " \
           "does: feature 'amount' differs on" in done.stderr


def test_the_cli_reads_the_warehouse_the_spec_names_as_extraction_does(tiny_warehouse_url, include, tmp_path):
    import yaml

    spec_file = include / "models" / "credit_default.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["source"]["warehouse_url"] = tiny_warehouse_url
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    empty = f"sqlite:///{tmp_path / 'no-tables.db'}"  # the settings' warehouse: not the one to read
    env = {"REFIT_HOME": str(tmp_path / "home"), "REFIT_INCLUDE_DIR": str(include), "REFIT_WAREHOUSE_URL": empty,
           "PATH": "/usr/bin:/bin"}

    done = subprocess.run([sys.executable, "-m", "ml_tasks", "check-scoring", "--model", "credit_default",
                           "--as-of", "2024-06-01", "--days", "365"], capture_output=True, text=True, env=env,
                          timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["compared_rows"] > 1_000

