"""Benchmark: the LightGBM candidate's whole fit against a bare ``lightgbm.train`` on the same data.

    .venv/bin/python bench/bench_lightgbm.py [--rows 500000] [--rounds 200] [--repeat 3]

Both fit the same synthetic demo-like rows (9 numeric features, 3 categoricals) with the same
parameters, validation set and early stopping:

``bare``
    ``lightgbm.train`` on a frame whose categoricals are already ``pd.Categorical`` and whose
    numerics are float64: what a hand-written script that prepared its arrays would time.
``candidate``
    ``LightGBMCandidate.fit`` on the model input as the trainer hands it over (numerics
    float64, categoricals as text): category freezing, conversion and dataset construction
    included.

Runs alternate, ``--repeat`` times each; the best of each counts. Goal: candidate <= 1.10x bare.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

NUMERIC = ["age", "income", "employment_years", "amount", "term_months", "credit_score", "existing_debt",
           "prior_applications", "prior_defaults_observed"]
CATEGORICAL = ["region", "purpose", "channel"]


def make_frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(size=rows) for name in NUMERIC})
    levels = {"region": ["north", "south", "east", "west", "central"],
              "purpose": ["car", "home", "education", "debt", "other"],
              "channel": ["branch", "web", "partner", "mobile"]}
    for name, values in levels.items():
        frame[name] = np.asarray(values, dtype=object)[rng.integers(len(values), size=rows)]
    logit = (0.8 * frame.credit_score - 0.6 * frame.existing_debt + 0.3 * frame.amount * frame.income
             + np.where(frame.channel == "mobile", 0.7, 0.0) + np.where(frame.purpose == "debt", 0.4, 0.0) - 2.5)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame, label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import lightgbm as lgb

    from ml_tasks.core.spec import FeaturesSpec
    from ml_tasks.models import LightGBMCandidate

    X, y = make_frame(args.rows, 1)
    X_valid, y_valid = make_frame(args.rows // 5, 2)
    w, w_valid = np.ones(len(y)), np.ones(len(y_valid))
    params = {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 40, "n_estimators": args.rounds,
              "early_stopping_rounds": 20, "num_threads": 2}
    features = FeaturesSpec(numeric=NUMERIC, categorical=CATEGORICAL)

    def prepared(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        for name in CATEGORICAL:
            out[name] = pd.Categorical(out[name], categories=sorted(out[name].unique()))
        return out

    bare_train, bare_valid = prepared(X), prepared(X_valid)
    bare_params = {"learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 40, "objective": "binary", "seed": 0,
                   "deterministic": True, "verbosity": -1, "num_threads": 2}

    def bare() -> int:
        train = lgb.Dataset(bare_train, label=y, weight=w, categorical_feature=CATEGORICAL, free_raw_data=False)
        valid = lgb.Dataset(bare_valid, label=y_valid, weight=w_valid, reference=train, categorical_feature=CATEGORICAL)
        booster = lgb.train(bare_params, train, num_boost_round=args.rounds, valid_sets=[valid],
                            callbacks=[lgb.early_stopping(20, verbose=False)])
        return booster.current_iteration()

    def candidate() -> int:
        model = LightGBMCandidate(features, params, seed=0).fit(X, y, w, X_valid, y_valid, w_valid)
        return model.booster_.current_iteration()

    best = {"bare": float("inf"), "candidate": float("inf")}
    trees = {}
    print(f"{args.rows:,} training rows, {len(y_valid):,} validation rows, up to {args.rounds} rounds, "
          f"LightGBM {lgb.__version__}")
    for round_no in range(1, args.repeat + 1):
        for name, run in (("bare", bare), ("candidate", candidate)):
            started = time.perf_counter()
            trees[name] = run()
            seconds = time.perf_counter() - started
            best[name] = min(best[name], seconds)
            print(f"  round {round_no}: {name:<10} {seconds:7.2f} s  ({trees[name]} trees)", flush=True)
    ratio = best["candidate"] / best["bare"]
    print(f"\nbest: bare {best['bare']:.2f} s, candidate {best['candidate']:.2f} s -> candidate/bare {ratio:.3f}x")
    print(f"goal: candidate <= 1.10x bare lightgbm.train: [{'PASS' if ratio <= 1.10 else 'MISS'}]")
    if trees["bare"] != trees["candidate"]:
        print(f"note: tree counts differ (bare {trees['bare']}, candidate {trees['candidate']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
