"""Benchmark: the validation metric Optuna's TPE reaches against the random search it replaced,
at the same budget.

    .venv/bin/python bench/bench_tuning.py [--seeds 5] [--trials 30] [--seconds 60] [--rows 20000] [--problems ...]

One LightGBM candidate (the family a spec tunes most, and one that prunes) with a six-parameter
search space is tuned on two problems, under two budgets, by three tuners:

``random``
    the seeded random search Refit used before (copied below as it was: trial 0 the spec's
    params, then independent draws from each list or range);
``tpe``
    :func:`ml_tasks.training.tuning.tune` as the trainer runs it: seeded TPE, pruning a trial whose
    per-round validation log loss is among the worst quarter of the earlier trials';
``tpe-noprune``
    the same without pruning (every trial runs to its early stop).

Problems: ``demo``, the demo warehouse's applications (``ml_tasks.data.demo_warehouse``, 6 %
defaults) split by time 60/20/20; ``interactions``, a generator of this file's own: 12 numeric
features, of which pairs and a triple interact, a sine, an absolute value and a 30-level
categorical with random effects, and 5 pure-noise columns (about 25 % positives); train,
validation and test drawn alike.

Budgets: ``trials`` (``--trials`` fits, no time limit) and ``time`` (``--seconds`` of tuning, at
most 200 trials; the budget is checked before each trial, as the trainer does). Each seed runs
the three tuners one after the other (interleaved, so machine noise hits all alike). Printed:
per problem, budget and tuner, the mean (sd, min-max over seeds) of the best validation ROC AUC
(what tuning maximises), the chosen model's test ROC AUC (what it was for), trials run and
pruned, and wall seconds; then each TPE variant's paired difference from random per seed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from ml_tasks.core.spec import CandidateSpec, FeaturesSpec, SearchRange
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.models import Candidate, build_candidate
from ml_tasks.training.tuning import TuningResult, tune

SEARCH: dict[str, Any] = {
    "learning_rate": {"low": 0.005, "high": 0.3, "log": True},
    "num_leaves": {"low": 4, "high": 256, "log": True, "integer": True},
    "min_child_samples": {"low": 5, "high": 300, "log": True, "integer": True},
    "colsample_bytree": {"low": 0.3, "high": 1.0},
    "subsample": {"low": 0.5, "high": 1.0},
    "reg_lambda": {"low": 0.001, "high": 30.0, "log": True},
}
#: Fixed for every trial; the first trial adds nothing else (LightGBM's defaults for the rest).
PARAMS: dict[str, Any] = {"n_estimators": 1000, "early_stopping_rounds": 50, "subsample_freq": 1, "num_threads": 1}
TUNERS = ("random", "tpe", "tpe-noprune")

Split = tuple[pd.DataFrame, np.ndarray]


# -- the random search Refit used before (ml_tasks/training/tuning.py at 23a0290) -------------------

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


def random_search(candidate: CandidateSpec, fit_and_score: Callable[..., tuple[Candidate, float]], *, trials: int,
                  time_budget_seconds: float | None, higher_is_better: bool, seed: int) -> TuningResult:
    rng = np.random.default_rng([seed, 0x7E57])
    started = time.perf_counter()
    best: TuningResult | None = None
    count, stopped_by = 0, "trials"
    for number in range(trials):
        params = dict(candidate.params) if number == 0 else {**candidate.params, **draw_params(candidate.search, rng)}
        model, score = fit_and_score(params, number)
        count += 1
        if best is None or (score > best.score if higher_is_better else score < best.score):
            best = TuningResult(model=model, params=params, score=float(score))
        if time_budget_seconds is not None and time.perf_counter() - started >= time_budget_seconds:
            stopped_by = "time" if number + 1 < trials else "trials"
            break
    assert best is not None
    best.trials, best.stopped_by = [None] * count, stopped_by  # type: ignore[list-item]
    return best


# -- problems -------------------------------------------------------------------------------------

DEMO_FEATURES = FeaturesSpec(
    numeric=["age", "income", "employment_years", "amount", "term_months", "credit_score", "existing_debt",
             "prior_applications"],
    categorical=["region", "purpose", "channel"])


def demo_problem(rows: int) -> tuple[FeaturesSpec, Split, Split, Split]:
    """The demo warehouse's applications, oldest first, split 60/20/20 by time."""
    from ml_tasks.data.demo_warehouse import DemoWarehouseSettings, generate_tables
    from ml_tasks.models import feature_frame

    tables = generate_tables(DemoWarehouseSettings(rows=rows, seed=5))
    joined = (tables["applications"].merge(tables["customers"], on="customer_id")
              .merge(tables["outcomes"], on="application_id").sort_values("applied_at", kind="stable"))
    joined["prior_applications"] = joined.groupby("customer_id").cumcount().astype("float64")
    X, y = feature_frame(joined, DEMO_FEATURES).reset_index(drop=True), joined["defaulted"].to_numpy()
    a, b = int(0.6 * rows), int(0.8 * rows)
    return DEMO_FEATURES, (X.iloc[:a], y[:a]), (X.iloc[a:b], y[a:b]), (X.iloc[b:], y[b:])


INTERACTION_FEATURES = FeaturesSpec(numeric=[f"x{i}" for i in range(12)], categorical=["group", "color"])


