"""Airflow-only pieces of Refit: the trainer operator (and, later, the report view and notifiers)."""
