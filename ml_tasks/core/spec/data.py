"""Where the rows come from and what they must look like: source, columns, features, validation,
leakage, sampling and the time split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ml_tasks.core.spec.base import NAME_PATTERN, SAMPLE_SIZES, Strict


class StreamSpec(Strict):
    """One source stream: its own query (same columns as the others) and its share of the sample.

    The training sample draws each example from a stream picked by a multinomial draw with
    the streams' weights, e.g. 0.8 recent traffic and 0.2 a curated older set.
    """

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    query_file: str
    weight: float = Field(gt=0.0)
    #: Window of this stream; None: the source's ``window_days``.
    window_days: int | None = Field(default=None, gt=0, le=36500)


class SourceSpec(Strict):
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


class ColumnsSpec(Strict):
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


class FeaturesSpec(Strict):
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


class RatioBounds(Strict):
    min: float = Field(default=0.5, gt=0.0)
    max: float = Field(default=2.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> RatioBounds:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ValidationSpec(Strict):
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


class LeakageSpec(Strict):
    """What to do when the split shows leakage: fail the run, warn in the report, or ignore."""

    #: The same entity (e.g. customer) on both sides of a time split: expected for repeat
    #: customers, fatal when the model must generalise to unseen entities.
    entity_overlap: Literal["fail", "warn", "ignore"] = "warn"
    #: Identical feature rows (with their label) in train and in validation/test.
    duplicate_rows: Literal["fail", "warn", "ignore"] = "fail"


class SamplingSpec(Strict):
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


class SplitSpec(Strict):
    """Time-ordered split: train is oldest, then validation, then test (most recent)."""

    validation_fraction: float = Field(gt=0.0, lt=0.5)
    test_fraction: float = Field(gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        if self.validation_fraction + self.test_fraction > 0.6:
            raise ValueError("validation_fraction + test_fraction must leave at least 40% for training")
        return self
