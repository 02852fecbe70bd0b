"""The spec's reference in Markdown, generated from the schemas themselves:
``python -m ml_tasks spec-reference`` prints the spec's sections and every family's params with
type, default and range, so the documentation cannot drift from what the loader checks.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ml_tasks.core.spec.families import FAMILY_PARAMS
from ml_tasks.core.spec.model import ModelSpec
from ml_tasks.core.spec.monitoring import AgeTrigger, DecayTrigger, DriftTrigger, MonitoringSpec, VolumeTrigger
from ml_tasks.core.spec.scoring import ScoringSpec

_INTRO = """\
Generated from the schemas by `python -m ml_tasks spec-reference`. A spec is checked whole when it
is loaded, before any data is read: every problem is listed at once, each at its field
(`candidates.2.params.epochs: unknown parameter of torch_mlp …`)."""

_PARAMS_INTRO = """\
Each candidate names a `family` and gives it `params`; a name the family does not know, a value
of the wrong type or out of range is a spec error. `search` is a search space (Optuna TPE, seeded) over the
same names, tried for `training.trials` fits after the first (which uses `params` as written):
per parameter a list of values to choose from, or a range `{low, high, log, integer}` whose ends
lie in the parameter's range (a whole-number parameter needs `integer: true`)."""


def spec_reference() -> str:
    """The reference as Markdown: the spec's sections, then each family's params."""
    lines = ["## Spec reference", "", _INTRO, "", "### Sections", "",
             "| field | type | default | what it holds |", "| --- | --- | --- | --- |"]
    for name, field in ModelSpec.model_fields.items():
        lines.append(f"| `{name}` | {_type(field)} | {_default(field)} | {field.description or ''} |")
    lines += ["", "### Candidate parameters", "", _PARAMS_INTRO]
    for family, schema in FAMILY_PARAMS.items():
        lines += ["", f"#### `{family}`", "", _paragraph(schema), ""]
        if not schema.model_fields:
            lines.append("No parameters.")
            continue
        lines += ["| param | type | default | range | what it does |", "| --- | --- | --- | --- | --- |"]
        for name, field in schema.model_fields.items():
            lines.append(f"| `{name}` | {_type(field)} | {_default(field)} | {_range(field)} | {field.description} |")
    lines += _section("### The `scoring` section", ScoringSpec)
    lines += _section("### The `monitoring` section", MonitoringSpec)
    for name, trigger in (("decay", DecayTrigger), ("drift", DriftTrigger), ("volume", VolumeTrigger),
                          ("age", AgeTrigger)):
        lines += _section(f"#### `monitoring.triggers.{name}`", trigger)
    return "\n".join(lines) + "\n"


def _section(heading: str, schema: type[BaseModel]) -> list[str]:
    """A heading, the schema's docstring, and a table of its fields with type, default and range."""
    lines = ["", heading, "", _paragraph(schema), "",
             "| field | type | default | range | what it holds |", "| --- | --- | --- | --- | --- |"]
    for name, field in schema.model_fields.items():
        lines.append(f"| `{name}` | {_type(field)} | {_default(field)} | {_range(field)} | {field.description} |")
    return lines


def _paragraph(schema: type[BaseModel]) -> str:
    return " ".join((schema.__doc__ or "").split()).replace("``", "`")


def _extra(field: FieldInfo, key: str) -> str | None:
    extra = field.json_schema_extra
    value = extra.get(key) if isinstance(extra, dict) else None
    return str(value) if value is not None else None


def _type(field: FieldInfo) -> str:
    return _extra(field, "written") or _label(field.annotation)


def _label(annotation: object) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    named = {bool: "true/false", int: "whole number", float: "number", str: "text"}
    if isinstance(annotation, type) and annotation in named:
        return named[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if origin is Annotated:
        return _label(args[0])
    if origin is Literal:
        return " or ".join(json.dumps(arg) for arg in args)
    if origin in (Union, types.UnionType):
        labels = [_label(arg) for arg in args if arg is not type(None)]
        return " or ".join(labels) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_label(args[0])}"
    if origin is dict:
        return "mapping"
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, tuple):
        return f'`"{",".join(map(str, value))}"`'
    return f"`{json.dumps(value)}`"


def _range(field: FieldInfo) -> str:
    written = _extra(field, "range")
    if written:
        return written
    low: tuple[str, str, object] | None = None
    high: tuple[str, str, object] | None = None
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            low = ("[", "≥", bound.ge)
        elif isinstance(bound, annotated_types.Gt):
            low = ("(", ">", bound.gt)
        elif isinstance(bound, annotated_types.Le):
            high = ("]", "≤", bound.le)
        elif isinstance(bound, annotated_types.Lt):
            high = (")", "<", bound.lt)
    if low and high:
        return f"{low[0]}{low[2]:g}, {high[2]:g}{high[0]}"
    if low:
        return f"{low[1]} {low[2]:g}"
    if high:
        return f"{high[1]} {high[2]:g}"
    return "any" if field.annotation in (int, float) else "—"
