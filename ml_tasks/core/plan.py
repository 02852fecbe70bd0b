"""Resolve a trigger (logical date and UI params) into an explicit :class:`RunPlan`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ml_tasks.core.artifacts import StoreLayout
from ml_tasks.core.manifests import CLI_RUN_ID, RunPlan
from ml_tasks.core.spec import ModelSpec, query_texts, spec_hash


class PlanError(ValueError):
    """A trigger parameter is invalid; the message names it."""


def to_naive_utc(moment: datetime | str) -> datetime:
    """Timestamps are compared naive-in-UTC everywhere (the warehouse stores naive UTC)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def parse_as_of(value: datetime | str) -> datetime:
    """The as-of moment of a trigger, or a :class:`PlanError` naming the parameter."""
    try:
        return to_naive_utc(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PlanError(f"param 'as_of': expected an ISO date or datetime (UTC), e.g. 2024-09-01 or "
                        f"2024-09-01T03:00:00+00:00, got {value!r} ({exc})") from None


def make_plan(
    spec: ModelSpec,
    spec_path: Path,
    include_dir: Path,
    layout: StoreLayout,
    as_of: datetime | str,
    *,
    sample_size: int | None = None,
    candidates: list[str] | None = None,
    dry_run: bool = False,
    dag_run_id: str = CLI_RUN_ID,
    trigger: str | None = None,
) -> RunPlan:
    """Build the plan of one run.

    The baseline candidate is always trained (the gate compares with it); unknown candidate
    names and non-positive sample sizes are rejected with the parameter's name.
    """
    as_of = parse_as_of(as_of)
    selected = list(candidates) if candidates else spec.candidate_names
    unknown = [c for c in selected if c not in spec.candidate_names]
    if unknown:
        raise PlanError(f"param 'candidates': unknown {unknown}; expected a subset of {spec.candidate_names}")
    if spec.baseline_name not in selected:
        selected.insert(0, spec.baseline_name)
    selected = [c for c in spec.candidate_names if c in selected]  # spec order, no duplicates
    if isinstance(sample_size, bool) or not isinstance(sample_size, int | None):
        raise PlanError(f"param 'sample_size': expected a positive integer, got {sample_size!r}")
    size = spec.sampling.size if sample_size is None else sample_size
    if size <= 0:
        raise PlanError(f"param 'sample_size': expected a positive integer, got {sample_size}")
    recipe_hash = spec_hash(spec, query_texts(spec, include_dir))
    # The run key names the data interval and the recipe, so a retry of the same run reuses
    # its folder while a different sample size or candidate set gets its own. A dry run gets a
    # key (and folder) of its own too: it must never overwrite the real run of its interval.
    recipe = f"{recipe_hash}|{size}|{','.join(selected)}" + ("|dry-run" if dry_run else "")
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    run_key = f"{as_of:%Y%m%dT%H%M%S}-{digest}"
    try:
        window_start = as_of - timedelta(days=spec.source.window_days)
    except OverflowError:
        raise PlanError(f"param 'as_of': {as_of.date().isoformat()} is too early for the spec's window of "
                        f"{spec.source.window_days} days (it would start before year 1)") from None
    return RunPlan(
        model=spec.name,
        spec_path=str(spec_path),
        spec_hash=recipe_hash,
        as_of=as_of,
        window_start=window_start,
        sample_size=size,
        candidates=selected,
        dry_run=bool(dry_run),
        dag_run_id=dag_run_id,
        run_key=run_key,
        run_prefix=layout.run(spec.name, run_key).prefix,
        trigger=trigger,
    )
