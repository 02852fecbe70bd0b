"""The whole spec of one model, and the checks that need more than one of its sections."""

from __future__ import annotations

import re
from typing import Annotated

from croniter import CroniterBadDateError, CroniterError, croniter  # type: ignore[import-untyped]
from pydantic import Field, field_validator, model_validator

from ml_tasks.core.spec.acceptance import AcceptanceSpec, min_folds_for
from ml_tasks.core.spec.base import NAME_PATTERN, SpecError, Strict, check_metric
from ml_tasks.core.spec.data import (
    ColumnsSpec,
    FeaturesSpec,
    LeakageSpec,
    SamplingSpec,
    SourceSpec,
    SplitSpec,
    ValidationSpec,
)
from ml_tasks.core.spec.training import BacktestSpec, CalibrationSpec, CandidateSpec, TrainerSpec, TrainingSpec

_CRON_FIELD = r"[\d\*/,\-A-Za-z?LW#]+"
_CRON = re.compile(rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$")
_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}

class ModelSpec(Strict):
    """Everything about one model. See ``include/models/credit_default.yaml`` for a full example."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    registry_name: str
    schedule: str
    owner: str = "refit"
    tags: list[str] = []
    source: SourceSpec
    columns: ColumnsSpec
    features: FeaturesSpec
    validation: ValidationSpec = ValidationSpec()
    leakage: LeakageSpec = LeakageSpec()
    sampling: SamplingSpec
    split: SplitSpec
    candidates: list[CandidateSpec] = Field(min_length=1)
    selection_metric: str = "roc_auc"
    acceptance: AcceptanceSpec = AcceptanceSpec()
    training: TrainingSpec = TrainingSpec()
    backtest: BacktestSpec = BacktestSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    trainer: TrainerSpec = TrainerSpec()

    @field_validator("schedule")
    @classmethod
    def _cron_or_preset(cls, value: str) -> str:
        if value in _PRESETS:
            return value
        expected = f"expected a 5-field cron expression or one of {sorted(_PRESETS)}, got {value!r}"
        if not _CRON.match(value.strip()):
            raise ValueError(expected)
        try:  # croniter is the parser Airflow's cron timetables validate with
            croniter(value).get_next(float)
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never fires (no such date); expected a schedule that runs") from None
        except (CroniterError, TypeError) as exc:
            raise ValueError(f"{expected}: {exc}") from None
        return value

    @field_validator("selection_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        check_metric(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        names = [c.name for c in self.candidates]
        if len(names) != len(set(names)):
            raise ValueError(f"candidates: names must be unique, got {names}")
        role_columns = {self.columns.id, self.columns.label, self.columns.timestamp, self.columns.label_observed_at}
        leaked = role_columns & set(self.features.all)
        if leaked:
            raise ValueError(f"features: {sorted(leaked)} are id/label/time columns and cannot be features")
        check_metric(self.backtest.staleness_metric, where="backtest.staleness_metric")
        for metric in self.acceptance.thresholds:
            check_metric(metric, where="acceptance.thresholds")
        self._check_gate()
        for field, columns in (("validation.null_rate", self.validation.null_rate),
                               ("validation.allow_nonfinite", self.validation.allow_nonfinite)):
            unknown = set(columns) - set(self.features.all)
            if unknown:
                raise ValueError(f"{field}: {sorted(unknown)} are not features")
        unknown_segments = set(self.sampling.segments) - set(self.features.categorical)
        if unknown_segments:
            raise ValueError(f"sampling.segments: {sorted(unknown_segments)} must be categorical features")
        if self.sampling.label_shares is not None:
            unknown_labels = set(self.sampling.label_shares) - set(self.columns.label_values)
            if unknown_labels:
                raise ValueError(f"sampling.label_shares: {sorted(unknown_labels)} are not in "
                                 f"columns.label_values {self.columns.label_values}")
        if self.sampling.importance_weight in role_columns:
            raise ValueError(f"sampling.importance_weight: {self.sampling.importance_weight!r} is an id/label/time "
                             "column")
        return self

    def _check_gate(self) -> None:
        acceptance = self.acceptance
        for where, metric in (("acceptance.backtest.metric", acceptance.backtest.metric),
                              ("acceptance.slices.metric", acceptance.slices.metric)):
            check_metric(metric, where=where)
        unknown = set(acceptance.slices.columns) - set(self.features.categorical)
        if unknown:
            raise ValueError(f"acceptance.slices.columns: {sorted(unknown)} must be categorical features")
        if acceptance.backtest.require_significance:
            needed = min_folds_for(acceptance.alpha, one_sided=True)
            if self.backtest.folds < needed:
                raise ValueError(f"acceptance.backtest.require_significance: with backtest.folds={self.backtest.folds} "
                                 f"the fold test can never reach alpha={acceptance.alpha}; it needs at least {needed} "
                                 "folds (more folds, or require_significance: false)")

    @property
    def candidate_names(self) -> list[str]:
        return [c.name for c in self.candidates]

    def candidate(self, name: str) -> CandidateSpec:
        for candidate in self.candidates:
            if candidate.name == name:
                return candidate
        raise SpecError(f"spec {self.name!r}: unknown candidate {name!r}; expected one of {self.candidate_names}")

    @property
    def baseline_name(self) -> str:
        """The candidate every other is compared with: the first one listed."""
        return self.candidates[0].name
