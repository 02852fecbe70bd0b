"""A monitor run end to end on the tiny demo warehouse: the rows matured since the champion's as-of
read with the spec's own query, scored by the registered champion (a pyfunc stand-in in a real
MLflow store), drift against its training snapshot, a health record appended per run, the
cool-down on the next run, ``status`` showing the trend, and errors that name the parameter."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks import pipeline
from ml_tasks.cli import main
from ml_tasks.core.manifests import EvaluationManifest, ModelScores
from ml_tasks.core.plan import PlanError
from ml_tasks.core.settings import REPO_ROOT, Settings, ensure_local_folders
from ml_tasks.core.spec import ModelSpec, SpecError
from ml_tasks.io.store import store_from_settings
from ml_tasks.monitoring.monitor import window_batches
from ml_tasks.registry.tracking import use_store
from tests.conftest import DEMO_SPEC
from tests.scoring.registered import register_version

CHAMPION_AS_OF, RUN_KEY, SNAPSHOT = "2024-03-01T00:00:00", "20240301T000000-abcdef12", "feedfacecafebeef"
#: Registered far above what the stand-in scores on these rows: its live AUC is significantly worse.
REGISTERED_AUC = 0.99


@pytest.fixture
def monitored(refit_home: Settings, tiny_warehouse_url: str, demo_spec: ModelSpec, monkeypatch) -> Settings:
    """A champion registered as Refit registers one: as-of, run key, candidate and snapshot tags; its
    run's evaluation in the store; its training snapshot, the tiny warehouse's year before its as-of."""
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    ensure_local_folders(refit_home)
    version = register_version(refit_home, demo_spec, 0.0, champion=True)
    client = use_store(refit_home)
    for key, value in {"refit.as_of": CHAMPION_AS_OF, "refit.run_key": RUN_KEY, "refit.candidate": "lightgbm",
                       "refit.snapshot_id": SNAPSHOT}.items():
        client.set_model_version_tag(demo_spec.registry_name, version, key, value)
    store = store_from_settings(refit_home)
    run = store.layout.run(demo_spec.name, RUN_KEY)
    store.write_json(run.evaluation, EvaluationManifest(
        challenger="lightgbm", candidates=[ModelScores(name="lightgbm", metrics={"roc_auc": REGISTERED_AUC})],
        champion=None, champion_version=None, predictions_uri="-", test_rows=1, uri=run.evaluation, models={},
    ).to_xcom())
    from datetime import datetime

    batches = list(window_batches(demo_spec, tiny_warehouse_url, REPO_ROOT / "include", datetime(2023, 3, 1),
                                  datetime(2024, 3, 1)))
    with store.staged(store.layout.snapshot_data(demo_spec.name, SNAPSHOT)) as path:
        pq.write_table(pa.Table.from_batches(batches), path)
    return refit_home


def test_a_monitor_run_measures_the_new_rows_and_fires_the_tripped_triggers(monitored):
    record = pipeline.monitor(str(DEMO_SPEC), "2024-09-01")
    health, states = record["health"], {s["name"]: s for s in record["triggers"]}
    assert record["window_start"] == CHAMPION_AS_OF and record["champion_version"] == "1"
    assert health["rows"] > 500  # rows of [2024-03-01, 2024-09-01) whose labels were observed by then
    assert health["decay"]["live"]["high"] < REGISTERED_AUC - 0.01
    assert states["decay"]["fired"] and "decayed" in states["decay"]["reason"]
    assert set(health["psi"]) == set(ModelSpec.model_validate(monitored_spec()).features.all)
    assert health["psi"]["channel"] > 0.25  # the demo warehouse's new channel
    assert states["drift"]["fired"] and "channel" in states["drift"]["reason"]
    assert not states["volume"]["tripped"]  # fewer than 20,000 new rows in the tiny warehouse
    assert not states["age"]["tripped"] and "no max_age_days" in states["age"]["reason"]  # no backtest stored
    store = store_from_settings(monitored)
    assert store.read_json(store.layout.latest_health("credit_default")) == record
    # The person on call hears why a retrain was queued (the default channel is the log file).
    told = [json.loads(line) for line in (monitored.home / "notifications.log").read_text().splitlines()]
    assert told[-1]["kind"] == "retrain_triggered" and told[-1]["reasons"] == [
        f"{s['name']}: {s['reason']}" for s in record["triggers"] if s["fired"]]
    assert "retrain_credit_default queued" in told[-1]["summary"]


def test_the_next_run_within_the_cooldown_records_the_trips_but_fires_nothing(monitored, capsys):
    first = pipeline.monitor(str(DEMO_SPEC), "2024-09-01")
    second = pipeline.monitor(str(DEMO_SPEC), "2024-09-03")
    assert {s["name"] for s in first["triggers"] if s["fired"]} == {"decay", "drift"}
    assert [s["name"] for s in second["triggers"] if s["tripped"] and not s["fired"]] == ["decay", "drift"]
    # Cooling down fires nothing, and tells nobody.
    kinds = [json.loads(line)["kind"] for line in (monitored.home / "notifications.log").read_text().splitlines()]
    assert kinds.count("retrain_triggered") == 1
    assert all("cooling down" in s["reason"] for s in second["triggers"] if s["tripped"])
    # A re-run of the first moment is not cooled down by itself, and replaces its record.
    assert {s["name"] for s in pipeline.monitor(str(DEMO_SPEC), "2024-09-01")["triggers"] if s["fired"]} == \
        {"decay", "drift"}
    assert len(pipeline.health(DEMO_SPEC)["trend"]) == 2
    assert main(["status", "--model", "credit_default"]) == 0
    shown = capsys.readouterr().out
    assert "trigger drift: tripped, cooling down" in shown and "2024-09-01 ·" in shown and "2024-09-03 ·" in shown
    assert main(["status", "--model", "credit_default", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["health"]["latest"]["as_of"] == "2024-09-03T00:00:00"  # the re-run of an older moment did not
    assert [row["fired"] for row in status["health"]["trend"]] == [["decay", "drift"], []]


def test_the_champion_is_judged_on_the_scores_it_served_and_scores_only_the_rows_the_table_lacks(
        monitored, tiny_warehouse_url, demo_spec, tmp_path, monkeypatch):
    """Where the scoring table exists, the live metric is that of the scores users got: rows the
    champion's version served keep their served score; rows another version served, or none, are
    scored by the champion in the run."""
    import shutil
    from datetime import datetime

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from ml_tasks.scoring.destination import Stamp, score_writer
    from tests.scoring.registered import expected_scores

    copy = tmp_path / "warehouse.db"
    shutil.copy(tiny_warehouse_url.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", url)
    rows = pa.Table.from_batches(window_batches(demo_spec, url, REPO_ROOT / "include", datetime(2024, 3, 1),
                                                datetime(2024, 9, 1))).to_pandas()
    ids, labels = rows[demo_spec.columns.id].to_numpy(np.int64), rows[demo_spec.columns.label].to_numpy(float)
    # Served scores that no champion computes (the label itself): half by the champion's version,
    # half by another one, which the monitor must not take for the champion's.
    by_champion = ids % 2 == 0
    destination = demo_spec.scoring.destination
    for version, served in (("1", by_champion), ("9", ~by_champion)):
        with score_writer(url, [destination]) as writer:
            writer.stage(destination, ids[served], labels[served])
            writer.replace(f"run-{version}", {destination: Stamp(version, f"run-{version}", datetime(2024, 9, 1))})

    health = pipeline.monitor(str(DEMO_SPEC), "2024-09-01")["health"]
    assert (health["served_rows"], health["scored_rows"]) == (int(by_champion.sum()), int((~by_champion).sum()))
    expected = np.where(by_champion, labels, expected_scores(rows["credit_score"], 0.0))
    assert health["decay"]["live"]["value"] == pytest.approx(roc_auc_score(labels, expected), abs=1e-12)
    assert main(["status", "--model", "credit_default"]) == 0


def test_the_monitor_command_prints_the_record_and_names_a_bad_as_of(monitored, capsys):
    assert main(["monitor", "--model", "credit_default", "--as-of", "2024-09-01"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["run_key"].startswith("20240901T000000-")
    assert main(["monitor", "--model", "credit_default", "--as-of", "2024-02-01"]) == 1
    assert "param 'as_of': 2024-02-01T00:00:00 is not after champion v1's as-of" in capsys.readouterr().err
    with pytest.raises(PlanError, match="param 'as_of'"):
        pipeline.monitor(str(DEMO_SPEC), "2024-03-01")


def test_a_spec_without_a_monitoring_section_is_told_so(monitored, tmp_path):
    raw = monitored_spec()
    del raw["monitoring"]
    path = tmp_path / "credit_default.yaml"
    path.write_text(json.dumps(raw))
    with pytest.raises(SpecError, match="has no 'monitoring' section"):
        pipeline.monitor(str(path), "2024-09-01")


def monitored_spec() -> dict:
    import yaml

    return yaml.safe_load(DEMO_SPEC.read_text())
