"""The retrain triggers: which of the spec's ``monitoring.triggers`` trip on a run's health, and why.

Each configured trigger gives a :class:`TriggerState` with a one-line reason, tripped or not, so
the health record says why nothing happened as plainly as why something did:

``decay``   the champion's live metric is significantly worse than registered (:mod:`.live`);
``drift``   some feature's PSI exceeds ``max_psi``, or the label rate moved significantly (at
            ``alpha``) by more than ``max_label_rate_shift``;
``volume``  at least ``min_new_rows`` rows with mature labels arrived since the champion's as-of;
``age``     the champion's age reached ``max_age_days``, or, without it, the interval its
            backtest recommended.

Decay and drift are judged only on ``monitoring.min_rows`` new rows or more: on fewer, PSI and
interval are too noisy to act on. :func:`apply_cooldown` then keeps a trigger that fired within
``cooldown_days`` from firing again, so a flapping condition queues one retrain, not one a day.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ml_tasks.core.spec import MonitoringSpec
from ml_tasks.monitoring.health import Health, TriggerState


def evaluate_triggers(monitoring: MonitoringSpec, health: Health) -> list[TriggerState]:
    """Every configured trigger on ``health``, in spec order (before any cool-down: fired = tripped)."""
    judges = {"decay": _decay, "drift": _drift, "volume": _volume, "age": _age}
    return [judges[name](monitoring, health) for name in monitoring.configured]


def _state(name: str, tripped: bool, reason: str, value: float | None = None,
           threshold: float | None = None) -> TriggerState:
    return TriggerState(name=name, tripped=tripped, fired=tripped, reason=reason, value=value, threshold=threshold)


def _too_few(monitoring: MonitoringSpec, health: Health) -> str | None:
    if health.rows >= monitoring.min_rows:
        return None
    return f"only {health.rows} new mature rows; judged from monitoring.min_rows={monitoring.min_rows}"


def _decay(monitoring: MonitoringSpec, health: Health) -> TriggerState:
    few = _too_few(monitoring, health)
    if few is not None or health.decay is None:
        return _state("decay", False, few or f"not judged: {health.decay_note or 'no live metric'}")
    judged = health.decay
    return _state("decay", judged.decayed, judged.reason, judged.live.favourable_bound, judged.limit)


def _drift(monitoring: MonitoringSpec, health: Health) -> TriggerState:
    drift = monitoring.triggers.drift
    assert drift is not None  # only configured triggers are evaluated
    few = _too_few(monitoring, health)
    if few is not None:
        return _state("drift", False, few)
    over = {name: value for name, value in health.psi.items() if value > drift.max_psi}
    findings = [f"PSI {value:.3f} of {name} above {drift.max_psi:g}" for name, value in over.items()]
    shift, bound = health.label_rate_shift, health.label_rate_shift_bound(drift.alpha)
    if drift.max_label_rate_shift is not None and bound is not None and bound > drift.max_label_rate_shift:
        findings.append(f"label rate {health.label_rate:.3f} vs {health.reference_label_rate:.3f} at training "
                        f"(shift {shift:.3f}, lower bound {bound:.3f} above {drift.max_label_rate_shift:g} "
                        f"at alpha {drift.alpha:g})")
    top = max(health.psi.values(), default=0.0)
    if findings:
        return _state("drift", True, "; ".join(findings), top, drift.max_psi)
    leader = max(health.psi, key=lambda name: health.psi[name], default=None)
    return _state("drift", False, f"max PSI {top:.3f}{f' ({leader})' if leader else ''} within {drift.max_psi:g}"
                  + (f"; label-rate shift {shift:.3f}" if shift is not None else ""), top, drift.max_psi)


def _volume(monitoring: MonitoringSpec, health: Health) -> TriggerState:
    volume = monitoring.triggers.volume
    assert volume is not None
    tripped = health.rows >= volume.min_new_rows
    return _state("volume", tripped, f"{health.rows} new mature labelled rows "
                  f"({'at least' if tripped else 'fewer than'} {volume.min_new_rows})",
                  float(health.rows), float(volume.min_new_rows))


def _age(monitoring: MonitoringSpec, health: Health) -> TriggerState:
    age = monitoring.triggers.age
    assert age is not None
    limit, source = age.max_age_days, "monitoring.triggers.age.max_age_days"
    if limit is None:
        limit, source = health.recommended_interval_days, "the recommended interval of its backtest"
    if limit is None:
        return _state("age", False, f"champion is {health.age_days:.0f} days old; no max_age_days and its run "
                                    "recorded no recommended interval", health.age_days)
    tripped = health.age_days >= limit
    return _state("age", tripped, f"champion is {health.age_days:.0f} days old "
                  f"({'at or past' if tripped else 'within'} {limit} days, {source})", health.age_days, float(limit))


def apply_cooldown(states: list[TriggerState], last_fired: dict[str, datetime], as_of: datetime,
                   cooldown_days: float) -> list[TriggerState]:
    """``states`` with every trigger that fired less than ``cooldown_days`` before ``as_of`` held back:
    still tripped, not fired, the reason saying until when."""
    held = []
    for state in states:
        previous = last_fired.get(state.name)
        if state.tripped and previous is not None and as_of - previous < timedelta(days=cooldown_days):
            until = previous + timedelta(days=cooldown_days)
            state = state.model_copy(update={"fired": False, "reason": f"{state.reason}; cooling down: fired "
                                             f"{previous:%Y-%m-%d %H:%M}, fires again from {until:%Y-%m-%d %H:%M}"})
        held.append(state)
    return held
