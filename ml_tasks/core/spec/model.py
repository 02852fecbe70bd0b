"""The whole spec of one model, and the checks that need more than one of its sections.

Every problem of a spec is reported at once, each at the field it concerns: pydantic collects
the errors of every section, and the checks across sections below then run on every section
that is valid on its own (a check that reads a section with errors of its own is left out), so
a spec with a misspelt field and a segment that is not a feature hears about both in one go.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Annotated, Any, cast

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from ml_tasks.core.spec.acceptance import AcceptanceSpec, min_folds_for
from ml_tasks.core.spec.base import (
    NAME_PATTERN,
    PRESETS,
    SpecError,
    Strict,
    checked_schedule,
    metric_problem,
    nested,
    problem,
    raise_problems,
)
from ml_tasks.core.spec.data import (
    ColumnsSpec,
    FeaturesSpec,
    LeakageSpec,
    SamplingSpec,
    SourceSpec,
    SplitSpec,
    ValidationSpec,
)
from ml_tasks.core.spec.monitoring import MonitoringSpec
from ml_tasks.core.spec.operations import DEFAULT_TIMEOUT_MINUTES, Approver, Promotion, Timeouts
from ml_tasks.core.spec.scoring import ScoringSpec
from ml_tasks.core.spec.training import BacktestSpec, CalibrationSpec, CandidateSpec, TrainerSpec, TrainingSpec

_DEFAULT_TIMEOUTS = ", ".join(f"{stage} {minutes:g}" for stage, minutes in DEFAULT_TIMEOUT_MINUTES.items())


class ModelSpec(Strict):
    """Everything about one model. See ``include/models/credit_default.yaml`` for a full example."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="the model's name (lowercase, digits, _): its "
                                                                 "DAGs are retrain_<name> and registry_<name>")]
    description: str = Field("", description="one line for the DAG's documentation")
    registry_name: str = Field(description="the MLflow registered model")
    schedule: str = Field(description="a 5-field cron expression or a preset such as @daily")
    owner: str = Field("refit", description="the DAGs' owner")
    tags: list[str] = Field([], description="the DAGs' tags")
    source: SourceSpec = Field(description="SQL file(s) and tables the rows come from, and the window")
    columns: ColumnsSpec = Field(description="id, label, timestamp, label-observed-at and entity columns")
    features: FeaturesSpec = Field(description="numeric and categorical feature columns")
    validation: ValidationSpec = Field(ValidationSpec(), description="checks on every snapshot (rows, nulls, "
                                                                     "classes)")
    leakage: LeakageSpec = Field(LeakageSpec(), description="what leakage across the time split does: fail, "
                                                            "warn or ignore")
    sampling: SamplingSpec = Field(description="stratified sample: size, segments, floors, shares, seed")
    split: SplitSpec = Field(description="time-ordered validation and test fractions")
    candidates: list[CandidateSpec] = Field(min_length=1, description="models to train, each a family with its "
                                                                      "params (the first is the baseline)")
    selection_metric: str = Field("roc_auc", description="picks the challenger on the validation rows")
    acceptance: AcceptanceSpec = Field(AcceptanceSpec(), description="what a challenger must show: thresholds, "
                                                                     "champion comparisons, folds, slices, "
                                                                     "guardrails")
    training: TrainingSpec = Field(TrainingSpec(), description="tuning budget per candidate, warm start, "
                                                               "learning curve")
    backtest: BacktestSpec = Field(BacktestSpec(), description="walk-forward folds and the staleness curve")
    calibration: CalibrationSpec = Field(CalibrationSpec(), description="calibration methods tried on held-out "
                                                                        "rows")
    trainer: TrainerSpec = Field(TrainerSpec(), description="trainer image, GPUs (slots of the refit_gpu pool) "
                                                            "and CPU threads; queue: the Airflow queue of its "
                                                            "tasks (not part of the recipe hash)")
    promotion: Promotion = Field("auto", description="who moves the champion: auto (the gate alone; no approval "
                                                     "task), approve_on_fail (a PASS promotes itself, a FAIL waits "
                                                     "for a person in the approve task's form, who may accept its "
                                                     "trade-off) or always_approve (every verdict waits); not part "
                                                     "of the recipe hash")
    approval_timeout_hours: float | None = Field(24.0, gt=0, le=24 * 30, description="how long the approve "
                                                 "task waits for a person; then the run records a timeout and "
                                                 "the champion stays (null: it waits until someone answers); not "
                                                 "part of the recipe hash")
    approvers: list[Approver] = Field([], description="user ids (as Airflow's auth manager knows them) who may "
                                      "answer the approve task; Airflow refuses anyone else's answer, and so does "
                                      "the registry (empty: anyone allowed to act on the DAG's required actions); "
                                      "not part of the recipe hash")
    timeouts: Timeouts = Field({}, description="minutes a task of each stage may run (its execution_timeout), "
                                               "by stage: default, plan, extract, validate, sample, split, train, "
                                               "backtest, evaluate, gate, register, report, score, monitor; a "
                                               f"stage not written takes its built-in bound "
                                               f"({_DEFAULT_TIMEOUTS}); not part of the recipe hash",
                               json_schema_extra={"written": "mapping of stage to minutes"})
    scoring: ScoringSpec | None = Field(None, description="batch scoring with the champion (and a shadow model): "
                                                          "query, window_days, destination, schedule, "
                                                          "on_champion, chunk_rows, shadow; not part of the "
                                                          "recipe hash")
    monitoring: MonitoringSpec | None = Field(None, description="champion health between retrains and the "
                                                                "triggers that queue one: schedule, triggers "
                                                                "(decay, drift, volume, age), cooldown_days; not "
                                                                "part of the recipe hash")

    @field_validator("schedule")
    @classmethod
    def _cron_or_preset(cls, value: str) -> str:
        return checked_schedule(value, PRESETS)

    @field_validator("selection_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        raise_problems(cls.__name__, metric_problem(value, ()))
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ModelWrapValidatorHandler[ModelSpec]) -> ModelSpec:
        try:
            spec = handler(data)
        except ValidationError as exc:
            found = nested(exc)
            sections = _valid_sections(data, exc)
            if sections is not None:
                found += cross_section_problems(cast(ModelSpec, sections))
            raise_problems(cls.__name__, _in_spec_order(found, data))
            raise
        raise_problems(cls.__name__, _in_spec_order(cross_section_problems(spec), data))
        return spec

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


