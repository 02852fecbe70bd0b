"""Every stage after the plan runs with the spec the run was planned with.

A trainer container holds its own copy of ``include/`` (or an older one), and a spec file can be
edited while a run is in flight; either way a run must not switch recipes half-way.
"""

from __future__ import annotations

import shutil

from ml_tasks import pipeline
from ml_tasks.core.artifacts import RunArtifacts
from ml_tasks.core.spec import ModelSpec, load_spec
from ml_tasks.io.store import store_from_settings
from tests.conftest import DEMO_SPEC


def test_stages_after_the_plan_read_the_planned_spec_not_the_file(refit_home, tiny_warehouse_url, tmp_path,
                                                                   monkeypatch):
    include = tmp_path / "include"
    shutil.copytree(DEMO_SPEC.parents[1], include)
    monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    spec_file = include / "models" / DEMO_SPEC.name

    plan = pipeline.plan_run(str(spec_file), "2024-06-01", sample_size=1_000)
    stored = store_from_settings(refit_home).read_json(RunArtifacts(plan["run_prefix"]).spec)
    assert ModelSpec.model_validate(stored) == load_spec(spec_file)

    # The file goes bad after planning (an edit in progress, a pod with another image): the run
    # goes on with what it planned.
    spec_file.write_text("name: [this is not a spec\n")
    snapshot = pipeline.extract(plan)
    validation = pipeline.validate(plan, snapshot)
    assert validation["snapshot_id"] == snapshot["snapshot_id"]
    spec_file.unlink()
    assert pipeline.sample(plan, validation)["rows"] <= 1_000
