"""Generate the three warehouse tables in memory, as pandas frames.

Everything is drawn with one ``numpy.random.default_rng(seed)`` in a fixed order (application
counts, times, customers, applications, labels, label delays) and fully vectorised, so the same
settings always give byte-identical tables and 10 million applications fit in memory and
generate in seconds. Changing the order of the draws changes every table: keep it.

Labels arrive a uniform ``label_delay_days`` after the application, so the newest applications
have outcome rows whose ``observed_at`` lies in the future of the data span; the pipeline, not
this package, decides which labels are mature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_tasks.data.demo_warehouse.clock import SECONDS_PER_DAY, Clock
from ml_tasks.data.demo_warehouse.effects import CHANNELS, PURPOSES, REGIONS, TERMS
from ml_tasks.data.demo_warehouse.population import (
    draw_application_times,
    draw_applications,
    draw_applications_per_customer,
    draw_customers,
)
from ml_tasks.data.demo_warehouse.risk import default_logits, draw_defaults
from ml_tasks.data.demo_warehouse.settings import DemoWarehouseSettings


def generate_tables(settings: DemoWarehouseSettings) -> dict[str, pd.DataFrame]:
    """Generate the three warehouse tables in memory.

    Pure and seeded: the same settings always return identical frames, in the same row order
    (customers by ``customer_id``, applications and outcomes by ``application_id``). IDs start
    at 1 and increase with ``signup_date`` and ``applied_at`` respectively, as they would in an
    operational system.

    Parameters
    ----------
    settings : DemoWarehouseSettings

    Returns
    -------
    dict of str to DataFrame
        ``{"customers": ..., "applications": ..., "outcomes": ...}`` with exactly the columns
        of the SQL tables, ``int64``/``float64``/``str`` dtypes and ``datetime64[us]``
        datetimes holding whole seconds.
    """
    rng = np.random.default_rng(settings.seed)
    clock = Clock.from_settings(settings)

    counts = draw_applications_per_customer(rng, settings.rows, settings.applications_per_customer)
    owner, applied_s = draw_application_times(rng, counts, clock.span_s)
    customers = draw_customers(rng, owner, applied_s)
    apps = draw_applications(rng, owner, applied_s, customers, clock)

    defaulted = draw_defaults(rng, default_logits(apps, customers, owner, applied_s, clock), settings.positive_rate)
    low, high = settings.label_delay_days
    delay_s = rng.integers(low * SECONDS_PER_DAY, high * SECONDS_PER_DAY, size=settings.rows, endpoint=True)

    return _assemble_frames(clock, owner, applied_s, customers, apps, defaulted, delay_s)


def _assemble_frames(
    clock: Clock,
    owner: np.ndarray,
    applied_s: np.ndarray,
    customers: dict[str, np.ndarray],
    apps: dict[str, np.ndarray],
    defaulted: np.ndarray,
    delay_s: np.ndarray,
) -> dict[str, pd.DataFrame]:
    """Number customers by signup and applications by time, then build the frames."""
    customer_order = np.argsort(customers["signup_s"], kind="stable")
    customer_id = np.empty_like(customer_order)
    customer_id[customer_order] = np.arange(1, len(customer_order) + 1)

    app_order = np.argsort(applied_s, kind="stable")
    application_id = np.arange(1, len(app_order) + 1, dtype=np.int64)

    def stamps(seconds: np.ndarray) -> np.ndarray:
        # Microseconds: the unit pandas 3 gives datetimes read back through SQLAlchemy.
        return clock.to_datetime(seconds).astype("datetime64[us]")

    customers_frame = pd.DataFrame(
        {
            "customer_id": np.arange(1, len(customer_order) + 1, dtype=np.int64),
            "signup_date": stamps(customers["signup_s"][customer_order]),
            "region": REGIONS[customers["region"][customer_order]],
            "age": customers["age"][customer_order],
            "income": customers["income"][customer_order],
            "employment_years": customers["employment_years"][customer_order],
        }
    )
    applied_sorted = applied_s[app_order]
    applications_frame = pd.DataFrame(
        {
            "application_id": application_id,
            "customer_id": customer_id[owner[app_order]].astype(np.int64),
            "applied_at": stamps(applied_sorted),
            "amount": apps["amount"][app_order],
            "term_months": TERMS[apps["term"][app_order]].astype(np.int64),
            "purpose": PURPOSES[apps["purpose"][app_order]],
            "channel": CHANNELS[apps["channel"][app_order]],
            "credit_score": apps["credit_score"][app_order],
            "existing_debt": apps["existing_debt"][app_order],
        }
    )
    outcomes_frame = pd.DataFrame(
        {
            "application_id": application_id,
            "defaulted": defaulted[app_order],
            "observed_at": stamps(applied_sorted + delay_s[app_order]),
        }
    )
    return {"customers": customers_frame, "applications": applications_frame, "outcomes": outcomes_frame}
