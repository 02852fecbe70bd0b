"""Reading a spec file, finding its SQL, hashing the recipe, and finding every spec of a folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from ml_tasks.core.spec.base import SpecError
from ml_tasks.core.spec.families import error_message, got_suffix
from ml_tasks.core.spec.model import ModelSpec
from ml_tasks.core.spec.monitoring import MonitoringSpec
from ml_tasks.core.spec.scoring import ScoringSpec


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
        raise SpecError(f"spec {path}: " + describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """Every error of a spec on one line, each as ``field 'a.b.c': what is wrong``."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error_message(error["msg"])
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        elif error["type"] == "missing":
            message = "required field is missing"
        else:  # say what was written
            message += got_suffix(error["type"], message, error["input"])
        parts.append(f"field '{field}': {message}")
    return (f"{len(parts)} problems: " if len(parts) > 1 else "") + "; ".join(parts)


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


#: Fields added after specs were first hashed, as (path, default): left out of the hash while they
#: hold their default, so an upgrade does not give every interval a new run key (a re-run of an
#: interval that already has a champion would then be a new run, and could register it again).
#: A spec that sets one to another value is a new recipe, as it should be.
ADDED_FIELDS: tuple[tuple[tuple[str, ...], object], ...] = (
    (("trainer", "cpus"), None),
    (("acceptance", "champion", "min_improvement"), 0.0),
    (("acceptance", "baseline", "min_improvement"), 0.0),
    (("acceptance", "min_class_rows"), 10),
    (("acceptance", "degraded_champion"), "alert"),
)


#: Sections that say how the champion is used, not what is trained: never part of the hash, so
#: adding or changing one gives no interval a new run key.
NOT_RECIPE: tuple[str, ...] = ("scoring", "monitoring", "promotion", "approval_timeout_hours", "approvers",
                               "timeouts")
#: Fields that say how a run's work is cut into tasks, or where its tasks run, not what it
#: computes: never hashed either.
NOT_RECIPE_FIELDS: tuple[tuple[str, ...], ...] = (("backtest", "folds_per_task"), ("trainer", "queue"))


def spec_hash(spec: ModelSpec, query_text: str) -> str:
    """Content hash of the spec and its SQL: a change to either is a new recipe."""
    dumped = spec.model_dump(mode="json", exclude=set(NOT_RECIPE))
    for path, default in ADDED_FIELDS:
        _drop_default(dumped, path, default)
    for path in NOT_RECIPE_FIELDS:
        _drop_default(dumped, path, _ANY)
    canonical = json.dumps(dumped, sort_keys=True) + "\n" + query_text
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _Any:
    """Equal to every value: :func:`_drop_default` with it removes a field whatever it holds."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]


_ANY = _Any()


def _drop_default(dumped: dict[str, object], path: tuple[str, ...], default: object) -> None:
    """Remove ``path`` from a dumped spec when it holds ``default``; lists apply it to each item."""
    *parents, name = path
    holders: list[object] = [dumped]
    for key in parents:
        nested = [holder.get(key) for holder in holders if isinstance(holder, dict)]
        holders = [item for value in nested for item in (value if isinstance(value, list) else [value])]
    for holder in holders:
        if isinstance(holder, dict) and name in holder and holder[name] == default:
            del holder[name]


def scoring_section(spec: ModelSpec) -> ScoringSpec:
    """The spec's ``scoring`` section, or a :class:`SpecError` saying it has none."""
    if spec.scoring is None:
        raise SpecError(f"spec {spec.name!r}: has no 'scoring' section; expected one (query_file or query, "
                        f"destination, schedule) to score with")
    return spec.scoring


def monitoring_section(spec: ModelSpec) -> MonitoringSpec:
    """The spec's ``monitoring`` section, or a :class:`SpecError` saying it has none."""
    if spec.monitoring is None:
        raise SpecError(f"spec {spec.name!r}: has no 'monitoring' section; expected one (schedule, triggers, "
                        f"cooldown_days) to monitor the champion with")
    return spec.monitoring


def scoring_query(spec: ModelSpec, include_dir: Path) -> str:
    """The SQL of the spec's ``scoring`` section: written inline, or its ``query_file`` under ``include_dir``."""
    scoring = scoring_section(spec)
    if scoring.query is not None:
        return scoring.query
    path = include_dir / str(scoring.query_file)
    if not path.is_file():
        raise SpecError(f"spec {spec.name!r}: scoring.query_file {scoring.query_file!r} not found under {include_dir}")
    return path.read_text()


def discover_specs(models_dir: Path) -> list[Path]:
    """Spec files a DAG is built for: every ``*.yaml`` in ``models_dir``, sorted."""
    return sorted(models_dir.glob("*.yaml"))
