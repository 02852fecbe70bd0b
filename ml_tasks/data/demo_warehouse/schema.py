"""The demo warehouse's three tables and their indexes, as SQLAlchemy Core objects.

``customers``
    One row per customer: ``customer_id``, ``signup_date``, ``region``, ``age`` (at signup),
    ``income`` (annual, declared at signup) and ``employment_years``.
``applications``
    One row per loan application: ``application_id``, ``customer_id``, ``applied_at``,
    ``amount``, ``term_months``, ``purpose``, ``channel``, ``credit_score`` (at application
    time) and ``existing_debt``.
``outcomes``
    Exactly one row per application: ``application_id``, ``defaulted`` (0/1) and
    ``observed_at``, the moment the label became known.

Every table is keyed by an integer id the generator assigns (so the database never numbers
rows itself) and every other column is NOT NULL. Datetimes are naive (UTC implied).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, Float, Index, Integer, MetaData, String, Table
from sqlalchemy.types import TypeEngine

METADATA = MetaData()


def _table(name: str, key: str, **required: TypeEngine[Any] | type[TypeEngine[Any]]) -> Table:
    """Table ``name`` keyed by the integer ``key``, then the ``required`` columns in order."""
    return Table(
        name,
        METADATA,
        Column(key, Integer, primary_key=True, autoincrement=False),
        *(Column(column, kind, nullable=False) for column, kind in required.items()),
    )


CUSTOMERS = _table(
    "customers", "customer_id",
    signup_date=DateTime(timezone=False), region=String(16), age=Integer, income=Float, employment_years=Float,
)

APPLICATIONS = _table(
    "applications", "application_id",
    customer_id=Integer, applied_at=DateTime(timezone=False), amount=Float, term_months=Integer,
    purpose=String(32), channel=String(16), credit_score=Integer, existing_debt=Float,
)

OUTCOMES = _table("outcomes", "application_id", defaulted=Integer, observed_at=DateTime(timezone=False))

#: Every table by name, in the order they are filled.
TABLES: dict[str, Table] = {t.name: t for t in (CUSTOMERS, APPLICATIONS, OUTCOMES)}

# Built after the rows are in: one sort per index instead of a B-tree update per row.
INDEXES = (
    Index("ix_applications_customer_id_applied_at", APPLICATIONS.c.customer_id, APPLICATIONS.c.applied_at),
    Index("ix_applications_applied_at", APPLICATIONS.c.applied_at),
    Index("ix_outcomes_application_id", OUTCOMES.c.application_id),
    Index("ix_outcomes_observed_at", OUTCOMES.c.observed_at),
)
