"""Champion health between retrains: is the champion still good, has its data moved, is a retrain due?

``monitor_<model>`` (and ``python -m ml_tasks monitor``) runs :func:`ml_tasks.pipeline.monitor`
on the spec's ``monitoring:`` schedule. The pieces, each pure and tested on its own:

:mod:`.profile`   binned feature profiles built from Arrow batches in bounded memory, and PSI
:mod:`.live`      the champion's live metric with a confidence interval, and a *significant* decay
:mod:`.health`    the health record each run appends to the store, and the trend ``status`` shows
:mod:`.triggers`  decay, drift, volume and age triggers, and the cool-down
:mod:`.monitor`   one run: stream the new window from the warehouse, score it, measure, decide

A fired trigger makes the monitor DAG emit the Asset ``refit://<registry_name>/retrain-trigger``
with the reasons in its extra; the retrain DAG is scheduled on its cron or that Asset.
"""
