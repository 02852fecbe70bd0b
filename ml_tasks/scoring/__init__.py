"""Batch scoring with the champion, and shadow scoring with the latest challenger.

A spec with a ``scoring:`` section (:class:`ml_tasks.core.spec.ScoringSpec`) scores, per run,
the rows its query selects for one interval ``[as_of - window_days, as_of)`` and writes
``id, score, model_version, run_key, scored_at`` to a warehouse table. Two steps, each a
function with typed inputs and outputs:

:func:`ml_tasks.scoring.plan.make_scoring_plan`
    Resolves the interval and its run key, and pins the versions to score with: the one behind
    the ``champion`` alias (a clear error when there is none) and, with ``shadow:
    latest_challenger``, the newest version registered after it.
:func:`ml_tasks.scoring.score.score_interval`
    Streams the query's rows from the warehouse in Arrow batches of ``chunk_rows``
    (:func:`ml_tasks.io.warehouse.stream_query`: binary ``COPY`` on PostgreSQL, read ahead on a
    thread), scores each batch with the models loaded as any MLflow consumer loads them
    (``mlflow.pyfunc`` from ``models:/<name>/<version>``, nothing of Refit's classes), and hands
    the scores to :mod:`ml_tasks.scoring.destination`, which stages them and then, in one
    transaction, replaces the interval's rows. Memory is bounded by a few chunks whatever the
    interval holds.

The served table and the shadow table
-------------------------------------
Champion scores go to ``scoring.destination``; the shadow model's go to
``<destination>_shadow``, never to the served table, so a consumer reading the served table
never sees a score of a model that has not passed its gate. Both tables hold one row per id: a
re-run of an interval replaces its rows (and an id scored again in a later interval gets its
newer score), so nothing is ever duplicated.

``pipeline.plan_scoring`` / ``pipeline.score`` are the entry points the ``score_<model>`` DAG and
``python -m ml_tasks score`` call; they record the plan and the manifest in the artifact store.
"""
