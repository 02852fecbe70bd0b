"""How Refit names its datasets for OpenLineage, and that lineage is off until OpenLineage is
configured (the events themselves: ``tests/e2e/test_lineage.py``)."""

from __future__ import annotations

import contextlib
import os
import tempfile

import pytest

from ml_tasks.core.settings import REPO_ROOT

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))

from refit_airflow import lineage


@pytest.mark.parametrize(("url", "table", "named"), [
    ("postgresql+psycopg://etl:Kx9Canary7q@db/warehouse", "customers",
     ("postgres://db:5432", "warehouse.public.customers")),
    ("postgresql://etl@db:6543/w", "sales.orders", ("postgres://db:6543", "w.sales.orders")),
    ("sqlite:////srv/refit/warehouse.db", "outcomes", ("sqlite:////srv/refit/warehouse.db", "outcomes")),
])
def test_tables_are_named_as_openlineage_names_them_without_the_login(url, table, named):
    assert lineage.table_name(url, table) == named


@pytest.mark.parametrize(("uri", "named"), [
    ("s3://refit/snapshots/credit_default/ab12/data.parquet",
     ("s3://refit", "snapshots/credit_default/ab12/data.parquet")),
    ("/srv/refit/artifacts/snapshots/credit_default/ab12/data.parquet",
     ("file", "/srv/refit/artifacts/snapshots/credit_default/ab12/data.parquet")),
    ("file:///srv/refit/a.parquet", ("file", "/srv/refit/a.parquet")),
])
def test_snapshots_are_named_by_bucket_and_key_or_path(uri, named):
    assert lineage.file_name(uri) == named


def test_the_registry_namespace_is_its_uri_without_the_login():
    assert lineage.registry_namespace("http://refit:Kx9Canary7q@mlflow:5000") == "mlflow+http://mlflow:5000"
    assert lineage.registry_namespace("sqlite:////srv/refit/mlflow.db") == "mlflow+sqlite:////srv/refit/mlflow.db"


def test_without_a_transport_openlineage_is_off_and_lineage_does_nothing(monkeypatch):
    for name in [n for n in os.environ if "OPENLINEAGE" in n]:
        monkeypatch.delenv(name)
    started = []
    with monkeypatch.context() as patched:
        patched.setattr(lineage, "_never_failing", lambda task: started.append(task) or contextlib.nullcontext())
        assert not lineage.enabled()
        lineage.extraction_lineage({}, {}, None)
        lineage.registration_lineage({}, {})
    assert started == []

    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", '{"type": "console"}')
    assert lineage.enabled()
    lineage.registration_lineage({}, {})  # manifests it cannot read: logged, never the task's failure
