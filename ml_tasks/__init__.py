"""Refit's ML library: every retraining stage as a pure function with typed inputs and outputs.

Each stage also runs from the command line (``python -m ml_tasks <stage>``), so a task can be
re-run alone and the same code runs in a local process, an Airflow worker or a trainer
container. This package never imports Airflow.
"""

__version__ = "0.1.0"
