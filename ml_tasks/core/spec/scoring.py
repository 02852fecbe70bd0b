"""The optional ``scoring:`` section: which rows the champion scores, where the scores go, and when.

A spec with this section gets a ``score_<model>`` DAG (and ``python -m ml_tasks score``). Each
run scores the rows its query selects for one interval, ``[as_of - window_days, as_of)``, bound
as ``:window_start`` and ``:as_of`` exactly like the source query, and writes them to
``destination`` (``<destination>_shadow`` for the shadow model).

Scoring changes nothing about what is trained, so this section is left out of the spec's recipe
hash (:func:`ml_tasks.core.spec.loading.spec_hash`): adding it, or changing it, gives no interval
a new run key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ml_tasks.core.spec.base import PRESETS, Strict, checked_schedule

#: A destination table: ``table`` or ``schema.table``, lowercase so that it is the same name quoted
#: or not on every database; at most 53 characters for the table, so that the shadow table's run
#: key index, ``<table>_shadow_rk``, still fits PostgreSQL's 63-character names.
TABLE_PATTERN = r"^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,52}$"
#: Added to the destination's name for the shadow model's scores.
SHADOW_SUFFIX = "_shadow"
#: A scoring run is a one-off by hand or on a schedule that repeats; ``@once`` is neither.
SCORING_PRESETS = PRESETS - {"@once"}


class ScoringSpec(Strict):
    """Batch scoring with the champion (and optionally a shadow model) into a warehouse table."""

    query_file: str | None = Field(None, description="SQL file under include/ selecting the rows to score "
                                                     "(one of query_file or query)")
    query: str | None = Field(None, description="the same SQL written inline")
    window_days: int = Field(1, gt=0, le=3650, description="each run scores the rows of [as_of - window_days, "
                                                           "as_of), bound as :window_start and :as_of")
    destination: str = Field(pattern=TABLE_PATTERN, description="table of the served scores (id, score, "
                                                                "model_version, run_key, scored_at); created if "
                                                                "missing")
    schedule: str | None = Field(None, description="a 5-field cron expression or a preset such as @daily")
    on_champion: bool = Field(False, description="also run whenever the champion alias moves (the champion "
                                                 "Asset)")
    chunk_rows: int = Field(100_000, ge=1_000, le=5_000_000, description="rows read, scored and written at "
                                                                         "a time: memory is bounded by a few "
                                                                         "chunks")
    shadow: Literal["none", "latest_challenger"] = Field("none", description="latest_challenger: also score "
                                                                             "with the newest version registered "
                                                                             "after the champion, else the "
                                                                             "challenger the latest gate refused, "
                                                                             "into <destination>_shadow")

    check_features: bool = Field(True, description="before scoring, compare the features this query computes "
                                                   "with the training query's on the labelled rows of the "
                                                   "window_days before the champion's as-of, and fail naming any "
                                                   "feature that differs (training/serving skew); false: skip")

    @field_validator("schedule")
    @classmethod
    def _cron_or_preset(cls, value: str | None) -> str | None:
        return None if value is None else checked_schedule(value, SCORING_PRESETS)

    @model_validator(mode="after")
    def _one_query(self) -> ScoringSpec:
        if (self.query_file is None) == (self.query is None):
            raise ValueError("expected either query_file or query (not both, not neither)")
        return self

    @property
    def shadow_destination(self) -> str:
        """Where the shadow model's scores go: never the served table."""
        return self.destination + SHADOW_SUFFIX
