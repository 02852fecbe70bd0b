"""The model spec: one YAML file says everything about one model.

A spec is loaded into :class:`ModelSpec`, a pydantic model that rejects unknown fields and
wrong values with a message naming the field, so a typo in a spec fails before any task runs.
A new model needs a new spec file in ``include/models/``, never new code.

Example
-------
>>> spec = load_spec("include/models/credit_default.yaml")      # doctest: +SKIP
>>> spec.columns.label, spec.features.numeric[:2]                # doctest: +SKIP
('defaulted', ['age', 'income'])
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from croniter import CroniterBadDateError, CroniterError, croniter  # type: ignore[import-untyped]
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ml_tasks.core.columns import COMPARABLE_METRICS, HIGHER_IS_BETTER

#: Candidate families the trainer knows; a spec picks among them with ``family``.
FAMILIES = ("prior", "logistic_regression", "lightgbm", "torch_mlp")

_CRON_FIELD = r"[\d\*/,\-A-Za-z?LW#]+"
_CRON = re.compile(rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$")
_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
#: Model, candidate and stream names: plain identifiers (also what the CLI's ``--model`` accepts).
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
SAMPLE_SIZES = (100, 10_000_000)  # bounds of sampling.size, and of the retrain DAG form's sample_size


class SpecError(ValueError):
    """A model spec is invalid; the message names the file and field."""


class _Strict(BaseModel):
    # strict: a number must be written as one (``size: true`` is not 1, ``"5"`` not 5); ints pass as floats.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StreamSpec(_Strict):
    """One source stream: its own query (same columns as the others) and its share of the sample.

    The training sample draws each example from a stream picked by a multinomial draw with
    the streams' weights, e.g. 0.8 recent traffic and 0.2 a curated older set.
    """

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    query_file: str
    weight: float = Field(gt=0.0)
    #: Window of this stream; None: the source's ``window_days``.
    window_days: int | None = Field(default=None, gt=0, le=36500)


class SourceSpec(_Strict):
    """Where the rows come from: SQL files with ``:window_start`` and ``:as_of`` parameters.

    Either one ``query_file`` or several weighted ``streams``.
    """

    query_file: str | None = None
    streams: list[StreamSpec] = []
    tables: list[str] = Field(min_length=1)
    window_days: int = Field(gt=0, le=3650)
    #: Overrides REFIT_WAREHOUSE_URL for this model (embedded mode); deployed mode uses a connection.
    warehouse_url: str | None = None

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> SourceSpec:
        if (self.query_file is None) == (not self.streams):
            raise ValueError("expected either query_file or streams (not both, not neither)")
        names = [s.name for s in self.streams]
        if len(names) != len(set(names)):
            raise ValueError(f"streams: names must be unique, got {names}")
        return self

    @property
    def stream_list(self) -> list[StreamSpec]:
        """The streams, a single query being one stream named ``main`` with weight 1."""
        if self.streams or self.query_file is None:  # the validator allows exactly one of them
            return list(self.streams)
        return [StreamSpec(name="main", query_file=self.query_file, weight=1.0)]

    def stream_window_days(self, stream: StreamSpec) -> int:
        return stream.window_days or self.window_days

    @property
    def query_files(self) -> list[str]:
        return [s.query_file for s in self.stream_list]


class ColumnsSpec(_Strict):
    """Roles of the key columns of the extracted snapshot."""

    id: str
    label: str
    label_values: list[int] = Field(default=[0, 1], min_length=2, max_length=2)
    timestamp: str
    label_observed_at: str
    entity: str | None = None

    @field_validator("label_values", mode="before")
    @classmethod
    def _zero_one(cls, value: object, info: ValidationInfo) -> object:
        # One convention end to end (strata, metrics, gate, served probability); the SQL defines labels.
        if not (isinstance(value, list) and all(type(v) is int for v in value) and sorted(value) == [0, 1]):
            label = info.data.get("label", "<label>")
            raise ValueError(f"expected [0, 1] (1: the outcome the model predicts), got {value!r}; map other values "
                             f"in the source query, e.g. CASE WHEN status = 'yes' THEN 1 ELSE 0 END AS {label}")
        return value


class FeaturesSpec(_Strict):
    numeric: list[str] = []
    categorical: list[str] = []

    @model_validator(mode="after")
    def _not_empty_and_disjoint(self) -> FeaturesSpec:
        if not self.numeric and not self.categorical:
            raise ValueError("at least one numeric or categorical feature is required")
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(both)}")
        return self

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class RatioBounds(_Strict):
    min: float = Field(default=0.5, gt=0.0)
    max: float = Field(default=2.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> RatioBounds:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ValidationSpec(_Strict):
    min_rows: int = Field(default=100, ge=1)
    max_null_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Per-column null-rate limits that override ``max_null_rate``.
    null_rate: dict[str, float] = {}
    #: Numeric features allowed to hold inf (every other numeric feature must be finite).
    allow_nonfinite: list[str] = []
    #: Minority-class share under which the validation report warns.
    warn_min_class_share: float = Field(default=0.005, ge=0.0, le=0.5)
    #: Allowed ratio of this snapshot's rows to the previous snapshot's (None: no check).
    row_count_ratio: RatioBounds | None = RatioBounds()


class LeakageSpec(_Strict):
    """What to do when the split shows leakage: fail the run, warn in the report, or ignore."""

    #: The same entity (e.g. customer) on both sides of a time split: expected for repeat
    #: customers, fatal when the model must generalise to unseen entities.
    entity_overlap: Literal["fail", "warn", "ignore"] = "warn"
    #: Identical feature rows (with their label) in train and in validation/test.
    duplicate_rows: Literal["fail", "warn", "ignore"] = "fail"


class SamplingSpec(_Strict):
    """Stratified sample: by label and the segment columns, proportional with a floor per stratum.

    One streaming pass over the snapshot with a reservoir per stratum (``ml_tasks.data.sampling``);
    every sampled row carries ``_weight``, its inverse inclusion probability.
    """

    size: int = Field(ge=SAMPLE_SIZES[0], le=SAMPLE_SIZES[1])
    segments: list[str] = []
    #: Every stratum keeps at least this many rows (or all it has), so rare strata survive.
    min_per_stratum: int = Field(default=200, ge=1)
    #: At most this many rows per stratum (None: no cap).
    max_per_stratum: int | None = Field(default=None, ge=1)
    #: Target share of the sample per label value, e.g. {1: 0.3}; None: proportional.
    label_shares: dict[int, float] | None = None
    #: Column of positive importance weights: rows are drawn with probability growing with it
    #: (priority sampling) and ``_weight`` stays an unbiased inverse inclusion probability.
    importance_weight: str | None = None
    seed: int = 0

    @field_validator("label_shares")
    @classmethod
    def _shares(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        if value is not None:
            if any(not 0.0 <= share <= 1.0 for share in value.values()):
                raise ValueError(f"every share must be within [0, 1], got {value}")
            if sum(value.values()) > 1.0 + 1e-9:
                raise ValueError(f"shares must sum to at most 1, got {sum(value.values()):g}")
        return value


class SplitSpec(_Strict):
    """Time-ordered split: train is oldest, then validation, then test (most recent)."""

    validation_fraction: float = Field(gt=0.0, lt=0.5)
    test_fraction: float = Field(gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        if self.validation_fraction + self.test_fraction > 0.6:
            raise ValueError("validation_fraction + test_fraction must leave at least 40% for training")
        return self


class SearchRange(_Strict):
    """A continuous (or integer) range of one hyper-parameter for the random search."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class TrainingSpec(_Strict):
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


