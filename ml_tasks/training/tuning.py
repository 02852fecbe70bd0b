"""A fair tuning budget and a learning curve for every candidate family.

Every candidate of a run gets the same budget from the spec (``training.trials`` fits and,
optionally, ``training.time_budget_seconds`` of fitting, whichever runs out first) on the same
validation split, so a family does not win because it was tuned harder. The first trial uses
the spec's ``params`` as written; later trials are asked of Optuna's TPE sampler, seeded with
the spec's seed, over the candidate's ``search`` space (a list is a categorical choice, a range
a float or integer range, on a log scale where it says so). The same seed and the same scores
give the same trials and the same chosen parameters.

Pruning: a family that reports its validation log loss while it fits (LightGBM after every
boosting round, the network after every epoch: :attr:`ml_tasks.models.base.Candidate.on_step`)
is stopped early when its best loss so far is in the worst quarter of the earlier trials'
losses at the same step (Optuna's ``PercentilePruner`` keeping :data:`PRUNE_KEEP_PERCENTILE`,
after :data:`PRUNE_AFTER_TRIALS` finished trials and :data:`PRUNE_WARMUP_STEPS` steps). A pruned
trial is kept in the log with no score; it cannot be chosen. The logistic regression and the
prior fit in one step and are never pruned. Comparing trials at the same step favours fast
learners (a small learning rate is behind at every early round), so the pruner is gentler than
Optuna's usual median: ``bench/bench_tuning.py`` measured the median pruning 45-61 % of the
trials and losing 0.004 validation AUC to unpruned TPE at 30 trials on a problem that needs slow
learners, where this one prunes about 30 % and loses at most 0.0015 (``bench/README.md``).

The learning curve refits the chosen parameters on a quarter and a half of the training rows
(seeded random subsets) and scores them on the validation split: a curve still rising at
"all" says more data would help; a flat one says it would not.

>>> result = tune(candidate_spec, fit_and_score, trials=30, time_budget_seconds=600,
...               higher_is_better=True, seed=7)                          # doctest: +SKIP
>>> result.params, result.score, [t.state for t in result.trials][:3]     # doctest: +SKIP
({'num_leaves': 63, 'learning_rate': 0.0324...}, 0.812..., ['complete', 'complete', 'pruned'])

Optuna is imported only when there is something to search (cold start of a trainer process).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_tasks.core.spec import CandidateSpec, SearchRange
from ml_tasks.models import Candidate

if TYPE_CHECKING:
    from optuna import Study
    from optuna.distributions import BaseDistribution

#: Fractions of the training rows the learning curve fits on.
CURVE_FRACTIONS = (0.25, 0.5, 1.0)
#: A trial goes on while its best validation loss is within this percentile of the earlier
#: trials' at the same step (75: only the worst quarter is pruned; the median would be 50).
PRUNE_KEEP_PERCENTILE = 75.0
#: Finished trials before any trial may be pruned (the percentile needs a few to mean something).
PRUNE_AFTER_TRIALS = 5
#: Steps (boosting rounds, epochs) a trial always runs before it may be pruned: every trial
#: starts badly, a slow learning rate worse than a fast one.
PRUNE_WARMUP_STEPS = 10
#: Trials TPE draws at random before it models the scores (Optuna's default).
TPE_STARTUP_TRIALS = 10

#: ``report(step, validation_loss)``: what a family calls while it fits (may raise to prune).
StepReporter = Callable[[int, float], None]
#: ``fit_and_score(params, trial_number, report)``: fits one trial, returns the model and its
#: validation score; ``report`` goes to the model's ``on_step`` (None: nothing listens).
FitAndScore = Callable[[dict[str, Any], int, StepReporter | None], tuple[Candidate, float]]


@dataclass
class Trial:
    """One fit of the tuning budget; ``state`` is ``complete`` or ``pruned`` (score NaN)."""

    number: int
    params: dict
    score: float
    seconds: float
    state: str = "complete"


@dataclass
class TuningResult:
    """The best model of the budget, and every trial for the log."""

    model: Candidate
    params: dict[str, Any]
    score: float
    trials: list[Trial] = field(default_factory=list)
    stopped_by: str = "trials"


def tune(
    candidate: CandidateSpec,
    fit_and_score: FitAndScore,
    *,
    trials: int,
    time_budget_seconds: float | None,
    higher_is_better: bool,
    seed: int,
    prune: bool = True,
) -> TuningResult:
    """Spend the budget on ``candidate``: ``fit_and_score(params, number, report)`` fits trial
    ``number`` (0, 1, ...; it names the trial's checkpoints) and returns the model with its
    validation score. Without a search space one trial is all there is to do. The time budget is
    checked before each trial after the first, so a trial is never cut short by it.
    ``prune=False`` runs every trial to its end (what the benchmark compares against)."""
    planned = trials if candidate.search else 1
    started = time.perf_counter()
    history: list[Trial] = []
    best: tuple[Candidate, dict[str, Any], float] | None = None

    def record(number: int, params: dict[str, Any], model: Candidate, score: float, seconds: float) -> None:
        nonlocal best
        history.append(Trial(number, params, float(score), seconds))
        if best is None or _better(float(score), best[2], higher_is_better):
            best = (model, params, float(score))

    first_steps: dict[int, float] = {}  # trial 0's validation losses, for the pruner
    params = dict(candidate.params)
    trial_started = time.perf_counter()
    model, score = fit_and_score(params, 0, first_steps.__setitem__ if planned > 1 else None)
    record(0, params, model, score, time.perf_counter() - trial_started)

    stopped_by = "trials"
    if planned > 1:
        with _quiet_optuna():
            study = _study(seed, higher_is_better, prune)
            space = search_distributions(candidate.search)
            _add_spec_trial(study, space, candidate.params, float(score), first_steps, higher_is_better)
            for number in range(1, planned):
                if time_budget_seconds is not None and time.perf_counter() - started >= time_budget_seconds:
                    stopped_by = "time"
                    break
                outcome = _search_trial(study, space, candidate.params, fit_and_score, number, higher_is_better)
                if isinstance(outcome, Trial):
                    history.append(outcome)
                else:
                    record(number, *outcome)
    assert best is not None
    model, params, score = best
    return TuningResult(model=model, params=params, score=score, trials=history, stopped_by=stopped_by)


def search_distributions(space: dict[str, list | SearchRange]) -> dict[str, BaseDistribution]:
    """Optuna's distribution of each searched parameter: a list is a categorical choice, a range
    a float range, or with ``integer`` an integer range between its rounded ends (on a log scale
    from at least 1)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions: dict[str, BaseDistribution] = {}
    for name, values in space.items():
        if isinstance(values, list):
            distributions[name] = CategoricalDistribution(values)
        elif values.integer:
            low = int(round(values.low))
            low = max(low, 1) if values.log else low
            distributions[name] = IntDistribution(low, max(low, int(round(values.high))), log=values.log)
        else:
            distributions[name] = FloatDistribution(values.low, values.high, log=values.log)
    return distributions


def _study(seed: int, higher_is_better: bool, prune: bool) -> Study:
    import optuna

    pruner = (optuna.pruners.PercentilePruner(PRUNE_KEEP_PERCENTILE, n_startup_trials=PRUNE_AFTER_TRIALS,
                                              n_warmup_steps=PRUNE_WARMUP_STEPS)
              if prune else optuna.pruners.NopPruner())
    return optuna.create_study(direction="maximize" if higher_is_better else "minimize", pruner=pruner,
                               sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS))


