"""The champion under a changed spec (issue 15, problems 3 and 4): a feature dropped from the
spec, a column the query no longer selects, and a champion that fails its own bars.

Real runs (``pipeline.run_all``) on the tiny demo warehouse with an embedded MLflow store: the
first registers champion v1 with the demo spec; each test then runs a later interval with a copy
of ``include/`` (``REFIT_INCLUDE_DIR``) whose spec or query was edited as a team would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ml_tasks import pipeline
from ml_tasks.core.settings import REPO_ROOT, Settings
from tests.conftest import DEMO_SPEC, isolated_env

MODEL = "credit_default"
SMALL = {"sample_size": 2_000, "candidates": ["logistic_baseline"]}
DROPPED = "income"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_warehouse_url) -> Settings:
    """One home for the module: a real run of 2024-03-01 that registered champion v1."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = isolated_env(monkeypatch, tmp_path_factory.mktemp("champion") / "refit")
        monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
        report = pipeline.run_all(str(DEMO_SPEC), "2024-03-01", **SMALL)
        assert report["verdict"] == "PASS" and report["champion_version"] == "1"
        yield settings


def edited_include(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit_spec: Callable[[dict], None],
                   edit_sql: Callable[[str], str] | None = None) -> Path:
    """A copy of ``include/`` with the demo spec (and its query) edited, made the run's include
    folder; returns the spec's path."""
    include = tmp_path / "include"
    shutil.copytree(REPO_ROOT / "include", include)
    spec_file = include / "models" / f"{MODEL}.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    edit_spec(spec)
    spec_file.write_text(yaml.safe_dump(spec))
    if edit_sql is not None:
        query = include / spec["source"]["query_file"]
        query.write_text(edit_sql(query.read_text()))
    monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))
    return spec_file


def drop_feature(spec: dict) -> None:
    spec["features"]["numeric"].remove(DROPPED)


def unselect_column(sql: str) -> str:
    line = f"    c.{DROPPED},\n"
    assert line in sql
    return sql.replace(line, "")


@pytest.fixture
def home(first_run, tiny_warehouse_url, monkeypatch) -> Settings:
    isolated_env(monkeypatch, first_run.home)
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    return first_run


def notifications(settings: Settings) -> list[dict]:
    log = settings.home / "notifications.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def champion_alias(settings: Settings) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def test_a_feature_dropped_from_the_spec_still_reaches_the_champion_which_is_scored_on_its_own_signature(
        home, tmp_path, monkeypatch):
    spec = edited_include(tmp_path, monkeypatch, drop_feature)  # the query still selects the column
    before = len(notifications(home))

    report = pipeline.run_all(str(spec), "2024-05-01", **SMALL)

    content = json.loads(Path(report["json_uri"]).read_text())
    evaluation = content["evaluation"]
    assert evaluation["champion"]["name"] == "champion v1" and evaluation["champion_error"] is None
    assert DROPPED in evaluation["champion_columns"] and DROPPED not in content["plan"]["candidates"]
    compared = [c for c in content["gate"]["checks"] if c["name"].startswith("champion:")]
    assert compared and all(c["reference"] is not None for c in compared)
    assert DROPPED in content["champion_inputs"] and "no longer features of this spec" in content["champion_inputs"]
    # The champion clears the demo's bars, so nothing but the gate's own verdict is told.
    assert content["champion_health"]["degraded"] is False
    assert all(n["kind"] != "champion_degraded" for n in notifications(home)[before:])


def test_a_champion_whose_columns_the_query_no_longer_selects_fails_the_run_with_a_report_and_a_notification(
        home, tmp_path, monkeypatch):
    spec = edited_include(tmp_path, monkeypatch, drop_feature, unselect_column)

    report = pipeline.run_all(str(spec), "2024-06-01", **SMALL)

    assert report["verdict"] == "FAIL"
    content = json.loads(Path(report["json_uri"]).read_text())
    assert content["evaluation"]["champion"] is None and content["evaluation"]["champion_version"] == "1"
    assert content["evaluation"]["champion_missing_columns"] == [DROPPED]
    first = content["gate"]["checks"][0]
    assert first["name"] == "champion:scoring" and not first["passed"]
    assert f"needs column(s) ['{DROPPED}']" in first["reason"] and first["reason"] in content["failing"]
    assert content["registration"]["action"] == "skipped_failed_gate" and champion_alias(home) == "1"
    html = Path(report["html_uri"]).read_text()
    assert 'id="champion-unscored"' in html and f"<code>{DROPPED}</code>" in html
    # The stored gate says FAIL too: a manual promotion and a re-run of the gate read it.
    stored = json.loads(Path(content["plan"]["run_prefix"], "gate.json").read_text())
    assert stored["verdict"] == "FAIL" and stored["checks"][0]["name"] == "champion:scoring"
    again = pipeline.gate(content["plan"], content["evaluation"])
    assert again["verdict"] == "FAIL" and [c["name"] for c in again["checks"]].count("champion:scoring") == 1
    told = notifications(home)[-1]
    assert told["kind"] == "gate_failed" and told["report_uri"] == report["html_uri"]
    assert f"missing column(s) ['{DROPPED}']" in told["summary"]
    assert any(f"['{DROPPED}']" in reason for reason in told["reasons"])


def test_a_champion_that_fails_its_own_bars_opens_the_report_and_is_notified_although_the_gate_fails(
        home, tmp_path, monkeypatch):
    def unreachable_bar(spec: dict) -> None:
        spec["acceptance"]["thresholds"]["roc_auc"] = {"min": 0.99}  # no model on this data gets there

    spec = edited_include(tmp_path, monkeypatch, unreachable_bar)
    before = len(notifications(home))

    report = pipeline.run_all(str(spec), "2024-07-01", **SMALL)

    assert report["verdict"] == "FAIL" and champion_alias(home) == "1"
    content = json.loads(Path(report["json_uri"]).read_text())
    health = content["champion_health"]
    assert health["degraded"] is True and health["champion"] == "champion v1" and health["policy"] == "alert"
    [bar] = health["failing"]
    assert bar.startswith("roc_auc 0.") and bar.endswith(" < 0.99")
    assert health["outcome"] == "challenger logistic_baseline not promoted, so champion v1 stays champion"
    assert "roc_auc 0." in health["note"] and "alert" in health["note"]
    html = Path(report["html_uri"]).read_text()
    order = [html.index(marker) for marker in ('id="verdict"', 'id="champion-health"', "<h2>Why it failed</h2>",
                                               'id="checks"')]
    assert order == sorted(order), "the champion's health comes right after the verdict banner"
    assert "degraded_champion: alert" in html
    told = notifications(home)[before:]
    assert [n["kind"] for n in told] == ["champion_degraded", "gate_failed"]
    assert told[0]["summary"].startswith(f"{MODEL}: champion v1 fails its own bars: roc_auc 0.")
    assert "< 0.99" in told[0]["summary"] and told[0]["report_uri"] == report["html_uri"]
