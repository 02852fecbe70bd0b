"""Replaying retraining policies over a timeline: what ``bench/bench_policy.py`` and its test share.

A *policy* is a spec variant (:func:`policy_spec`), never a code path of its own:

``refit``   the spec as written: its cron, its statistical gate, champion health, and the monitor's
            triggers between cron runs;
``always``  the same cron, no gate: no bars, no champion comparison, a baseline comparison that
            cannot fail (non-inferior by a margin of 1 AUC), no slice, fold or guardrail check;
``point``   the same cron, a point-estimate gate: challenger >= champion on the test split in ROC AUC
            and log loss (TFX's change thresholds, ZenML's "latest >= current"), written as
            non-inferiority with margin 0 at ``alpha`` 0.499, which passes when the point estimate
            is above zero by more than 0.003 standard errors (DeLong's z >= 0.0025; the bootstrap's
            shifted-null p at its median), so it is the point estimate but for exact ties; the
            spec's absolute bars stay (TFX's value thresholds), slices and fold wins go;
``never``   the spec with ``schedule: "@once"``: the first model, kept.

``refit_tuned`` (in :data:`ABLATIONS`, replayed only when asked) is Refit's default with the two
changes the replays point at: no accuracy comparison at the decision threshold (a challenger
calibrated to a rising default rate flags more rows, so its accuracy falls while every probability
metric improves) and ``degraded_champion: replace_if_better`` (when the champion fails an absolute
bar after a drift, a challenger significantly better than it may replace it although it misses the
same bar).

A fifth, the *oracle*, needs no runs of its own: at each step it serves whichever is better on the
coming window (the future) of the model it served before and every challenger trained at that
step by any policy (:func:`oracle_choice`). It is an upper bound for promotion decisions made with
the same training runs, not for training itself.

:func:`replay` walks the steps for one policy: at the first step it retrains; at a later one it
retrains when the spec's cron fired since the previous step, else, if the spec has a
``monitoring`` section, it runs the monitor and retrains when a trigger fired. After the step it
records the champion, which serves until the next step. Everything it asks of Refit goes through
:class:`RefitPipeline` (``ml_tasks.pipeline``: the CLI path, the DAG's code).

The rest is arithmetic on predictions (no Refit, no MLflow): each model scored once on every row
of the timeline; window ``t`` holds the rows applied in ``[step t, step t+1)`` (what the model
chosen at step ``t`` served; their labels matured later) or, with ``by="matured"``, the rows whose
labels were observed in it (the monitor's view).
"""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

POLICIES = ("refit", "always", "point", "never")
#: Variants that explain a finding, replayed only when asked (``--ablation``); never in the oracle's pool.
ABLATIONS = ("refit_tuned",)
ORACLE = "oracle"
LABELS = {"refit": "Refit default", "always": "cron, always replace", "point": "cron, point-estimate gate",
          "never": "never retrain", ORACLE: "oracle", "refit_tuned": "Refit, tuned gate"}
#: A sharp drift counts as recovered from once the served model's excess loss over the true
#: probabilities is back within this many standard errors of its level before the drift.
RECOVERY_Z = 2.0
#: One-sided z beyond which a promoted model is worse than the one it replaced ("beyond noise").
WRONG_Z = 1.645

Array = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------------------------
# Policies as spec variants
# ---------------------------------------------------------------------------------------------

def policy_spec(base: dict[str, Any], policy: str) -> dict[str, Any]:
    """The spec (as loaded YAML) a policy runs with; ``base`` is Refit's default and is not changed."""
    if policy not in POLICIES + ABLATIONS:
        raise ValueError(f"policy {policy!r}: expected one of {POLICIES + ABLATIONS}")
    spec = copy.deepcopy(base)
    spec.pop("scoring", None)  # served quality is measured here, not by a scoring table
    if not policy.startswith("refit"):
        spec.pop("monitoring", None)
    acceptance = spec.setdefault("acceptance", {})
    if policy == "refit_tuned":  # no accuracy comparison; a challenger better than a failing champion may replace it
        acceptance["champion"] = [c for c in acceptance.get("champion", []) if c.get("metric") != "accuracy"]
        acceptance["degraded_champion"] = "replace_if_better"
    if policy == "always":
        acceptance.update({
            "thresholds": {}, "champion": [],
            "baseline": {"metric": "roc_auc", "mode": "non_inferior", "margin": 1.0},
            "slices": {"columns": []},
            "backtest": {"metric": "roc_auc", "min_win_fraction": 0.0, "test": "sign"},
            "guardrails": {"max_latency_ms_per_1k": None, "max_latency_ratio": None, "max_size_mb": None,
                           "max_size_ratio": None},
        })
    elif policy == "point":
        acceptance.update({
            "alpha": 0.499,
            "champion": [{"metric": "roc_auc", "mode": "non_inferior", "margin": 0.0},
                         {"metric": "log_loss", "mode": "non_inferior", "margin": 0.0}],
            "baseline": {"metric": "roc_auc", "mode": "superior"},
            "slices": {"columns": []},
            "backtest": {"metric": "roc_auc", "min_win_fraction": 0.0, "test": "sign"},
        })
    elif policy == "never":
        spec["schedule"] = "@once"
    return spec


