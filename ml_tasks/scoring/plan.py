"""Plan a batch-scoring run: its interval and run key, and the model versions it scores with."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

from ml_tasks.core.artifacts import StoreLayout
from ml_tasks.core.manifests import CLI_RUN_ID, ScoringModel, ScoringPlan
from ml_tasks.core.plan import PlanError, parse_as_of
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import ModelSpec, ScoringSpec, scoring_section
from ml_tasks.registry.versions import ChampionInfo, get_champion, latest_challenger


class NoChampionError(RuntimeError):
    """There is no champion to score with; the message names the registered model and the alias."""


def scoring_run_key(as_of: datetime, window_start: datetime) -> str:
    """``<as_of>-<digest>``: the interval alone decides it, so a re-run of an interval (with any
    champion, after any spec edit) replaces that interval's rows."""
    digest = hashlib.sha256(f"{window_start.isoformat()}|{as_of.isoformat()}".encode()).hexdigest()[:8]
    return f"{as_of:%Y%m%dT%H%M%S}-{digest}"


def make_scoring_plan(spec: ModelSpec, spec_path: Path, layout: StoreLayout, as_of: datetime | str,
                      settings: Settings, dag_run_id: str = CLI_RUN_ID,
                      gated: ScoringModel | None = None) -> ScoringPlan:
    """The plan of one scoring run; raises :class:`NoChampionError` when no version is champion.

    ``gated`` is the model the latest retrain run's gate put forward and did not promote (a FAIL),
    which ``shadow: latest_challenger`` scores when no version was registered after the champion.
    """
    scoring = scoring_section(spec)
    moment = parse_as_of(as_of)
    try:
        window_start = moment - timedelta(days=scoring.window_days)
    except OverflowError:
        raise PlanError(f"param 'as_of': {moment.date().isoformat()} is too early for scoring.window_days="
                        f"{scoring.window_days}") from None
    run_key = scoring_run_key(moment, window_start)
    champion = get_champion(settings, spec.registry_name)
    if champion is None:
        raise NoChampionError(f"registered model {spec.registry_name!r} has no 'champion' alias, so there is nothing "
                              f"to score with; expected a champion (a retrain_{spec.name} run whose gate passed, or "
                              f"`python -m ml_tasks promote`)")
    shadow, note = _shadow(spec, scoring, champion, settings, gated)
    return ScoringPlan(
        model=spec.name, registry_name=spec.registry_name, spec_path=str(spec_path), as_of=moment,
        window_start=window_start, run_key=run_key, run_prefix=layout.scoring_run(spec.name, run_key).prefix,
        dag_run_id=dag_run_id, destination=scoring.destination, champion=_pinned(champion),
        shadow=shadow,
        shadow_destination=scoring.shadow_destination if shadow else None, shadow_note=note,
    )


def _shadow(spec: ModelSpec, scoring: ScoringSpec, champion: ChampionInfo, settings: Settings,
            gated: ScoringModel | None) -> tuple[ScoringModel | None, str | None]:
    """The shadow model the spec asks for, or why there is none: a version registered after the
    champion, else the challenger the latest gate refused (a logged model, not a version)."""
    if scoring.shadow == "none":
        return None, None
    challenger = latest_challenger(settings, spec.registry_name, champion.version)
    if challenger is not None:
        return _pinned(challenger), None
    if gated is not None:
        return gated, None
    return None, (f"no version of {spec.registry_name!r} was registered after champion v{champion.version}, and "
                  "the latest gate promoted what it put forward; nothing to score in shadow")


def gated_challenger(latest_verdict: dict | None, report: dict | None) -> ScoringModel | None:
    """The model a FAIL verdict's gate put forward (from the latest report), to score in shadow:
    ``version`` names it by its run key and candidate, since it has no registry version."""
    if not latest_verdict or latest_verdict.get("verdict") != "FAIL" or not report:
        return None
    model = (report.get("gate") or {}).get("challenger_model") or {}
    if not model.get("model_uri"):
        return None
    run_key = latest_verdict.get("run_key") or report.get("plan", {}).get("run_key")
    return ScoringModel(version=f"{run_key}/{model['candidate']}", model_uri=model["model_uri"],
                        trained_run_key=run_key)


def _pinned(info: ChampionInfo) -> ScoringModel:
    as_of = info.tags.get("refit.as_of")
    return ScoringModel(version=info.version, model_uri=info.model_uri,
                        trained_run_key=info.tags.get("refit.run_key"),
                        trained_as_of=parse_as_of(as_of) if as_of else None)
