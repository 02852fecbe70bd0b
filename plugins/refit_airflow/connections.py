"""Where the warehouse is, in deployed mode: the ``warehouse_default`` Airflow connection."""

from __future__ import annotations

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from ml_tasks.core.settings import sqlalchemy_url

WAREHOUSE_CONN_ID = "warehouse_default"


def warehouse_url(conn_id: str = WAREHOUSE_CONN_ID) -> str | None:
    """The connection's SQLAlchemy URL, or None when it is not defined (embedded mode)."""
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    return sqlalchemy_url(connection.get_uri())
