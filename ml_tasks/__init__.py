"""Refit's ML library: every retraining stage as a function with typed inputs and outputs.

Each stage also runs from the command line (``python -m ml_tasks <stage>``), so a task can be
re-run alone and the same code runs in a local process, an Airflow worker or a trainer
container. This package never imports Airflow (``plugins/refit_airflow`` is the Airflow side).

The packages are layers, lowest first; a module imports only from its own layer and the ones
below it (``tests/test_layout.py`` checks this, and that no import cycle exists):

=============  ===============================================================================
``core``       the model spec, settings, manifests, column names and metric directions, the
               names of every run artifact, the CPU budget, the run plan
``io``         the artifact store (local folder or S3), the warehouse engines, Arrow streaming
``data``       extract, validate, sample, split, backtest folds, drift, the demo warehouse
``evaluation`` weighted metrics, calibration error, charts of model quality, statistical tests
``models``     the candidate interface, every model family, the calibrators they are served with
``registry``   MLflow tracking, the registry's versions and aliases, the pyfunc form
``training``   train one candidate (tuning, calibration choice, warm start), backtest its recipe
``gating``     score every model on the same test rows, then decide
``reporting``  the gating report and its charts, gate-result history, notifications, status
=============  ===============================================================================

On top, :mod:`ml_tasks.pipeline` turns manifests into stage calls (what the DAG's tasks and the
CLI call) and :mod:`ml_tasks.cli` is ``python -m ml_tasks``.
"""

__version__ = "0.1.0"
