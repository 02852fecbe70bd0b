"""Fixtures of the training tests."""

from __future__ import annotations

import pytest

from ml_tasks import pipeline
from tests.conftest import DEMO_SPEC, isolated_env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_warehouse_url):
    """A planned run of the demo model up to the split, in its own REFIT_HOME: ``(settings, plan, split)``."""
    monkeypatch = pytest.MonkeyPatch()
    settings = isolated_env(monkeypatch, tmp_path_factory.mktemp("train") / "refit")
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    plan = pipeline.plan_run(str(DEMO_SPEC), "2024-06-01", sample_size=6_000)
    validation = pipeline.validate(plan, pipeline.extract(plan))
    split = pipeline.split(plan, pipeline.sample(plan, validation))
    yield settings, plan, split
    monkeypatch.undo()
