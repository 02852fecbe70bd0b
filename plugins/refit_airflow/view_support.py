"""What Refit's views in the Airflow UI share: the mount point, the login they require, the one
artifact store and template folder of the API server, and the paths the browser sees.

The views (:mod:`refit_airflow.report_view`, :mod:`refit_airflow.health_view`) are one FastAPI
app that the plugin mounts on Airflow's API server under :data:`URL_PREFIX`; the UI frames them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, HTTPException, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape

URL_PREFIX = "/refit"

#: Every page requires an Airflow login with read access to DAG runs: the browser's Airflow session
#: cookie is sent along with the frame's requests, as with the UI's own API calls.
can_read_runs = Depends(requires_access_dag("GET", DagAccessEntity.RUN))


@lru_cache(maxsize=1)
def store():
    """One store (and S3 client) for the server's life: settings come from its environment."""
    from ml_tasks.core.settings import load_settings
    from ml_tasks.io.store import store_from_settings

    return store_from_settings(load_settings())


@lru_cache(maxsize=1)
def templates() -> Environment:
    from ml_tasks.core.settings import load_settings

    return Environment(loader=FileSystemLoader(load_settings().include_dir / "templates"),
                       autoescape=select_autoescape(["html", "j2"]))


def base(request: Request) -> str:
    """The views' own path as the browser sees it (the mount point, behind any URL prefix)."""
    return request.scope.get("root_path", "").rstrip("/")


def airflow_base(request: Request) -> str:
    """The Airflow UI's own path (links to DAG runs open there, outside the frame)."""
    return base(request).removesuffix(URL_PREFIX)


@contextmanager
def bad_request() -> Iterator[None]:
    """A ValueError (a parameter that names no model or run) becomes a 400 with its message."""
    try:
        yield
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