class CandidateSpec(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    family: Literal["prior", "logistic_regression", "lightgbm", "torch_mlp"]
    params: dict[str, float | int | str | bool] = {}
    #: Random-search space: a list of values to choose from, or a range, per parameter.
    search: dict[str, list[float | int | str | bool] | SearchRange] = {}


class BacktestSpec(_Strict):
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

    @model_validator(mode="after")
    def _gap_covers_label_delay(self) -> BacktestSpec:
        if self.gap_days < self.label_delay_days:
            raise ValueError(f"gap_days {self.gap_days} is shorter than label_delay_days {self.label_delay_days}: "
                             "a fold's test labels would overlap its training period")
        return self


class CalibrationSpec(_Strict):
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


class ThresholdSpec(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdSpec:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min or max")
        return self


class ComparisonSpec(_Strict):
    """One paired comparison with the champion on the same test rows.

    ``roc_auc`` is tested with DeLong's test; ``log_loss``, ``brier``, ``pr_auc`` and ``ece`` with a
    paired Poisson bootstrap; ``accuracy`` (at ``acceptance.decision_threshold``) with McNemar.
    """

    metric: str = "roc_auc"
    mode: Literal["non_inferior", "superior"] = "non_inferior"
    #: Allowed loss in the metric for ``non_inferior`` (in the metric's own units).
    margin: float = Field(default=0.01, ge=0.0)

    @field_validator("metric")
    @classmethod
    def _testable(cls, value: str) -> str:
        if value not in COMPARABLE_METRICS:
            raise ValueError(f"unknown metric {value!r}; expected one of {list(COMPARABLE_METRICS)}")
        return value


class ConsistencySpec(_Strict):
    """Across backtest folds the challenger must win at least ``min_win_fraction`` of them."""

    metric: str = "roc_auc"
    min_win_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    test: Literal["sign", "wilcoxon"] = "sign"
    #: Also require the one-sided fold test to be significant (needs enough folds: 5 at 0.05).
    require_significance: bool = False


class SliceSpec(_Strict):
    """Per-slice non-inferiority for the values of ``columns`` with at least ``min_size`` test rows."""

    columns: list[str] = []
    min_size: int = Field(default=200, ge=10)
    metric: str = "roc_auc"
    margin: float = Field(default=0.03, ge=0.0)


class GuardrailSpec(_Strict):
    """Serving costs: latency per 1,000 rows and model size, absolute and relative to the champion."""

    max_latency_ms_per_1k: float | None = Field(default=None, gt=0)
    max_latency_ratio: float | None = Field(default=3.0, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)
    max_size_ratio: float | None = Field(default=5.0, gt=0)


class AcceptanceSpec(_Strict):
    thresholds: dict[str, ThresholdSpec] = {}
    #: Paired comparisons with the champion (a single mapping is accepted too).
    champion: list[ComparisonSpec] = [ComparisonSpec()]
    #: With no champion yet the challenger must beat the baseline candidate on this comparison.
    baseline: ComparisonSpec = ComparisonSpec(metric="roc_auc", mode="superior", margin=0.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    bootstrap_replicates: int = Field(default=1000, ge=100, le=100_000)
    seed: int = 0
    #: Threshold that turns probabilities into decisions for ``accuracy`` (McNemar).
    decision_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    backtest: ConsistencySpec = ConsistencySpec()
    slices: SliceSpec = SliceSpec()
    guardrails: GuardrailSpec = GuardrailSpec()

    @field_validator("champion", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value


class TrainerSpec(_Strict):
    image: str = "refit-trainer:latest"
    gpus: int = Field(default=0, ge=0, le=16)
    #: CPU threads per trainer process (REFIT_TRAINER_THREADS); None: all the CPUs the process
    #: may use. Set it to cores / trainers-per-worker when mapped tasks share a worker.
    cpus: int | None = Field(default=None, ge=1, le=1024)


class ModelSpec(_Strict):
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
        _check_metric(value)
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
        _check_metric(self.backtest.staleness_metric, where="backtest.staleness_metric")
        for metric in self.acceptance.thresholds:
            _check_metric(metric, where="acceptance.thresholds")
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
            _check_metric(metric, where=where)
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


def min_folds_for(alpha: float, one_sided: bool = True) -> int:
    """The fewest folds with which an exact sign or Wilcoxon test can reach ``p <= alpha``.

    The most extreme outcome, every fold favouring the challenger, has probability ``2^-n``
    under H0; a two-sided test doubles it. So ``n`` is the smallest integer with ``2^-n <=
    alpha`` (one-sided) or ``2^(1-n) <= alpha`` (two-sided): at alpha 0.05, 5 folds one-sided
    (1/32 = 0.031) and 6 two-sided (2/64 = 0.031; 5 folds give 1/16 = 0.0625). A spec whose
    fold count is below this configures a gate that can never pass.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")
    factor = 1.0 if one_sided else 2.0
    n = 1
    while factor * 0.5**n > alpha:
        n += 1
    return n


def _check_metric(name: str, where: str = "selection_metric") -> None:
    if name not in HIGHER_IS_BETTER:
        raise ValueError(f"{where}: unknown metric {name!r}; expected one of {sorted(HIGHER_IS_BETTER)}")


def load_spec(path: str | Path) -> ModelSpec:
    """Load and validate a spec file; raise :class:`SpecError` naming the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"spec {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"spec {path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"spec {path}: " + _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"].endswith("_type"):  # strict types: say what was written instead
            message += f", got {error['input']!r:.60}"
        parts.append(f"field '{field}': {message}")
    return "; ".join(parts)


def query_path(spec: ModelSpec, include_dir: Path, query_file: str | None = None) -> Path:
    """The SQL file of one stream (default: the first), checked to exist."""
    query_file = query_file or spec.source.query_files[0]
    path = include_dir / query_file
    if not path.is_file():
        field = "source.query_file" if spec.source.query_file else "source.streams[].query_file"
        raise SpecError(f"spec {spec.name!r}: {field} {query_file!r} not found under {include_dir}")
    return path


def query_texts(spec: ModelSpec, include_dir: Path) -> str:
    """Every stream's SQL, in stream order: part of the recipe hash."""
    return "\n".join(query_path(spec, include_dir, f).read_text() for f in spec.source.query_files)


#: Fields added after specs were first hashed, as paths: left out of the hash while unset, so an
#: upgrade does not give every interval a new run key (a re-run of an interval that already has
#: a champion would then be a new run, and could register the same model again).
ADDED_FIELDS = (("trainer", "cpus"),)


def spec_hash(spec: ModelSpec, query_text: str) -> str:
    """Content hash of the spec and its SQL: a change to either is a new recipe."""
    dumped = spec.model_dump(mode="json")
    for *parents, name in ADDED_FIELDS:
        holder = dumped
        for key in parents:
            holder = holder[key]
        if holder.get(name) is None:
            del holder[name]
    canonical = json.dumps(dumped, sort_keys=True) + "\n" + query_text
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def discover_specs(models_dir: Path) -> list[Path]:
    """Spec files a DAG is built for: every ``*.yaml`` in ``models_dir``, sorted."""
    return sorted(models_dir.glob("*.yaml"))