def _add_spec_trial(study: Study, space: dict[str, BaseDistribution], params: dict[str, Any], score: float,
                    steps: dict[int, float], higher_is_better: bool) -> None:
    """Tell the sampler (and the pruner) about trial 0, when the spec's params give a value
    within the search space for every searched parameter; otherwise TPE learns from the later
    trials only (a trial without some of the parameters would keep multivariate TPE from
    modelling them together)."""
    import optuna

    if not math.isfinite(score) or not all(name in params for name in space):
        return
    sign = 1.0 if higher_is_better else -1.0
    try:  # Optuna's own check that each value lies in its distribution
        trial = optuna.trial.create_trial(
            params={name: params[name] for name in space}, distributions=space, value=score,
            intermediate_values={step: -sign * loss for step, loss in steps.items()})
    except ValueError:
        return
    study.add_trial(trial)


def _search_trial(study: Study, space: dict[str, BaseDistribution], fixed: dict[str, Any], fit_and_score: FitAndScore,
                  number: int, higher_is_better: bool) -> Trial | tuple[dict[str, Any], Candidate, float, float]:
    """Ask the study for one trial's parameters, fit it, and tell the study how it went: the
    pruned trial's log entry, or ``(params, model, score, seconds)`` of a finished one."""
    import optuna
    from optuna.trial import TrialState

    trial = study.ask(space)
    params = {**fixed, **trial.params}
    # Intermediate values are the validation log loss, signed so that the study's direction
    # (the selection metric's) says which is better.
    sign = 1.0 if higher_is_better else -1.0

    def report(step: int, loss: float) -> None:
        trial.report(-sign * loss, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"trial {number}: validation loss {loss:.5g} at step {step} is among the "
                                     "worst quarter of the earlier trials' at that step")

    started = time.perf_counter()
    try:
        model, score = fit_and_score(params, number, report)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return Trial(number, params, math.nan, time.perf_counter() - started, state="pruned")
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    seconds = time.perf_counter() - started
    if math.isfinite(score):
        study.tell(trial, float(score))
    else:  # an undefined metric (one class in the validation rows): nothing for the sampler to learn
        study.tell(trial, state=TrialState.FAIL)
    return params, model, float(score), seconds


def _better(score: float, best: float, higher_is_better: bool) -> bool:
    """Whether ``score`` beats ``best``; a number always beats NaN, NaN never beats anything."""
    if math.isnan(score):
        return False
    if math.isnan(best):
        return True
    return score > best if higher_is_better else score < best


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off while tuning (the trials go to MLflow); restored after."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


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
