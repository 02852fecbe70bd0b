"""Synthetic monitored streams for the trigger tests: a champion scoring rows whose labels follow it,
until a shift of a given size; every draw seeded, so each measured rate is the same on every run."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from ml_tasks.core.spec import MonitoringSpec
from ml_tasks.evaluation.metrics import weighted_roc_auc
from ml_tasks.monitoring.health import Health, HealthRecord, TriggerState
from ml_tasks.monitoring.live import judge_decay, live_interval
from ml_tasks.monitoring.triggers import evaluate_triggers

START = datetime(2024, 3, 1)
#: The champion's score is expit(CHAMPION_COEF * x + INTERCEPT); the labels follow ``coef`` instead.
CHAMPION_COEF, INTERCEPT = 2.0, -2.0


def labelled_rows(rng: np.random.Generator, n: int, coef: float = CHAMPION_COEF,
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``n`` rows: labels drawn with ``coef`` (the champion's own coefficient: a stable stream), and
    the champion's scores of them."""
    x = rng.normal(size=n)
    y = (rng.random(n) < expit(coef * x + INTERCEPT)).astype(float)
    return y, expit(CHAMPION_COEF * x + INTERCEPT)


def registered_auc(seed: int = 0, n: int = 400_000) -> float:
    """The champion's AUC on the stable stream, from many rows: what its test split would have measured."""
    y, p = labelled_rows(np.random.default_rng(seed), n)
    return weighted_roc_auc(p, y, np.ones(n))


def decay_health(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64], registered: float, margin: float,
                 alpha: float) -> Health:
    """The health of one run whose only measurement is the live ROC AUC."""
    judged = judge_decay(live_interval("roc_auc", y, p, alpha), registered, margin)
    return Health(rows=len(y), label_rate=None, reference_label_rate=None, null_rates={}, psi={}, decay=judged,
                  age_days=0.0)


def runs_until(monitoring: MonitoringSpec, healths: list[Health], trigger: str) -> int | None:
    """The index of the first run whose ``trigger`` trips, or None."""
    for index, health in enumerate(healths):
        state = next(s for s in evaluate_triggers(monitoring, health) if s.name == trigger)
        if state.tripped:
            return index
    return None


def record(day: float, fired: list[str], version: str = "1") -> HealthRecord:
    """A health record of the run ``day`` days after :data:`START` in which ``fired`` fired."""
    states = [TriggerState(name=name, tripped=True, fired=True, reason="test") for name in fired]
    return HealthRecord(model="m", registry_name="m", run_key=f"run-{day}", as_of=START + timedelta(days=day),
                        window_start=START, dag_run_id="test", champion_version=version, champion_snapshot=None,
                        health=Health(rows=0, label_rate=None, reference_label_rate=None, null_rates={}, psi={},
                                      age_days=day),
                        triggers=states, written_at=START + timedelta(days=day))
