"""The gate results history the Airflow UI view lists: newest first, per model, on a folder and on S3."""

from __future__ import annotations

import pytest

from ml_tasks.io.store import ArtifactStore
from ml_tasks.reporting import gate_results
from ml_tasks.reporting.gate_results import GateResult


def result(model: str, run_key: str, written_at: str, verdict: str = "PASS", dag_run_id: str | None = None,
           **extra) -> GateResult:
    return GateResult(model=model, run_key=run_key, verdict=verdict, written_at=written_at,
                      as_of=run_key[:4] + "-01-01T00:00:00+00:00", challenger="lightgbm", champion_version="1",
                      dag_run_id=dag_run_id, dry_run=False, html_uri=f"runs/{model}/{run_key}/report.html",
                      json_uri=f"runs/{model}/{run_key}/report.json", **extra)


@pytest.fixture
def store(any_store):
    return any_store


def test_recent_results_lists_newest_first_per_model(store):
    gate_results.record(store, result("credit", "20240301T000000-aaaaaaaa", "2026-11-01T10:00:00+00:00"))
    gate_results.record(store, result("credit", "20240901T000000-bbbbbbbb", "2026-11-02T10:00:00+00:00", "FAIL",
                                      failing=["champion: roc_auc worse", "ece above 0.05"]))
    gate_results.record(store, result("churn", "20240901T000000-cccccccc", "2026-11-03T10:00:00+00:00"))

    credit = gate_results.recent_results(store, "credit")
    assert [r.run_key for r in credit] == ["20240901T000000-bbbbbbbb", "20240301T000000-aaaaaaaa"]
    assert credit[0].verdict == "FAIL" and len(credit[0].failing) == 2
    assert gate_results.models_with_results(store) == ["churn", "credit"]
    assert len(gate_results.recent_results(store, "credit", limit=1)) == 1


def test_a_rerun_of_the_same_run_key_keeps_both_entries_and_finds_the_newest(store):
    key = "20240301T000000-aaaaaaaa"
    gate_results.record(store, result("credit", key, "2026-11-01T10:00:00+00:00", "FAIL", dag_run_id="first"))
    gate_results.record(store, result("credit", key, "2026-11-01T11:00:00+00:00", "PASS", dag_run_id="second"))

    assert len(gate_results.recent_results(store, "credit")) == 2
    assert gate_results.find_result(store, "credit", run_key=key).dag_run_id == "second"
    assert gate_results.find_result(store, "credit", dag_run_id="first").verdict == "FAIL"
    assert gate_results.find_result(store, "credit", dag_run_id="never") is None


def test_lookups_refuse_names_that_are_not_run_keys_or_models(tmp_path):
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(ValueError, match="parameter 'run_key'"):
        gate_results.find_result(store, "credit", run_key="../../etc/passwd")
    with pytest.raises(ValueError, match="parameter 'model'"):
        gate_results.recent_results(store, "../secrets")


def test_entries_written_by_an_older_version_with_extra_fields_still_load():
    payload = result("credit", "20240301T000000-aaaaaaaa", "2026-11-01T10:00:00+00:00").to_dict() | {"later": 1}
    assert GateResult.from_dict(payload).run_key == "20240301T000000-aaaaaaaa"