class _InvalidSectionError(Exception):
    """A check read a section that has errors of its own (already reported)."""


class _Sections:
    """The sections of a spec that are valid on their own; reading any other raises :class:`_InvalidSectionError`."""

    def __init__(self, values: dict[str, object]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> object:
        try:
            return self._values[name]
        except KeyError:
            raise _InvalidSectionError(name) from None


def _valid_sections(data: object, exc: ValidationError) -> _Sections | None:
    """Each top-level field of ``data`` that has no error, validated alone (None: not a mapping)."""
    failed = {error["loc"][0] for error in exc.errors() if error["loc"]}
    if not isinstance(data, dict) or any(not error["loc"] for error in exc.errors()):
        return None
    values: dict[str, object] = {}
    for name, field in ModelSpec.model_fields.items():
        if name in failed or (name not in data and field.is_required()):
            continue
        if name not in data:
            values[name] = field.get_default(call_default_factory=True)
            continue
        try:
            values[name] = TypeAdapter(field.rebuild_annotation()).validate_python(data[name], strict=True)
        except ValidationError:
            continue
    return _Sections(values)


def _in_spec_order(found: list[InitErrorDetails], data: object) -> list[InitErrorDetails]:
    """Problems in the order the spec's sections are written (then the schema's order)."""
    names = [*(data if isinstance(data, dict) else ()), *ModelSpec.model_fields]
    position: dict[object, int] = {}
    for name in names:
        position.setdefault(name, len(position))
    return sorted(found, key=lambda p: position.get(p["loc"][0] if p["loc"] else "", -1))


def cross_section_problems(spec: ModelSpec) -> list[InitErrorDetails]:
    """Every problem that needs more than one section, each at the field it concerns."""
    found: list[InitErrorDetails] = []
    for check in _CHECKS:
        with contextlib.suppress(_InvalidSectionError):  # it reads an invalid section: that error is reported
            found += check(spec)
    return found


def _unique_candidates(spec: ModelSpec) -> list[InitErrorDetails]:
    first: dict[str, int] = {}
    found = []
    for index, candidate in enumerate(spec.candidates):
        if candidate.name in first:
            found.append(problem(("candidates", index, "name"), f"{candidate.name!r} is already the name of "
                                 f"candidates.{first[candidate.name]}; names must be unique", candidate.name))
        first.setdefault(candidate.name, index)
    return found


def _role_columns(spec: ModelSpec) -> dict[str, str]:
    """Column name → its role field (``columns.label`` …): columns that can never be features."""
    roles: dict[str, str] = {}
    for role in ("id", "label", "timestamp", "label_observed_at"):
        roles.setdefault(getattr(spec.columns, role), f"columns.{role}")
    return roles


def _features_are_not_roles(spec: ModelSpec) -> list[InitErrorDetails]:
    roles = _role_columns(spec)
    return [problem(("features", kind, index), f"{column!r} is {roles[column]} and cannot be a feature", column)
            for kind in ("numeric", "categorical") for index, column in enumerate(getattr(spec.features, kind))
            if column in roles]


def _known_metrics(spec: ModelSpec) -> list[InitErrorDetails]:
    acceptance = spec.acceptance
    return [*(p for metric in acceptance.thresholds
              for p in metric_problem(metric, ("acceptance", "thresholds", metric))),
            *metric_problem(acceptance.backtest.metric, ("acceptance", "backtest", "metric")),
            *metric_problem(acceptance.slices.metric, ("acceptance", "slices", "metric"))]


def _categorical(spec: ModelSpec, columns: list[str], loc: tuple[str, ...]) -> list[InitErrorDetails]:
    return [problem((*loc, index), f"{column!r} must be a categorical feature (features.categorical: "
                    f"{spec.features.categorical})", column)
            for index, column in enumerate(columns) if column not in spec.features.categorical]


def _slice_columns(spec: ModelSpec) -> list[InitErrorDetails]:
    return _categorical(spec, spec.acceptance.slices.columns, ("acceptance", "slices", "columns"))


def _fold_test_can_pass(spec: ModelSpec) -> list[InitErrorDetails]:
    """A fold test the gate requires must be able to reach ``alpha`` with ``backtest.folds``.

    Both fold tests are exact and one-sided: their smallest p-value, every fold won, is ``2^-n``
    for ``n`` folds (a tied fold only lowers ``n``), so below :func:`min_folds_for` folds the test
    can never reject and a gate that requires it (``require_significance``) can never pass.
    Without that the fold check decides on the share of folds won, and its test is only reported:
    it cannot block a promotion, so few folds are no error there (and the defaults, 4 folds and a
    sign test, stay a valid spec).
    """
    consistency, alpha, folds = spec.acceptance.backtest, spec.acceptance.alpha, spec.backtest.folds
    needed = min_folds_for(alpha, one_sided=True)
    if not consistency.require_significance or folds >= needed:
        return []
    return [problem(("acceptance", "backtest", "require_significance"),
                    f"the one-sided {consistency.test} test (acceptance.backtest.test) can never reach "
                    f"alpha={alpha} with backtest.folds={folds}: its smallest p-value, every fold won, is "
                    f"2^-{folds} = {0.5 ** folds:.4g}; it needs backtest.folds of at least {needed} "
                    "(or require_significance: false)", True)]


def _validation_columns(spec: ModelSpec) -> list[InitErrorDetails]:
    features = spec.features.all
    found = [problem(("validation", "null_rate", column), f"{column!r} is not a feature", column)
             for column in spec.validation.null_rate if column not in features]
    found += [problem(("validation", "allow_nonfinite", index), f"{column!r} is not a feature", column)
              for index, column in enumerate(spec.validation.allow_nonfinite) if column not in features]
    return found


def _sampling_columns(spec: ModelSpec) -> list[InitErrorDetails]:
    sampling = spec.sampling
    found = _categorical(spec, sampling.segments, ("sampling", "segments"))
    found += [problem(("sampling", "label_shares", label), f"{label} is not in columns.label_values "
                      f"{spec.columns.label_values}", label)
              for label in sampling.label_shares or {} if label not in spec.columns.label_values]
    roles = _role_columns(spec)
    if sampling.importance_weight in roles:
        found.append(problem(("sampling", "importance_weight"), f"{sampling.importance_weight!r} is "
                             f"{roles[sampling.importance_weight]}, not a weight column", sampling.importance_weight))
    return found


def _approvers_are_asked(spec: ModelSpec) -> list[InitErrorDetails]:
    """Approvers without an approve task would silently mean nothing."""
    found = []
    if spec.approvers and spec.promotion == "auto":
        found.append(problem(("approvers",), f"{spec.approvers} are named, but promotion 'auto' asks no one; "
                             "expected promotion approve_on_fail or always_approve, or no approvers",
                             spec.approvers))
    duplicated = sorted({user for user in spec.approvers if spec.approvers.count(user) > 1})
    if duplicated:
        found.append(problem(("approvers",), f"{duplicated} named more than once; expected each user once",
                             spec.approvers))
    return found


def _scores_are_not_sources(spec: ModelSpec) -> list[InitErrorDetails]:
    """Scores must never be written over a table the model is trained from."""
    if spec.scoring is None:
        return []
    sources = {table.lower() for table in spec.source.tables}
    return [problem(("scoring", "destination"), f"{table!r} is a source table (source.tables: "
                    f"{spec.source.tables}); expected a table of its own for the scores", spec.scoring.destination)
            for table in (spec.scoring.destination, spec.scoring.shadow_destination) if table in sources]


_CHECKS: tuple[Callable[[ModelSpec], list[InitErrorDetails]], ...] = (
    _unique_candidates, _features_are_not_roles, _known_metrics, _slice_columns, _fold_test_can_pass,
    _validation_columns, _sampling_columns, _scores_are_not_sources, _approvers_are_asked,
)