# ---------------------------------------------------------------------------------------------
# The timeline
# ---------------------------------------------------------------------------------------------

def step_dates(start: datetime, end: datetime, days: int) -> list[datetime]:
    """Step moments ``start, start + days, ...`` whose whole window ends by ``end``."""
    steps, moment = [], start
    while moment + timedelta(days=days) <= end:
        steps.append(moment)
        moment += timedelta(days=days)
    return steps


def cron_due(schedule: str, after: datetime, until: datetime) -> bool:
    """Whether ``schedule`` fires in ``(after, until]`` (``@once``: never after the first run)."""
    from croniter import croniter  # type: ignore[import-untyped]

    if schedule == "@once":
        return False
    expression = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *",
                  "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *"}.get(schedule, schedule)
    following: datetime = croniter(expression, after).get_next(datetime)
    return following <= until


# ---------------------------------------------------------------------------------------------
# What a replay asks of Refit
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Retrain:
    """One retrain run: its verdict, the model it put forward (registered or not) and its cost."""

    verdict: str
    challenger: str | None
    challenger_uri: str | None
    cpu_s: float


class Pipeline(Protocol):
    def retrain(self, as_of: datetime, trigger: str | None) -> Retrain: ...

    def monitor(self, as_of: datetime) -> list[str]: ...

    def champion(self) -> tuple[str, str] | None: ...


@dataclass
class Step:
    """What happened at one step of one policy; ``served`` is the champion after it (a model key)."""

    index: int
    as_of: str
    action: str  # "first", "cron", "trigger" or "" (nothing ran)
    fired: list[str] = field(default_factory=list)
    verdict: str | None = None
    challenger: str | None = None
    served: str | None = None
    cpu_s: float = 0.0


class RefitPipeline:
    """:class:`Pipeline` through ``ml_tasks.pipeline`` for the spec at ``spec_path``, in this process
    (its settings come from the environment: REFIT_HOME, REFIT_INCLUDE_DIR, REFIT_WAREHOUSE_URL).

    A model's key is the MLflow run that logged it, which a registered version keeps.
    """

    def __init__(self, spec_path: Path) -> None:
        self.spec_path = str(spec_path)

    def retrain(self, as_of: datetime, trigger: str | None) -> Retrain:
        from ml_tasks import pipeline
        from ml_tasks.core.manifests import GateManifest

        started = _cpu_seconds()
        report = pipeline.run_all(self.spec_path, as_of, trigger=trigger)
        cpu = _cpu_seconds() - started
        ctx = pipeline.context_for(self.spec_path)
        gate = GateManifest.model_validate(ctx.store.read_json(
            ctx.store.layout.run(ctx.spec.name, report["run_key"]).gate))
        model = gate.challenger_model
        return Retrain(verdict=report["verdict"], challenger=model.run_id, challenger_uri=model.model_uri, cpu_s=cpu)

    def monitor(self, as_of: datetime) -> list[str]:
        from ml_tasks import pipeline

        record = pipeline.monitor(self.spec_path, as_of)
        return [f"{state['name']}: {state['reason']}" for state in record["triggers"] if state["fired"]]

    def champion(self) -> tuple[str, str] | None:
        from ml_tasks.core.settings import load_settings
        from ml_tasks.core.spec import load_spec
        from ml_tasks.registry.versions import get_champion

        info = get_champion(load_settings(), load_spec(Path(self.spec_path)).registry_name)
        return None if info is None or info.run_id is None else (info.run_id, info.model_uri)

    def score(self, model_uris: dict[str, str], rows: pd.DataFrame) -> dict[str, Array]:
        """Each model's probability of the positive class for ``rows`` (what its pyfunc form serves)."""
        from ml_tasks.core.settings import load_settings
        from ml_tasks.core.spec import load_spec
        from ml_tasks.monitoring.monitor import champion_scorer
        from ml_tasks.registry.tracking import use_store

        use_store(load_settings())
        spec = load_spec(Path(self.spec_path))
        return {key: np.asarray(champion_scorer(spec, uri)(rows), dtype=float) for key, uri in model_uris.items()}


