"""Each candidate family has one params schema, and the generated reference lists every field of
every schema (``python -m ml_tasks spec-reference``)."""

from __future__ import annotations

from typing import get_args

import pytest

from ml_tasks.core.spec import (
    FAMILIES,
    FAMILY_PARAMS,
    AgeTrigger,
    CandidateSpec,
    DecayTrigger,
    DriftTrigger,
    ModelSpec,
    MonitoringSpec,
    ScoringSpec,
    VolumeTrigger,
    spec_reference,
)


def rows(markdown: str) -> dict[str, list[str]]:
    """A Markdown table's rows by their first cell (the name in backticks), cells stripped."""
    cells = (line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| `"))
    return {row[0].strip().strip("`"): [cell.strip() for cell in row[1:]] for row in cells}


def family_section(text: str, family: str) -> str:
    """The reference's part about one family: from its heading to the next (of any level)."""
    return text.split(f"\n#### `{family}`\n")[1].split("\n#### ")[0].split("\n### ")[0]


def test_every_family_a_spec_may_name_has_one_params_schema():
    literal = get_args(CandidateSpec.model_fields["family"].annotation)
    assert tuple(FAMILY_PARAMS) == FAMILIES == literal
    assert all(schema.family == family for family, schema in FAMILY_PARAMS.items())


def test_the_spec_reference_lists_every_field_of_every_schema_with_type_default_and_range():
    text = spec_reference()
    sections = text.split("\n### Sections\n")[1].split("\n### Candidate parameters\n")[0]
    assert set(rows(sections)) == set(ModelSpec.model_fields)
    for family, schema in FAMILY_PARAMS.items():
        table = rows(family_section(text, family))
        assert set(table) == set(schema.model_fields), family
        assert all(len(cells) == 4 and all(cells) for cells in table.values()), family
    assert "No parameters." in family_section(text, "prior")
    triggers = {"decay": DecayTrigger, "drift": DriftTrigger, "volume": VolumeTrigger, "age": AgeTrigger}
    sections = [("### The `scoring` section", ScoringSpec), ("### The `monitoring` section", MonitoringSpec),
                *((f"#### `monitoring.triggers.{name}`", trigger) for name, trigger in triggers.items())]
    for heading, schema in sections:
        table = rows(text.split(f"\n{heading}\n")[1].split("\n#")[0])
        assert set(table) == set(schema.model_fields), heading
        assert all(len(cells) == 4 and all(cells) for cells in table.values()), heading


@pytest.mark.parametrize(("family", "name", "cells"), [
    ("lightgbm", "num_leaves", ["whole number", "`31`", "[2, 131072]", "most leaves per tree"]),
    ("torch_mlp", "hidden", ['layer widths, e.g. "256,128"', '`"256,128"`', "each ≥ 1"]),
    ("torch_mlp", "resident", ['true/false or "auto"', '`"auto"`', "—"]),
    ("logistic_regression", "C", ["number", "`1.0`", "> 0"]),
])
def test_the_reference_shows_a_param_as_it_is_written_in_a_spec(family, name, cells):
    assert rows(family_section(spec_reference(), family))[name][:len(cells)] == cells


def test_candidate_params_are_kept_as_written_so_the_schemas_defaults_never_reach_the_hash():
    candidate = CandidateSpec(name="gbm", family="lightgbm", params={"num_leaves": 15})
    assert candidate.model_dump()["params"] == {"num_leaves": 15}
