"""The artifact names are the layout every earlier release wrote: runs written before still resolve."""

from __future__ import annotations

import pytest

from ml_tasks.core.artifacts import RUN_MANIFESTS, RunArtifacts, StoreLayout, join
from ml_tasks.io.store import ArtifactStore

RUN = "s3://bucket/artifacts/runs/credit_default/20240901T000000-1a2b3c4d"


def test_a_runs_artifacts_keep_the_names_earlier_releases_wrote():
    run = RunArtifacts(RUN)
    named = {
        run.plan: "plan.json", run.snapshot: "snapshot.json", run.validation: "validation.json",
        run.sample: "sample.json", run.sample_data: "sample.parquet", run.split: "split.json",
        run.split_part("test"): "split/test.parquet", run.train_result("lightgbm"): "train/lightgbm.json",
        run.reliability_chart("lightgbm"): "train/lightgbm/reliability.png",
        run.checkpoints("torch_mlp"): "train/torch_mlp/checkpoints",
        run.fold_result("champion", 3): "backtest/champion/fold-3.json", run.backtest: "backtest.json",
        run.evaluation: "evaluation.json", run.predictions: "predictions.parquet", run.gate: "gate.json",
        run.registration: "registration.json", run.report_html: "report.html", run.report_json: "report.json",
    }
    assert {uri: uri.removeprefix(RUN + "/") for uri in named} == named


def test_every_stage_manifest_is_named_after_its_stage():
    run = RunArtifacts(RUN)
    assert [run.manifest(stage) for stage in RUN_MANIFESTS] == [f"{RUN}/{stage}.json" for stage in RUN_MANIFESTS]
    with pytest.raises(ValueError, match="stage 'report': no manifest of that name"):
        run.manifest("report")


def test_fold_results_are_told_apart_from_other_files_under_the_backtest_folder():
    run = RunArtifacts(RUN)
    assert run.is_fold_result(run.fold_result("lightgbm", 0))
    assert not run.is_fold_result(f"{run.backtest_folds}/lightgbm/notes.json")


def test_store_wide_locations_keep_their_names(tmp_path):
    store = ArtifactStore(str(tmp_path))
    layout = store.layout
    assert layout.run("m", "20240301T000000-abcdef12").prefix == store.uri("runs", "m", "20240301T000000-abcdef12")
    assert layout.snapshot_data("m", "ab") == store.uri("snapshots", "m", "ab", "data.parquet")
    assert layout.snapshot_manifest("m", "ab") == store.uri("snapshots", "m", "ab", "manifest.json")
    assert layout.staging_data("m", "ab") == store.uri("staging", "m", "ab", "data.parquet")
    assert layout.latest_report("m") == store.uri("reports", "m", "latest.json")


def test_history_entries_sort_by_the_time_written_and_name_their_run_and_model():
    layout = StoreLayout("s3://bucket/artifacts")
    earlier = layout.report_history_entry("m", "2024-09-01T03:04:05.123456+00:00", "20240901T000000-aa")
    later = layout.report_history_entry("m", "2024-09-01T03:04:06+00:00", "20240801T000000-bb")
    assert earlier == "s3://bucket/artifacts/reports/m/history/20240901030405-20240901T000000-aa.json"
    assert sorted([later, earlier]) == [earlier, later]
    assert layout.model_of_history_entry(later) == "m"
    assert layout.model_of_history_entry(layout.latest_report("m")) is None
    assert StoreLayout.is_history_entry_of(later, "20240801T000000-bb")
    assert not StoreLayout.is_history_entry_of(later, "20240901T000000-aa")


def test_join_trims_slashes_and_drops_empty_parts():
    assert join("/root/", "/runs/", "", "m/") == "/root/runs/m"