def _cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def replay(schedule: str, monitored: bool, steps: Sequence[datetime], refit: Pipeline,
           log: Callable[[str], None] = lambda line: None) -> tuple[list[Step], dict[str, str]]:
    """Walk ``steps`` under one policy; returns the steps and every model seen (key → URI).

    A retrain that raises is recorded with verdict ``ERROR: ...`` (the champion is untouched, as
    after any failed run) and the replay goes on.
    """
    records: list[Step] = []
    models: dict[str, str] = {}
    for index, moment in enumerate(steps):
        step = Step(index=index, as_of=moment.isoformat(), action="")
        if index == 0:
            step.action = "first"
        elif cron_due(schedule, steps[index - 1], moment):
            step.action = "cron"
        elif monitored and refit.champion() is not None:
            step.fired = refit.monitor(moment)
            step.action = "trigger" if step.fired else ""
        if step.action:
            started = time.perf_counter()
            try:
                done = refit.retrain(moment, "; ".join(step.fired) or None)
            except Exception as exc:  # a failed run leaves the champion serving; the replay records it
                step.verdict = f"ERROR: {type(exc).__name__}: {exc}"[:500]
            else:
                step.verdict, step.challenger, step.cpu_s = done.verdict, done.challenger, done.cpu_s
                if done.challenger and done.challenger_uri:
                    models[done.challenger] = done.challenger_uri
            log(f"{moment:%Y-%m-%d} {step.action}: {step.verdict} ({time.perf_counter() - started:.1f} s)")
        champion = refit.champion()
        if champion is not None:
            step.served = champion[0]
            models.setdefault(*champion)
        records.append(step)
    return records, models


def steps_to_json(records: list[Step]) -> list[dict[str, Any]]:
    return [asdict(record) for record in records]


def steps_from_json(rows: list[dict[str, Any]]) -> list[Step]:
    return [Step(**row) for row in rows]


# ---------------------------------------------------------------------------------------------
# Windows, served quality and the oracle (numpy only)
# ---------------------------------------------------------------------------------------------

def window_index(moments: pd.Series, steps: Sequence[datetime], step_days: int) -> npt.NDArray[np.intp]:
    """The window of each row (``-1`` outside the timeline): ``t`` for ``[steps[t], steps[t] + step_days)``."""
    edges = np.array([np.datetime64(s) for s in steps] + [np.datetime64(steps[-1] + timedelta(days=step_days))],
                     dtype="datetime64[us]")
    values = pd.to_datetime(moments).to_numpy(dtype="datetime64[us]")
    found = np.searchsorted(edges, values, side="right") - 1
    return np.where((found >= 0) & (found < len(steps)), found, -1).astype(np.intp)


def log_losses(y: Array, p: Array) -> Array:
    from ml_tasks.evaluation.metrics import row_losses

    return row_losses("log_loss", np.asarray(y, dtype=float), np.asarray(p, dtype=float))


@dataclass(frozen=True)
class WindowScores:
    """Per window: rows, log loss and ROC AUC of one sequence of served models."""

    rows: npt.NDArray[np.int64]
    log_loss: Array
    roc_auc: Array

    @property
    def mean_log_loss(self) -> float:
        return float(np.average(self.log_loss, weights=self.rows)) if self.rows.sum() else float("nan")

    @property
    def mean_roc_auc(self) -> float:
        ok = ~np.isnan(self.roc_auc)
        return float(np.average(self.roc_auc[ok], weights=self.rows[ok])) if ok.any() else float("nan")


def served_scores(y: Array, windows: npt.NDArray[np.intp], served: Sequence[str | None],
                  predictions: dict[str, Array]) -> WindowScores:
    """Window ``t`` scored with the model ``served[t]`` (log loss; ROC AUC, NaN with one class)."""
    from ml_tasks.evaluation.metrics import weighted_roc_auc

    count = len(served)
    rows, loss, auc = np.zeros(count, dtype=np.int64), np.full(count, np.nan), np.full(count, np.nan)
    for t, key in enumerate(served):
        mask = windows == t
        rows[t] = int(mask.sum())
        if key is None or not rows[t]:
            continue
        p, labels = predictions[key][mask], y[mask]
        loss[t] = float(log_losses(labels, p).mean())
        if 0 < labels.sum() < len(labels):
            auc[t] = float(weighted_roc_auc(np.clip(p, 1e-7, 1 - 1e-7), labels, np.ones(len(labels))))
    return WindowScores(rows=rows, log_loss=loss, roc_auc=auc)


