"""OpenLineage for the stages that move data between systems: extraction and registration.

The OpenLineage provider's listener emits a START and a COMPLETE event for every task once
OpenLineage is configured (``[openlineage] transport``, i.e. ``AIRFLOW__OPENLINEAGE__TRANSPORT``,
a ``config_path``, or ``OPENLINEAGE_URL``); with none of them the provider turns itself off, and
so do these functions: no listener, no events, no network.

A TaskFlow task has no extractor, and what these two read and write is known only as they run
(the snapshot's id, the model version). So each adds it to its own ``inlets`` and ``outlets`` as
OpenLineage datasets before it returns, and the listener reads them when the task succeeds (the
provider's manually annotated lineage, its fallback after hook lineage). Airflow turns only
Assets among a task's outlets into Asset events, so these add none.

* ``extract``: inputs, the spec's source tables, named as OpenLineage names them
  (``postgres://host:5432`` + ``database.schema.table``; a SQLite warehouse, its SQLAlchemy URL
  without the driver, ``sqlite:////path/warehouse.db``, + ``table``); output, the committed
  snapshot (``s3://bucket`` + key, or ``file`` + path) with its id as dataset version and its
  rows and bytes as output statistics.
* ``register``: input, the snapshot; output, the registered model (``mlflow+<registry URI>``, no
  login, + the registry name) with the version as dataset version. A run that registered nothing
  (a failed gate, a dry run, a verdict held for approval) has no output. ``apply_approval``,
  which registers the version a person approved, reports the same pair.

Lineage never fails a task: a problem building it is logged and the task goes on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ml_tasks.core.redact import redact

log = logging.getLogger(__name__)

#: OpenLineage's names for SQLAlchemy's backends, where they differ, and their default ports.
_BACKENDS = {"postgresql": "postgres"}
_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306, "mssql": 1433}
#: The schema a table without one is in, where the database has a fixed default.
_DEFAULT_SCHEMAS = {"postgres": "public"}


def enabled() -> bool:
    """Whether the OpenLineage provider is installed and configured to emit (it is off without a
    transport). An image without the provider (the compose stack's) runs its DAGs without lineage."""
    try:
        from airflow.providers.openlineage import conf
    except ImportError:
        return False
    return not conf.is_disabled()


def extraction_lineage(plan: dict, snapshot: dict, warehouse_url: str | None) -> None:
    """In the extract task: the warehouse tables it read, and the snapshot it wrote."""
    if not enabled():
        return
    with _never_failing("extract"):
        from ml_tasks import pipeline

        url, tables = pipeline.extraction_source(plan, warehouse_url)
        _annotate(inputs=[_input(*table_name(url, table)) for table in tables],
                  outputs=[_snapshot(snapshot, output=True)])


def registration_lineage(validation_manifest: dict, registration: dict, task: str = "register") -> None:
    """In the register task (or ``apply_approval``, which registers an approved version): the
    snapshot the model was trained on, and the version it registered."""
    if not enabled():
        return
    with _never_failing(task):
        from ml_tasks.core.settings import load_settings

        outputs = []
        if registration.get("version") is not None:
            outputs.append(_output(registry_namespace(load_settings().mlflow_tracking_uri),
                                   registration["registry_name"], version=str(registration["version"])))
        _annotate(inputs=[_snapshot(validation_manifest["snapshot"], output=False)], outputs=outputs)


def table_name(warehouse_url: str, table: str) -> tuple[str, str]:
    """(namespace, name) of ``table`` in the warehouse at ``warehouse_url``, as OpenLineage names
    tables: the server as namespace, ``database.schema.table`` as name; for a database that is one
    file (SQLite), the file as namespace and the table as name. No login is part of either."""
    from ml_tasks.io.warehouse.urls import parse_url

    url = parse_url(warehouse_url)
    backend = _BACKENDS.get(url.get_backend_name(), url.get_backend_name())
    if not url.host:
        return f"{backend}:///{url.database or ''}", table
    port = url.port or _DEFAULT_PORTS.get(backend)
    namespace = f"{backend}://{url.host}" + (f":{port}" if port else "")
    schema = _DEFAULT_SCHEMAS.get(backend) if "." not in table else None
    return namespace, ".".join(part for part in (url.database, schema, table) if part)


def file_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of a file: an object store's bucket and key, or ``file`` and the path."""
    parts = urlsplit(uri)
    if parts.scheme and parts.scheme != "file" and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")
    return "file", parts.path if parts.scheme == "file" else uri


def registry_namespace(registry_uri: str) -> str:
    """The MLflow registry as a namespace: ``mlflow+`` and its URI without the login."""
    scheme, separator, rest = registry_uri.partition("://")
    host, slash, path = rest.partition("/")
    return f"mlflow+{scheme}{separator}{host.rpartition('@')[2]}{slash}{path}"


def _snapshot(snapshot: dict, output: bool) -> Any:
    namespace, name = file_name(snapshot["uri"])
    if not output:
        return _input(namespace, name, version=snapshot["snapshot_id"])
    return _output(namespace, name, version=snapshot["snapshot_id"], rows=snapshot.get("rows"),
                   size=snapshot.get("data_bytes"))


def _input(namespace: str, name: str, version: str | None = None) -> Any:
    from openlineage.client.event_v2 import InputDataset

    return InputDataset(namespace=namespace, name=name, facets=_version(version))


def _output(namespace: str, name: str, version: str | None = None, rows: int | None = None,
            size: int | None = None) -> Any:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import output_statistics_output_dataset

    statistics: dict[str, Any] = {} if rows is None else {
        "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=rows,
                                                                                                size=size)}
    return OutputDataset(namespace=namespace, name=name, facets=_version(version), outputFacets=statistics)


def _version(version: str | None) -> dict[str, Any]:
    from openlineage.client.facet_v2 import dataset_version_dataset

    return {} if version is None else {"version": dataset_version_dataset.DatasetVersionDatasetFacet(version)}


def _annotate(inputs: list[Any], outputs: list[Any]) -> None:
    """Add the datasets to the running task's inlets and outlets, where the listener reads them."""
    from airflow.sdk import get_current_context

    task = get_current_context()["task"]
    task.inlets = [*task.inlets, *inputs]
    task.outlets = [*task.outlets, *outputs]


@contextlib.contextmanager
def _never_failing(task: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # lineage is a by-product: the task's own work is done
        log.warning("OpenLineage: the %s task's lineage is left out: %s", task,
                    redact(f"{type(exc).__name__}: {exc}"))
