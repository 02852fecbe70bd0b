"""How good a model is, and how sure: weighted metrics, calibration error and reliability, and the
paired statistical tests (:mod:`ml_tasks.evaluation.statistics`)."""