def window_losses(y: Array, windows: npt.NDArray[np.intp], count: int, p: Array) -> Array:
    """Mean log loss of ``p`` in each of ``count`` windows (NaN for an empty one)."""
    inside = windows >= 0
    sums = np.bincount(windows[inside], weights=log_losses(y[inside], p[inside]), minlength=count)
    rows = np.bincount(windows[inside], minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, sums / np.maximum(rows, 1), np.nan)


def oracle_choice(trained: Sequence[Sequence[str]], losses: dict[str, Array]) -> list[str]:
    """At each step, the better on that step's window of the model served before and the models
    trained at the step (``trained[t]``); a tie keeps the model served."""
    served: list[str] = []
    current: str | None = None
    for t, new in enumerate(trained):
        candidates = ([current] if current is not None else []) + [key for key in new if key != current]
        if not candidates:
            raise ValueError(f"step {t}: the oracle has no model to serve (nothing trained yet)")
        best = min(candidates, key=lambda key: (losses[key][t], key != current))
        served.append(best)
        current = best
    return served


def paired_loss_z(y: Array, p_new: Array, p_old: Array) -> tuple[float, float]:
    """Mean per-row log-loss difference new − old and its z (positive: the new model is worse)."""
    d = log_losses(y, p_new) - log_losses(y, p_old)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    mean = float(d.mean()) if len(d) else 0.0
    return mean, (mean / se if se > 0 else (0.0 if mean == 0 else np.sign(mean) * np.inf))


@dataclass(frozen=True)
class Promotion:
    """A change of served model at a step, judged on the window it then served."""

    step: int
    old: str
    new: str
    difference: float  # mean per-row log loss new − old on the window
    z: float

    @property
    def worse(self) -> bool:
        return self.difference > 0

    @property
    def wrong(self) -> bool:
        return self.z > WRONG_Z


def promotions(y: Array, windows: npt.NDArray[np.intp], served: Sequence[str | None],
               predictions: dict[str, Array]) -> list[Promotion]:
    """Every step whose served model differs from the step before's, with the paired log-loss test."""
    found = []
    for t in range(1, len(served)):
        old, new = served[t - 1], served[t]
        if old is None or new is None or old == new:
            continue
        mask = windows == t
        if mask.sum() < 2:
            continue
        difference, z = paired_loss_z(y[mask], predictions[new][mask], predictions[old][mask])
        found.append(Promotion(step=t, old=old, new=new, difference=difference, z=z))
    return found


@dataclass(frozen=True)
class Recovery:
    """How a served sequence came back from a sharp drift: measured on its excess loss over the
    true probabilities (loss no model can avoid taken out)."""

    drift: datetime
    before: float  # mean excess log loss in the windows before the drift
    hit: bool  # the first window after the drift is worse than ``before`` beyond noise
    step: int | None  # first window (index) served recovered, None if never
    steps_after: int | None  # 1 = the first step after the drift already served a recovered model
    days: float | None  # days from the drift to that step


def recovery(y: Array, truth: Array, windows: npt.NDArray[np.intp], steps: Sequence[datetime],
             served: Sequence[str | None], predictions: dict[str, Array], drift: datetime,
             before_windows: int = 4) -> Recovery:
    """Days from ``drift`` to the first step whose served model's excess log loss (over the true
    probabilities) is within :data:`RECOVERY_Z` standard errors of its mean over the
    ``before_windows`` windows before the drift."""
    first_after = next((t for t, moment in enumerate(steps) if moment >= drift), None)
    if first_after is None:
        raise ValueError(f"drift {drift:%Y-%m-%d} is after the last step")
    excess = {}
    for t, key in enumerate(served):
        mask = windows == t
        if key is not None and mask.any():
            excess[t] = log_losses(y[mask], predictions[key][mask]) - log_losses(y[mask], truth[mask])
    earlier = [t for t in range(max(0, first_after - 1 - before_windows), first_after - 1) if t in excess]
    base = float(np.concatenate([excess[t] for t in earlier]).mean()) if earlier else 0.0

    def recovered(t: int) -> bool:
        e = excess[t]
        return bool(e.mean() - base <= RECOVERY_Z * e.std(ddof=1) / np.sqrt(len(e)))

    later = [t for t in range(first_after, len(steps)) if t in excess]
    hit = bool(later) and not recovered(later[0])
    step = next((t for t in later if recovered(t)), None)
    return Recovery(drift=drift, before=base, hit=hit, step=step,
                    steps_after=None if step is None else step - first_after + 1,
                    days=None if step is None else (steps[step] - drift).total_seconds() / 86_400)
