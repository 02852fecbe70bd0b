"""Embedded-mode Airflow: the environment that runs Airflow on SQLite metadata under ``REFIT_HOME``.

Returned as variables, not applied, so the demo and the end-to-end tests start Airflow as a
subprocess with exactly this configuration. It lives on the Airflow side: ``ml_tasks`` knows
where Refit keeps its state (:class:`ml_tasks.core.settings.Settings`), not how Airflow is run.
"""

from __future__ import annotations

from ml_tasks.core.settings import REPO_ROOT, Settings


def embedded_airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for running Airflow in embedded mode (SQLite metadata under REFIT_HOME)."""
    airflow_home = settings.home / "airflow"
    return {
        "REFIT_HOME": str(settings.home),
        "REFIT_INCLUDE_DIR": str(settings.include_dir),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        # mlflow's logging set-up otherwise replaces the handlers of Airflow's task logs.
        "MLFLOW_CONFIGURE_LOGGING": "false",
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }
