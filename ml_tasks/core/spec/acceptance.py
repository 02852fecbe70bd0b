"""What a challenger must show to be promoted: absolute thresholds, paired comparisons with the
champion, fold wins, slices and serving guardrails."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from ml_tasks.core.columns import COMPARABLE_METRICS
from ml_tasks.core.spec.base import Strict


class ThresholdSpec(Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdSpec:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min or max")
        return self


class ComparisonSpec(Strict):
    """One paired comparison with the champion on the same test rows.

    ``roc_auc`` is tested with DeLong's test; ``log_loss``, ``brier``, ``pr_auc`` and ``ece`` with a
    paired Poisson bootstrap; ``accuracy`` (at ``acceptance.decision_threshold``) with McNemar.
    ``non_inferior`` tests H0 "the gain is at most ``-margin``" (worse by the margin or more);
    ``superior`` tests H0 "the gain is at most ``min_improvement``", so a negligible gain that is
    merely significant (highly correlated models) does not promote. Each field belongs to one
    mode: a ``margin`` written on a ``superior`` check or a ``min_improvement`` on a
    ``non_inferior`` one is rejected rather than silently ignored.
    """

    metric: str = "roc_auc"
    mode: Literal["non_inferior", "superior"] = "non_inferior"
    #: Allowed loss in the metric for ``non_inferior`` (in the metric's own units).
    margin: float = Field(default=0.01, ge=0.0)
    #: Smallest gain worth a promotion for ``superior`` (H0: the gain is at most this much).
    min_improvement: float = Field(default=0.0, ge=0.0)

    @field_validator("metric")
    @classmethod
    def _testable(cls, value: str) -> str:
        if value not in COMPARABLE_METRICS:
            raise ValueError(f"unknown metric {value!r}; expected one of {list(COMPARABLE_METRICS)}")
        return value

    @model_validator(mode="after")
    def _one_bar_per_mode(self) -> ComparisonSpec:
        """Reject the field of the other mode (``margin`` has a default, so only a written one counts).

        A margin of 0 on a ``superior`` check says nothing the mode does not (the default
        ``baseline`` is written so). A dumped spec spells out every field, ``margin`` at its
        default next to ``min_improvement``, and must load back as the same spec: that pair is
        accepted too.
        """
        written = self.model_fields_set
        if self.mode == "superior" and "margin" in written and self.margin != 0.0 and not (
                "min_improvement" in written and self.margin == type(self).model_fields["margin"].default):
            raise ValueError(
                f"margin: {self.margin} does not apply to a 'superior' check (it tests H0 'gain <= "
                f"min_improvement'); for the smallest gain worth promoting write min_improvement: {self.margin}, "
                f"or use mode: non_inferior for an allowed loss")
        if self.mode == "non_inferior" and self.min_improvement != 0.0:
            raise ValueError(
                f"min_improvement: {self.min_improvement} does not apply to a 'non_inferior' check (it tests "
                f"H0 'worse by at least margin'); use mode: superior with min_improvement, or margin for an "
                f"allowed loss")
        return self


class ConsistencySpec(Strict):
    """Across backtest folds the challenger must win at least ``min_win_fraction`` of them."""

    metric: str = "roc_auc"
    min_win_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    test: Literal["sign", "wilcoxon"] = "sign"
    #: Also require the one-sided fold test to be significant (needs enough folds: 5 at 0.05).
    require_significance: bool = False


class SliceSpec(Strict):
    """Per-slice non-inferiority for the values of ``columns`` with at least ``min_size`` test rows."""

    columns: list[str] = []
    min_size: int = Field(default=200, ge=10)
    metric: str = "roc_auc"
    margin: float = Field(default=0.03, ge=0.0)


class GuardrailSpec(Strict):
    """Serving costs: latency per 1,000 rows and model size, absolute and relative to the champion."""

    max_latency_ms_per_1k: float | None = Field(default=None, gt=0)
    max_latency_ratio: float | None = Field(default=3.0, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)
    max_size_ratio: float | None = Field(default=5.0, gt=0)


class AcceptanceSpec(Strict):
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
    #: Fewest positive and fewest negative rows (with positive weight) a compared set (the test
    #: rows, a slice) needs for a paired test; below it a comparison is "insufficient data" and
    #: fails (the champion stays), and a slice is listed untested. Never fewer than 2 in effect
    #: (DeLong's variance divides by m - 1).
    min_class_rows: int = Field(default=10, ge=1)
    #: When the champion itself fails the absolute thresholds on the test rows: ``alert`` (report
    #: and notify; a challenger must still clear every bar) or ``replace_if_better`` (a challenger
    #: significantly better than the failing champion on every comparison may replace it although
    #: it misses bars the champion misses too; see :mod:`ml_tasks.gating.gate`).
    degraded_champion: Literal["alert", "replace_if_better"] = "alert"

    @field_validator("champion", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value


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