def interactions(rows: int, rng: np.random.Generator, effects: np.ndarray) -> Split:
    """Rows of the synthetic problem: interactions, a sine, an absolute value, a 30-level
    categorical with random ``effects``; x7..x11 and ``color`` carry nothing."""
    x = rng.normal(size=(rows, 12))
    group = rng.integers(30, size=rows)
    logit = (1.2 * x[:, 0] * x[:, 1] - 0.9 * x[:, 2] * x[:, 3] * (x[:, 4] > 0) + np.sin(2.0 * x[:, 5])
             + 0.6 * np.abs(x[:, 6]) + effects[group] - 1.9)
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(x, columns=INTERACTION_FEATURES.numeric)
    frame["group"] = np.asarray([f"g{g}" for g in range(30)], dtype=object)[group]
    frame["color"] = np.asarray(["red", "green", "blue", "grey"], dtype=object)[rng.integers(4, size=rows)]
    return frame, y


def interaction_problem(rows: int) -> tuple[FeaturesSpec, Split, Split, Split]:
    rng = np.random.default_rng(11)
    effects = rng.normal(0.0, 0.8, size=30)
    train = interactions(int(0.6 * rows), rng, effects)
    return (INTERACTION_FEATURES, train, interactions(int(0.2 * rows), rng, effects),
            interactions(int(0.2 * rows), rng, effects))


PROBLEMS = {"demo": demo_problem, "interactions": interaction_problem}


# -- running --------------------------------------------------------------------------------------

def run_once(tuner: str, problem: tuple[FeaturesSpec, Split, Split, Split], trials: int,
             seconds: float | None, seed: int) -> dict[str, float]:
    features, (X, y), (Xv, yv), (Xt, yt) = problem
    spec = CandidateSpec(name="gbm", family="lightgbm", params=PARAMS, search=SEARCH)

    def fit_and_score(params: dict, number: int, report: Any = None) -> tuple[Candidate, float]:
        model = build_candidate(spec.model_copy(update={"params": params}), features, seed=seed)
        if report is not None:
            model.on_step = report
        model.fit(X, y, None, Xv, yv, None)
        return model, compute_metrics(yv, model.predict_proba(Xv)[:, 1], None)["roc_auc"]

    started = time.perf_counter()
    budget = {"trials": trials, "time_budget_seconds": seconds, "higher_is_better": True, "seed": seed}
    if tuner == "random":
        result = random_search(spec, fit_and_score, **budget)
    else:
        result = tune(spec, fit_and_score, prune=tuner == "tpe", **budget)
    wall = time.perf_counter() - started
    test = compute_metrics(yt, result.model.predict_proba(Xt)[:, 1], None)["roc_auc"]
    pruned = sum(getattr(t, "state", "") == "pruned" for t in result.trials)
    return {"valid": result.score, "test": test, "trials": len(result.trials), "pruned": pruned, "wall": wall}


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ±{sd:.4f} [{min(values):.4f}–{max(values):.4f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=30, help="the trials budget")
    parser.add_argument("--seconds", type=float, default=60.0, help="the time budget (0: skip it)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per problem (train 60 %%)")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    args = parser.parse_args(argv)

    import lightgbm
    import optuna

    print(f"lightgbm {lightgbm.__version__}, optuna {optuna.__version__}; {args.rows:,} rows per problem, "
          f"seeds 0..{args.seeds - 1}")
    budgets = [("trials", args.trials, None)] + ([("time", 200, args.seconds)] if args.seconds > 0 else [])
    results: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for name in args.problems:
        problem = PROBLEMS[name](args.rows)
        print(f"{name}: {len(problem[1][1]):,} train rows ({problem[1][1].mean():.1%} positive), "
              f"{len(problem[2][1]):,} validation, {len(problem[3][1]):,} test", flush=True)
        for budget, trials, seconds in budgets:
            for seed in range(args.seeds):
                for tuner in TUNERS:
                    outcome = run_once(tuner, problem, trials, seconds, seed)
                    results.setdefault((name, budget, tuner), []).append(outcome)
                    print(f"  {budget:6} seed {seed} {tuner:12} valid {outcome['valid']:.4f} test {outcome['test']:.4f}"
                          f" trials {outcome['trials']:3.0f} pruned {outcome['pruned']:3.0f} {outcome['wall']:6.1f} s",
                          flush=True)

    label = {"trials": f"{args.trials} trials", "time": f"{args.seconds:g} s"}
    print(f"\n{'problem':13}{'budget':10}{'tuner':13}{'best validation AUC (mean ±sd [min–max])':44}"
          f"{'test AUC of the chosen model':44}{'trials':>7}{'pruned':>7}{'wall s':>8}")
    for (name, budget, tuner), runs in results.items():
        print(f"{name:13}{label[budget]:10}{tuner:13}{spread([r['valid'] for r in runs]):44}"
              f"{spread([r['test'] for r in runs]):44}{statistics.mean(r['trials'] for r in runs):7.1f}"
              f"{statistics.mean(r['pruned'] for r in runs):7.1f}{statistics.mean(r['wall'] for r in runs):8.1f}")
    print("\npaired by seed, minus random (mean ±sd; seeds better/worse):")
    for (name, budget, tuner), runs in results.items():
        if tuner == "random":
            continue
        base = results[(name, budget, "random")]
        for metric in ("valid", "test"):
            d = [r[metric] - b[metric] for r, b in zip(runs, base, strict=True)]
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            print(f"  {name:13}{label[budget]:10}{tuner:13}{metric:6} {statistics.mean(d):+.4f} ±{sd:.4f}  "
                  f"{sum(x > 0 for x in d)}/{sum(x < 0 for x in d)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
