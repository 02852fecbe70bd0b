"""A fair tuning budget and a learning curve for every candidate family.

Every candidate of a run gets the same budget from the spec (``training.trials`` fits and,
optionally, ``training.time_budget_seconds`` of fitting, whichever runs out first) on the same
validation split, so a family does not win because it was tuned harder. The first trial uses
the spec's ``params`` as written; later trials draw from the candidate's ``search`` space with
a seeded random search (simple, reproducible, and as good as grid search for a few trials).

The learning curve refits the chosen parameters on a quarter and a half of the training rows
(seeded random subsets) and scores them on the validation split: a curve still rising at
"all" says more data would help; a flat one says it would not.

>>> space = {"num_leaves": [15, 31, 63], "learning_rate": {"low": 0.01, "high": 0.2, "log": True}}
>>> draw_params(space, np.random.default_rng(0))                      # doctest: +SKIP
{'num_leaves': 63, 'learning_rate': 0.0324...}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_tasks.core.spec import CandidateSpec, SearchRange
from ml_tasks.models import Candidate

#: Fractions of the training rows the learning curve fits on.
CURVE_FRACTIONS = (0.25, 0.5, 1.0)


@dataclass
class Trial:
    """One fit of the tuning budget."""

    number: int
    params: dict
    score: float
    seconds: float


@dataclass
class TuningResult:
    """The best model of the budget, and every trial for the log."""

    model: Candidate
    params: dict[str, Any]
    score: float
    trials: list[Trial] = field(default_factory=list)
    stopped_by: str = "trials"


def draw_params(space: dict[str, list | SearchRange], rng: np.random.Generator) -> dict:
    """One point of the search space: a choice from each list, a draw from each range."""
    drawn = {}
    for name, values in space.items():
        if isinstance(values, list):
            drawn[name] = values[int(rng.integers(len(values)))]
        else:
            low, high = (math.log(values.low), math.log(values.high)) if values.log else (values.low, values.high)
            value = float(rng.uniform(low, high))
            value = math.exp(value) if values.log else value
            drawn[name] = int(round(value)) if values.integer else value
    return drawn


def tune(
    candidate: CandidateSpec,
    fit_and_score: Callable[[dict[str, Any], int], tuple[Candidate, float]],
    *,
    trials: int,
    time_budget_seconds: float | None,
    higher_is_better: bool,
    seed: int,
) -> TuningResult:
    """Spend the budget on ``candidate``: ``fit_and_score(params, number)`` fits trial ``number``
    (0, 1, ...; it names the trial's checkpoints) and returns the model with its validation score.
    Without a search space one trial is all there is to do."""
    rng = np.random.default_rng([seed, 0x7E57])
    planned = trials if candidate.search else 1
    started = time.perf_counter()
    best: TuningResult | None = None
    history: list[Trial] = []
    stopped_by = "trials"
    for number in range(planned):
        params = dict(candidate.params) if number == 0 else {**candidate.params, **draw_params(candidate.search, rng)}
        trial_started = time.perf_counter()
        model, score = fit_and_score(params, number)
        history.append(Trial(number, params, float(score), time.perf_counter() - trial_started))
        better = best is None or (score > best.score if higher_is_better else score < best.score)
        if better:
            best = TuningResult(model=model, params=params, score=float(score))
        if time_budget_seconds is not None and time.perf_counter() - started >= time_budget_seconds:
            stopped_by = "time" if number + 1 < planned else "trials"
            break
    assert best is not None
    best.trials, best.stopped_by = history, stopped_by
    return best


def learning_curve(fit_and_score: Callable[[np.ndarray], float], train_rows: int, seed: int,
                   full_score: float | None = None) -> list[tuple[int, float]]:
    """(rows, validation score) for a quarter, a half and all of the training rows.

    ``fit_and_score(index)`` fits on the training rows at ``index`` (sorted, so time order is
    kept) and returns the validation score; ``full_score``, when known (the tuned model was fit
    on all rows), saves the last fit.
    """
    rng = np.random.default_rng([seed, 0xC0DE])
    order = rng.permutation(train_rows)
    points = []
    for fraction in CURVE_FRACTIONS:
        rows = max(int(train_rows * fraction), 1)
        if fraction == 1.0 and full_score is not None:
            points.append((rows, float(full_score)))
        else:
            points.append((rows, float(fit_and_score(np.sort(order[:rows])))))
    return points
