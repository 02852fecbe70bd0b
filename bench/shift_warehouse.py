"""A loan book whose risk shifts twice, for replaying retraining policies (``bench/bench_policy.py``).

Unlike the demo warehouse (a slow, steady drift over two years) this one has two drifts at known
dates, and a short label delay, so a policy's reaction to each can be read off a weekly replay:

* **sharp** (:data:`SHARP_AT`): a new ``app`` channel opens and takes :data:`APP_SHARE` of the
  applications from that day on; its applicants are far riskier (+2.0 on the log-odds). A model
  trained before the day has never seen the channel. The effect of a category is learnt from a few
  hundred rows, so a model whose training rows hold a week or two of the channel has it (every
  candidate family can represent it: it is one more level of ``channel``).
* **gradual** (:data:`GRADUAL`): over three months which inputs matter rotates: the bureau score
  loses most of its weight, debt-to-income gains it, tenure turns from protective to risky and
  recent inquiries start to count. A model ages a little every week, as in the demo warehouse but
  faster.

Labels arrive a uniform :data:`LABEL_DELAY_DAYS` after the application. The probability each label
was drawn with is written to its own table, ``shift_truth``, which the model's query never reads:
the replay uses it to tell a served model's excess loss from the loss no model can avoid.

The model's spec and SQL are ``bench/specs/shift_default.yaml`` and ``.sql`` (a new model is a new
spec): :func:`write_include` copies them into an include folder.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text

MODEL = "shift_default"
SPECS = Path(__file__).resolve().parent / "specs"
START = datetime(2023, 9, 1)
END = datetime(2024, 11, 18)
SHARP_AT = datetime(2024, 3, 7)
GRADUAL = (datetime(2024, 6, 1), datetime(2024, 9, 1))
LABEL_DELAY_DAYS = (2, 8)
APP_SHARE = 0.4
CHANNELS = ("branch", "web", "partner")
CHANNEL_LOGIT = {"branch": -0.2, "web": 0.0, "partner": 0.2, "app": 2.0}
REGIONS = ("north", "south", "east", "west")
REGION_LOGIT = {"north": 0.0, "south": 0.1, "east": -0.1, "west": 0.05}
INTERCEPT = -2.9
#: Log-odds per standard unit of each input, before and after the gradual drift (interpolated
#: linearly between the two dates of :data:`GRADUAL`); positive: riskier.
WEIGHTS_BEFORE = {"score": -0.9, "utilisation": 0.7, "debt": 0.5, "tenure": -0.3, "age": -0.1, "inquiries": 0.0}
WEIGHTS_AFTER = {"score": -0.3, "utilisation": 0.7, "debt": 1.1, "tenure": 0.4, "age": -0.1, "inquiries": 0.5}


def ramp(t: np.ndarray) -> np.ndarray:
    """0 before the gradual drift, 1 after it, linear in between (``t`` as datetime64)."""
    begin, end = (np.datetime64(moment) for moment in GRADUAL)
    span = (end - begin) / np.timedelta64(1, "s")
    return np.clip(((t - begin) / np.timedelta64(1, "s")) / span, 0.0, 1.0)


def generate(rows_per_day: int = 300, seed: int = 11) -> dict[str, pd.DataFrame]:
    """``{"shift_applications": ..., "shift_truth": ...}``; the same arguments give the same rows."""
    rng = np.random.default_rng(seed)
    span_s = int((END - START).total_seconds())
    rows = int(rows_per_day * span_s / 86_400)
    applied = np.datetime64(START, "s") + np.sort(rng.integers(0, span_s, size=rows)).astype("timedelta64[s]")
    z = {name: rng.standard_normal(rows) for name in WEIGHTS_BEFORE}
    after_sharp = applied >= np.datetime64(SHARP_AT)
    app = after_sharp & (rng.random(rows) < APP_SHARE)
    channel = np.where(app, "app", np.asarray(CHANNELS, dtype=object)[rng.integers(0, len(CHANNELS), size=rows)])
    region = np.asarray(REGIONS, dtype=object)[rng.integers(0, len(REGIONS), size=rows)]
    r = ramp(applied)
    logit = (INTERCEPT + pd.Series(channel).map(CHANNEL_LOGIT).to_numpy()
             + pd.Series(region).map(REGION_LOGIT).to_numpy())
    for name, before in WEIGHTS_BEFORE.items():
        logit = logit + ((1.0 - r) * before + r * WEIGHTS_AFTER[name]) * z[name]
    p = 1.0 / (1.0 + np.exp(-logit))
    defaulted = (rng.random(rows) < p).astype(np.int64)
    low, high = LABEL_DELAY_DAYS
    delay = rng.integers(low * 86_400, high * 86_400, size=rows, endpoint=True).astype("timedelta64[s]")
    ids = np.arange(1, rows + 1, dtype=np.int64)
    applications = pd.DataFrame({
        "app_id": ids,
        "customer_id": rng.integers(1, max(rows // 3, 2), size=rows),
        "applied_at": applied.astype("datetime64[us]"),
        "observed_at": (applied + delay).astype("datetime64[us]"),
        "defaulted": defaulted,
        "channel": channel.astype(str),
        "region": region.astype(str),
        "bureau_score": np.round(650.0 + 60.0 * z["score"], 0),
        "utilisation": np.round(1.0 / (1.0 + np.exp(-z["utilisation"])), 4),
        "debt_ratio": np.round(np.exp(np.log(0.3) + 0.4 * z["debt"]), 4),
        "tenure_years": np.round(np.clip(6.0 + 3.0 * z["tenure"], 0.0, None), 2),
        "age": np.round(np.clip(42.0 + 11.0 * z["age"], 18.0, 90.0), 1),
        "recent_inquiries": np.round(np.clip(2.0 + 1.5 * z["inquiries"], 0.0, None), 2),
    })
    return {"shift_applications": applications, "shift_truth": pd.DataFrame({"app_id": ids, "true_p": p})}


def build_shift_warehouse(url: str, rows_per_day: int = 300, seed: int = 11) -> dict[str, int]:
    """(Re)write both tables at ``url``; returns their row counts."""
    tables = generate(rows_per_day, seed)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for name, frame in tables.items():
                frame.to_sql(name, conn, index=False, if_exists="replace", chunksize=50_000)
            conn.execute(text("CREATE INDEX IF NOT EXISTS shift_applied ON shift_applications (applied_at)"))
            conn.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS shift_truth_id ON shift_truth (app_id)"))
    finally:
        engine.dispose()
    return {name: len(frame) for name, frame in tables.items()}


def read_truth(url: str) -> pd.Series:
    """The probability each label was drawn with, by ``app_id``."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(text("SELECT app_id, true_p FROM shift_truth"), conn)
    finally:
        engine.dispose()
    return frame.set_index("app_id")["true_p"]


def write_include(include: Path) -> Path:
    """Add this model's spec and SQL to an include folder (templates included); returns the spec."""
    (include / "models").mkdir(parents=True, exist_ok=True)
    (include / "sql").mkdir(exist_ok=True)
    shutil.copy(SPECS / f"{MODEL}.sql", include / "sql" / f"{MODEL}.sql")
    target = include / "models" / f"{MODEL}.yaml"
    shutil.copy(SPECS / f"{MODEL}.yaml", target)
    return target
