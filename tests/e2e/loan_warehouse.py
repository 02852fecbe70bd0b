"""A second warehouse, unlike the demo's: loan approvals whose risk flips at a known date.

Before ``DRIFT_AT`` a high debt ratio and a low salary mean default; from then on (a new credit
product, say) salary stops protecting and tenure takes over, so a model trained before the date
ranks later applicants barely better than chance. The model spec and its SQL are written next
to the data (``write_include``), so the retrain DAG sees this model and no other.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sqlalchemy import create_engine

from ml_tasks.core.settings import REPO_ROOT

MODEL = "loan_approval"
START = datetime(2023, 1, 1)
END = datetime(2025, 1, 1)
DRIFT_AT = datetime(2024, 4, 1)
LABEL_DELAY_DAYS = 30
FEATURES = ["salary", "debt_ratio", "age", "tenure_years"]

SQL = """-- Loan applications with an outcome observed by the as-of date (point in time).
SELECT loan_id, applicant_id, applied_at, outcome_observed_at, defaulted, channel, {columns}
FROM loan_applications
WHERE applied_at >= :window_start
  AND applied_at < :as_of
  AND outcome_observed_at <= :as_of
ORDER BY applied_at, loan_id
"""


def build_loan_warehouse(url: str, rows: int = 9_000, seed: int = 3) -> pd.DataFrame:
    """Write the ``loan_applications`` table to ``url``; returns it."""
    rng = np.random.default_rng(seed)
    span = (END - START).total_seconds()
    applied = pd.to_datetime(np.sort(rng.uniform(0, span, rows)), unit="s", origin=START).floor("s")
    z = {name: rng.normal(size=rows) for name in FEATURES}
    after = np.asarray(applied >= DRIFT_AT)
    before_logit = -2.2 + 1.6 * z["debt_ratio"] - 1.4 * z["salary"] + 0.3 * z["age"]
    after_logit = -2.2 + 0.2 * z["debt_ratio"] + 1.2 * z["salary"] - 1.6 * z["tenure_years"]
    logit = np.where(after, after_logit, before_logit)
    frame = pd.DataFrame({
        "loan_id": np.arange(1, rows + 1),
        "applicant_id": rng.integers(1, rows // 2, size=rows),
        "applied_at": applied,
        "outcome_observed_at": applied + timedelta(days=LABEL_DELAY_DAYS),
        "defaulted": (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int),
        "channel": rng.choice(["branch", "online"], size=rows, p=[0.4, 0.6]),
        "salary": np.round(42_000 * np.exp(0.35 * z["salary"]), 2),
        "debt_ratio": np.round(np.clip(0.35 + 0.12 * z["debt_ratio"], 0.0, 1.5), 4),
        "age": np.round(np.clip(40 + 11 * z["age"], 18, 90), 1),
        "tenure_years": np.round(np.clip(6 + 4 * z["tenure_years"], 0, 45), 2),
    })
    engine = create_engine(url)
    try:
        frame.to_sql("loan_applications", engine, index=False, if_exists="replace")
    finally:
        engine.dispose()
    return frame


def spec(features: list[str], warehouse_url: str) -> dict:
    """The model spec: a logistic baseline and LightGBM, absolute bars a collapsed model fails."""
    return {
        "name": MODEL, "description": "Loan approvals with a sharp concept drift (end-to-end tests).",
        "registry_name": MODEL, "schedule": "0 4 1 * *", "owner": "refit", "tags": ["e2e"],
        "source": {"query_file": f"sql/{MODEL}.sql", "tables": ["loan_applications"], "window_days": 300,
                   "warehouse_url": warehouse_url},
        "columns": {"id": "loan_id", "label": "defaulted", "label_values": [0, 1], "timestamp": "applied_at",
                    "label_observed_at": "outcome_observed_at", "entity": "applicant_id"},
        "features": {"numeric": features, "categorical": ["channel"]},
        "validation": {"min_rows": 500},
        # Synthetic rows can repeat by chance once a feature is dropped: report it, do not stop.
        "leakage": {"duplicate_rows": "warn"},
        "sampling": {"size": 3_000, "segments": ["channel"], "min_per_stratum": 100, "seed": 5},
        "split": {"validation_fraction": 0.2, "test_fraction": 0.3},
        "candidates": [
            {"name": "logistic_baseline", "family": "logistic_regression", "params": {"C": 1.0}},
            {"name": "lightgbm", "family": "lightgbm",
             "params": {"learning_rate": 0.1, "num_leaves": 7, "n_estimators": 60, "min_child_samples": 30}},
        ],
        "backtest": {"folds": 2, "window": "expanding", "train_days": 90, "test_days": 30, "gap_days": 30,
                     "label_delay_days": LABEL_DELAY_DAYS, "staleness_periods": 1, "staleness_tolerance": 0.02},
        "acceptance": {
            "thresholds": {"roc_auc": {"min": 0.7}},
            "champion": [{"metric": "roc_auc", "mode": "non_inferior", "margin": 0.01}],
            "baseline": {"metric": "roc_auc", "mode": "superior"},
            "alpha": 0.05, "bootstrap_replicates": 200,
            "backtest": {"metric": "roc_auc", "min_win_fraction": 0.0, "test": "sign"},
            "guardrails": {"max_latency_ms_per_1k": 5000, "max_latency_ratio": 50, "max_size_mb": 200,
                           "max_size_ratio": 50},
        },
        "trainer": {"image": "refit-trainer:latest", "gpus": 0, "cpus": 1},
    }


def write_include(include: Path, warehouse_url: str, features: list[str] = FEATURES,
                  sql_columns: list[str] = FEATURES) -> Path:
    """An include folder holding only this model (spec, SQL) and the report templates; returns the spec.

    ``features`` are what the spec trains on, ``sql_columns`` what its query selects besides the
    id, time, label and channel columns."""
    if include.exists():
        shutil.rmtree(include)
    shutil.copytree(REPO_ROOT / "include" / "templates", include / "templates")
    (include / "sql").mkdir(parents=True)
    (include / "models").mkdir()
    (include / "sql" / f"{MODEL}.sql").write_text(SQL.format(columns=", ".join(sql_columns)))
    path = include / "models" / f"{MODEL}.yaml"
    path.write_text(yaml.safe_dump(spec(features, warehouse_url), sort_keys=False))
    return path
