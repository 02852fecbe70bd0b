"""Refit's Airflow plugin: registers the listener that writes verdicts as DAG run notes."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from refit_airflow import notes


class RefitPlugin(AirflowPlugin):
    name = "refit"
    listeners = [notes]
