"""How candidates are trained and backtested: tuning, the candidate list, backtest windows,
calibration and the trainer's resources."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from ml_tasks.core.spec.base import NAME_PATTERN, Strict, metric_problem, problem, raise_problems
from ml_tasks.core.spec.families import SearchRange, candidate_problems

_SCALAR = (float, int, str, bool)


class TrainingSpec(Strict):
    """How candidates are trained: the same tuning budget for each, and how retraining starts."""

    #: ``stateless``: train from scratch; ``warm_start``: continue from the champion when it is
    #: of the same family (LightGBM keeps boosting its booster, the network fine-tunes its weights).
    mode: Literal["stateless", "warm_start"] = "stateless"
    #: Fits per candidate (the first uses ``params`` as written, the others draw from ``search``).
    trials: int = Field(default=1, ge=1, le=200)
    #: Stop a candidate's tuning after this much fitting, even with trials left (None: no limit).
    time_budget_seconds: float | None = Field(default=None, gt=0)
    #: Refit on 1/4 and 1/2 of the training rows and log the validation metric against rows.
    learning_curve: bool = True


class CandidateSpec(Strict):
    """One model to train: its family, that family's ``params`` and a search space over them (Optuna TPE).

    ``params`` and ``search`` are checked against the family's schema
    (:mod:`ml_tasks.core.spec.families`) when the spec loads; they are kept as written, so the
    spec's hash does not depend on the schema's defaults.
    """

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    family: Literal["prior", "logistic_regression", "lightgbm", "torch_mlp"]
    params: dict[str, float | int | str | bool] = {}
    #: Search space (:mod:`ml_tasks.training.tuning`): a list of values to choose from, or a range, per parameter.
    search: dict[str, list[float | int | str | bool] | SearchRange] = {}

    @field_validator("params", mode="before")
    @classmethod
    def _scalars(cls, value: object) -> object:
        if isinstance(value, dict):  # one clear error per value, not one per member of the union
            raise_problems(cls.__name__, [
                problem((name,), "expected a number, text or true/false (layer widths are text: \"256,128\")", v)
                for name, v in value.items() if not isinstance(v, _SCALAR)])
        return value

    @field_validator("search", mode="before")
    @classmethod
    def _lists_or_ranges(cls, value: object) -> object:
        if isinstance(value, dict):
            raise_problems(cls.__name__, [
                problem((name,), "expected a list of values to choose from, or a range {low, high, log, integer}", v)
                for name, v in value.items() if not isinstance(v, list | dict | SearchRange)])
        return value

    @model_validator(mode="after")
    def _params_of_family(self) -> CandidateSpec:
        raise_problems(type(self).__name__, candidate_problems(self.family, self.params, self.search))
        return self


class BacktestSpec(Strict):
    """Walk-forward folds on event time (``ml_tasks.data.folds``) and the staleness curve.

    The last fold's test window ends ``label_delay_days`` before the run's as-of date, so every
    test label has had time to arrive (the snapshot only holds labels observed by the as-of
    date; a later window would hold only the quickest labels, a biased sample); each earlier
    fold sits ``test_days`` earlier. The backtest needs ``train_days + gap_days + folds *
    test_days + label_delay_days`` days of the source window. Between a fold's training cutoff
    and its test window lies a gap of ``gap_days`` (at least the label delay), and a fold trains
    only on labels observed by its own cutoff.
    """

    folds: int = Field(default=4, ge=1, le=52)
    window: Literal["expanding", "sliding"] = "expanding"
    #: Training window of a sliding fold; the first (shortest) window of an expanding one.
    train_days: int = Field(default=120, gt=0)
    test_days: int = Field(default=30, gt=0)
    gap_days: int = Field(default=90, ge=0)
    #: Longest time from event to label; the gap may not be shorter.
    label_delay_days: int = Field(default=90, ge=0)
    #: No entity (``columns.entity``) on both sides of a fold's cutoff.
    entity_disjoint: bool = False
    #: Each fold's model is also scored on the test windows 1..k periods later (model age).
    staleness_periods: int = Field(default=3, ge=0, le=24)
    #: Loss of the staleness metric, against age 0, that calls for a retrain.
    staleness_tolerance: float = Field(default=0.01, gt=0.0)
    staleness_metric: str = "roc_auc"
    #: Folds one mapped backtest task runs: "auto" picks from the measured cost of a fold (the
    #: candidate's own training) and of starting a task (``ml_tasks.training.fold_tasks``); 1 maps
    #: every fold to its own task, ``folds`` runs a candidate's folds in one. How the work is cut,
    #: not what is trained: it is left out of the recipe hash.
    folds_per_task: Literal["auto"] | Annotated[int, Field(ge=1, le=52)] = "auto"

    @field_validator("staleness_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        raise_problems(cls.__name__, metric_problem(value, ()))
        return value

    @model_validator(mode="after")
    def _gap_covers_label_delay(self) -> BacktestSpec:
        if self.gap_days < self.label_delay_days:
            raise_problems(type(self).__name__, [problem(
                ("gap_days",), f"gap_days {self.gap_days} is shorter than label_delay_days {self.label_delay_days}: "
                "a fold's test labels would overlap its training period", self.gap_days)])
        return self


class CalibrationSpec(Strict):
    """Probability calibration on a window later than training and earlier than test."""

    #: Methods to try; the one with the lowest log loss on held-out calibration rows wins.
    methods: list[Literal["none", "sigmoid", "isotonic", "temperature"]] = [
        "none", "sigmoid", "isotonic", "temperature"]
    #: Isotonic regression overfits small sets: below this many fitting rows it is not tried.
    min_isotonic_rows: int = Field(default=1000, ge=10)
    #: Share of the calibration window (its later part) kept for choosing the method.
    selection_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    #: Equal-mass bins of the expected calibration error.
    ece_bins: int = Field(default=15, ge=2, le=100)


class TrainerSpec(Strict):
    image: str = "refit-trainer:latest"
    gpus: int = Field(default=0, ge=0, le=16)
    #: CPU threads per trainer process (REFIT_TRAINER_THREADS); None: all the CPUs the process
    #: may use. Set it to cores / trainers-per-worker when mapped tasks share a worker.
    cpus: int | None = Field(default=None, ge=1, le=1024)
    #: The Airflow queue the train and backtest tasks are sent to: with the CeleryExecutor, the
    #: queue the GPU workers consume (``airflow celery worker --queues gpu``). None:
    #: ``REFIT_TRAINER_QUEUE``, else Airflow's default queue. Where the tasks run, not what they
    #: train: not in the recipe hash. (A trainer with ``gpus`` takes that many slots of the
    #: ``refit_gpu`` pool, which the deployment sizes to its GPUs: ``REFIT_GPU_SLOTS``.)
    queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,200}$")
