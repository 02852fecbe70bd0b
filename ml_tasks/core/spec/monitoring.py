"""The optional ``monitoring:`` section: when the champion's health is checked, and what queues a retrain.

A spec with this section gets a ``monitor_<model>`` DAG (and ``python -m ml_tasks monitor``). Each
run reads, with the spec's own point-in-time query, the rows whose labels matured since the
champion's as-of date, measures the champion on them and compares them with its training
snapshot; each configured trigger then says whether a retrain is due::

    monitoring:
      schedule: "0 4 * * *"
      cooldown_days: 7
      triggers:
        decay:  {metric: roc_auc, margin: 0.02, alpha: 0.05}   # significantly worse than registered
        drift:  {max_psi: 0.25, max_label_rate_shift: 0.05}
        volume: {min_new_rows: 50000}
        age:    {}                                             # the last backtest's recommended interval

Monitoring changes nothing about what is trained, so, like ``scoring:``, the section is left out
of the spec's recipe hash (:data:`ml_tasks.core.spec.loading.NOT_RECIPE`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ml_tasks.core.spec.base import PRESETS, Strict, checked_schedule

#: Metrics whose decay a monitor can judge with an interval: AUC by DeLong's variance, the
#: others as means of per-row losses.
DECAY_METRICS = ("roc_auc", "log_loss", "brier")


class DecayTrigger(Strict):
    """The champion's live metric on the newly matured rows is worse than its registered test
    metric by more than `margin`, judged with a one-sided confidence interval at `alpha`: a
    significant decay, not a point drop."""

    metric: Literal["roc_auc", "log_loss", "brier"] = Field("roc_auc", description="the metric judged")
    margin: float = Field(0.02, ge=0, le=1, description="how much worse than registered the live metric may be")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="one-sided level of the interval")


class DriftTrigger(Strict):
    """The new rows' inputs or label rate moved away from the champion's training snapshot: a
    feature's PSI above `max_psi` (PSI's own noise is about (bins − 1) / rows, so `min_rows` of 20×
    the bins keeps it below 0.05), or a label-rate shift significantly above `max_label_rate_shift`
    (the shift's one-sided lower bound at `alpha` exceeds it)."""

    max_psi: float = Field(0.25, gt=0, description="trips when any feature's PSI against the training "
                                                   "snapshot exceeds it (0.25: a major shift)")
    max_label_rate_shift: float | None = Field(None, gt=0, lt=1, description="trips when the positive rate "
                                                                            "moved significantly by more than "
                                                                            "this (absolute)")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="one-sided level of the label-rate shift's bound")


class VolumeTrigger(Strict):
    """Enough new labelled rows have matured since the champion's as-of to be worth a retrain."""

    min_new_rows: int = Field(ge=1, description="trips at this many new mature labelled rows")


class AgeTrigger(Strict):
    """The champion is older than it should be: its age in days since its as-of date against a
    fixed limit, or, without one, the retraining interval the last backtest recommended."""

    max_age_days: int | None = Field(None, ge=1, le=3650, description="trips at this age; null: the "
                                                                      "recommended interval of the champion's "
                                                                      "backtest")


class TriggersSpec(Strict):
    """Each trigger is optional; none configured means the monitor only records health."""

    decay: DecayTrigger | None = Field(None, description="significant decay of a live metric")
    drift: DriftTrigger | None = Field(None, description="feature PSI or label-rate shift")
    volume: VolumeTrigger | None = Field(None, description="new mature labelled rows")
    age: AgeTrigger | None = Field(None, description="days since the champion's as-of")


class MonitoringSpec(Strict):
    """Champion health between retrains, and the triggers that queue one (the retrain Asset)."""

    schedule: str = Field("@daily", description="a 5-field cron expression or a preset such as @daily")
    triggers: TriggersSpec = Field(TriggersSpec(), description="decay, drift, volume and age, each optional")
    cooldown_days: float = Field(7, ge=0, le=365, description="a trigger that fired fires again only this "
                                                             "many days later")
    min_rows: int = Field(200, ge=1, description="decay and drift are judged only on at least this many new "
                                                 "mature rows")
    max_null_rate: float | None = Field(None, ge=0, le=1, description="a feature above this null rate in the "
                                                                      "new rows is a data-quality finding "
                                                                      "(default: validation.max_null_rate)")

    @field_validator("schedule")
    @classmethod
    def _cron_or_preset(cls, value: str) -> str:
        return checked_schedule(value, PRESETS - {"@once"})

    @property
    def configured(self) -> list[str]:
        """The names of the configured triggers, in the order they are evaluated."""
        return [name for name in ("decay", "drift", "volume", "age") if getattr(self.triggers, name) is not None]
