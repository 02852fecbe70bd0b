"""Nothing is left behind by a failed or stopped extraction: a snapshot that fails validation
leaves no staged copy, and an extraction stopped by SIGTERM (how Airflow stops a task) or killed
outright leaves no temporary folder.

The extraction runs as the real stage, ``python -m ml_tasks extract``, in its own process on a
warehouse large enough to be stopped mid-run, and is stopped with real signals.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ml_tasks.core.plan import make_plan
from ml_tasks.data.extract import extract_snapshot
from ml_tasks.data.validate import DataValidationError, run_validation
from ml_tasks.io.store import store_from_settings
from tests.conftest import DEMO_SPEC

AS_OF = "2024-09-01"
#: Applications in the larger warehouse: its extraction runs for about a second on SQLite.
LARGER_ROWS = 150_000


@pytest.fixture(scope="module")
def larger_warehouse_url(tmp_path_factory) -> str:
    from ml_tasks.data.demo_warehouse import build_demo_warehouse

    url = f"sqlite:///{tmp_path_factory.mktemp('larger') / 'warehouse.db'}"
    build_demo_warehouse(url, rows=LARGER_ROWS, seed=3)
    return url


def planned(demo_spec, settings, as_of: str = AS_OF) -> str:
    """The URI of a written plan, as ``python -m ml_tasks plan`` leaves it."""
    store = store_from_settings(settings)
    plan = make_plan(demo_spec, DEMO_SPEC, settings.include_dir, store.layout, as_of)
    store.write_json(plan.artifacts.plan, plan.to_xcom())
    return plan.artifacts.plan


def start_extract(plan_uri: str, warehouse_url: str, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "REFIT_WAREHOUSE_URL": warehouse_url, "TMPDIR": str(tmp)}
    return subprocess.Popen([sys.executable, "-m", "ml_tasks", "extract", "--plan", plan_uri], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def extraction_folders(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("refit-extract-*"))


def stop_mid_extraction(process: subprocess.Popen, tmp: Path, signum: int) -> list[Path]:
    """Send ``signum`` as soon as the extraction's temporary folder exists; the folders seen then."""
    deadline = time.monotonic() + 120
    while not extraction_folders(tmp):
        assert process.poll() is None, f"the extraction ended before it was stopped: {process.communicate()}"
        assert time.monotonic() < deadline, "the extraction never started"
        time.sleep(0.005)
    seen = extraction_folders(tmp)
    process.send_signal(signum)
    process.communicate(timeout=120)
    return seen


def test_a_snapshot_that_fails_validation_leaves_nothing_in_staging_and_a_retry_repeats_the_error(
        demo_spec, refit_home, tiny_warehouse_url, tmp_path):
    path = tmp_path / "warehouse.db"
    shutil.copyfile(tiny_warehouse_url.removeprefix("sqlite:///"), path)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE outcomes SET defaulted = 0"))
    engine.dispose()
    store = store_from_settings(refit_home)
    plan = make_plan(demo_spec, DEMO_SPEC, refit_home.include_dir, store.layout, "2024-03-01")
    snapshot = extract_snapshot(demo_spec, plan, store, f"sqlite:///{path}", refit_home.include_dir)
    assert store.exists(snapshot.staging_uri)

    with pytest.raises(DataValidationError, match=r"column 'defaulted': 1 distinct value"):
        run_validation(demo_spec, plan, snapshot, store)
    assert store.list(store.uri("staging")) == []
    assert store.list(store.uri("snapshots")) == []
    # An Airflow retry of the validate task gets the same verdict, not a missing file.
    with pytest.raises(DataValidationError, match=r"1 distinct value.*staged copy was removed when it failed"):
        run_validation(demo_spec, plan, snapshot, store)


def test_sigterm_mid_extraction_removes_the_temporary_folder_and_stages_nothing(
        demo_spec, refit_home, larger_warehouse_url, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = start_extract(planned(demo_spec, refit_home), larger_warehouse_url, tmp)

    seen = stop_mid_extraction(process, tmp, signal.SIGTERM)

    assert seen, "the extraction's temporary folder was never seen"
    assert process.returncode == 128 + signal.SIGTERM  # SystemExit from the handler, not death by signal
    assert list(tmp.iterdir()) == []
    store = store_from_settings(refit_home)
    assert store.list(store.uri("staging")) == [] and store.list(store.uri("snapshots")) == []


def test_the_folder_of_an_extraction_killed_outright_is_removed_by_the_next_one(
        demo_spec, refit_home, larger_warehouse_url, tiny_warehouse_url, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    killed = start_extract(planned(demo_spec, refit_home), larger_warehouse_url, tmp)
    orphans = stop_mid_extraction(killed, tmp, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL and extraction_folders(tmp) == orphans  # SIGKILL cannot be handled

    # A folder of a live extraction (this test's own process stands in for one) is left alone.
    live = tmp / f"refit-extract-{os.getpid()}-live"
    live.mkdir()
    later = start_extract(planned(demo_spec, refit_home, "2024-03-01"), tiny_warehouse_url, tmp)
    stdout, stderr = later.communicate(timeout=120)
    assert later.returncode == 0, stderr[-3000:]
    assert extraction_folders(tmp) == [live]
