"""Who applies, when, and for what: the customers and their applications, drawn at random.

* **Repeat customers.** Customers apply about ``applications_per_customer`` times, in bursts
  around a customer-specific moment, always after they signed up. Each customer carries a
  latent risk ``z`` that is never written: it is shared by all their applications (so earlier
  defaults predict later ones) and only partly revealed by the credit score.
* **Drift in the population.** Nominal incomes grow about 8 % a year and amounts about 3 %;
  the ``mobile`` channel opens in month
  :data:`~ml_tasks.data.demo_warehouse.effects.MOBILE_LAUNCH_MONTH` and takes a growing share.

Categorical columns come back as indexes into the vocabularies of
:mod:`~ml_tasks.data.demo_warehouse.effects`. Every function draws from the generator it is
given, vectorised; :func:`~ml_tasks.data.demo_warehouse.generate.generate_tables` calls them in
a fixed order, which is what makes the tables reproducible.
"""

from __future__ import annotations

import numpy as np

from ml_tasks.data.demo_warehouse.clock import SECONDS_PER_DAY, SECONDS_PER_MONTH, SECONDS_PER_YEAR, Clock
from ml_tasks.data.demo_warehouse.effects import (
    AMOUNT_GROWTH_PER_YEAR,
    CHANNEL_P_BEFORE_MOBILE,
    CHANNELS,
    INCOME_GROWTH_PER_YEAR,
    MOBILE_LAUNCH_MONTH,
    MOBILE_SHARE,
    PURPOSE_MEDIAN_AMOUNT,
    PURPOSE_P,
    PURPOSES,
    REGION_LOG_INCOME,
    REGION_P,
    REGIONS,
    TERM_P_BY_PURPOSE,
)


def draw_applications_per_customer(rng: np.random.Generator, rows: int, mean: float) -> np.ndarray:
    """Geometric counts (>= 1, mean ``mean``) summing exactly to ``rows``.

    A geometric count gives what lenders see: many one-off customers and a tail of frequent
    ones. Counts are drawn in batches until they cover ``rows``; the last customer's count is
    cut so the total is exact.
    """
    p = 1.0 / mean
    batch = int(rows / mean * 1.1) + 16
    counts = rng.geometric(p, size=batch)
    while counts.sum() < rows:  # rare: only when the first batch falls short
        counts = np.concatenate([counts, rng.geometric(p, size=batch)])
    total = np.cumsum(counts)
    n_customers = int(np.searchsorted(total, rows)) + 1
    counts = counts[:n_customers].copy()
    counts[-1] -= int(total[n_customers - 1]) - rows
    return counts.astype(np.int64)


def _reflect(x: np.ndarray, length: float) -> np.ndarray:
    """Fold ``x`` into ``[0, length]`` by mirroring at both ends.

    Mirroring keeps a uniform density uniform, so bursts near the edges of the span do not
    thin out the first and last months.
    """
    period = 2.0 * length
    x = np.mod(x, period)
    return np.where(x > length, period - x, x)


def draw_application_times(
    rng: np.random.Generator, counts: np.ndarray, span_s: int
) -> tuple[np.ndarray, np.ndarray]:
    """Customer index and application time (seconds since start) per application.

    Each customer has an anchor moment; their applications scatter around it (sd 3 months),
    so a customer's loans cluster in time while the book's volume stays flat over the span.
    """
    n_customers = len(counts)
    owner = np.repeat(np.arange(n_customers), counts)
    anchor = rng.uniform(0.0, span_s, size=n_customers)
    jitter = rng.normal(0.0, 3.0 * SECONDS_PER_MONTH, size=len(owner))
    applied = _reflect(anchor[owner] + jitter, span_s)
    applied_s = np.minimum(np.floor(applied).astype(np.int64), span_s - 1)
    return owner, applied_s


def draw_customers(rng: np.random.Generator, owner: np.ndarray, applied_s: np.ndarray) -> dict[str, np.ndarray]:
    """Per-customer attributes, including the latent risk ``z`` that is never written."""
    n = int(owner.max()) + 1
    first_applied_s = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_applied_s, owner, applied_s)

    # Most customers sign up shortly before borrowing; the rest are long-standing.
    is_new = rng.random(n) < 0.6
    tenure_days = np.where(is_new, rng.exponential(30.0, n), np.minimum(rng.exponential(900.0, n), 15 * 365.25))
    signup_s = first_applied_s - np.ceil(tenure_days * SECONDS_PER_DAY).astype(np.int64)

    z = rng.standard_normal(n)
    region = rng.choice(len(REGIONS), size=n, p=REGION_P)
    age = 18 + np.rint(62.0 * rng.beta(2.2, 3.5, size=n)).astype(np.int64)
    employment_years = np.round((age - 18) * rng.beta(2.0, 2.5, size=n), 1)

    # Earnings peak in the late forties; nominal incomes grow year on year (the drift).
    log_income = (
        np.log(42_000.0)
        + REGION_LOG_INCOME[region]
        - 0.9 * ((age - 48) / 30.0) ** 2
        + 0.015 * np.minimum(employment_years, 20.0)
        - 0.10 * z
        + rng.normal(0.0, 0.45, size=n)
    )
    growth = (1.0 + INCOME_GROWTH_PER_YEAR) ** (signup_s / SECONDS_PER_YEAR)
    income = np.round(np.maximum(np.exp(log_income) * growth, 8_000.0), 2)

    # A credit score is mostly the customer; each application adds a little bureau noise.
    score_base = 690.0 - 35.0 * z + 22.0 * (age - 42) / 13.0 + rng.normal(0.0, 45.0, size=n)
    return {
        "signup_s": signup_s,
        "z": z,
        "region": region,
        "age": age,
        "employment_years": employment_years,
        "income": income,
        "score_base": score_base,
    }


def _categorical_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One categorical draw per row of an ``(n, k)`` probability matrix, vectorised."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities)) * cumulative[:, -1]
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), probabilities.shape[1] - 1)


def _channel_probabilities(applied_s: np.ndarray, clock: Clock) -> np.ndarray:
    """Channel mix per application: ``mobile`` opens in month 12 and grows its share."""
    n = len(applied_s)
    probabilities = np.zeros((n, len(CHANNELS)))
    probabilities[:, :3] = CHANNEL_P_BEFORE_MOBILE
    if len(clock.month_starts_s) >= MOBILE_LAUNCH_MONTH:
        launch_s = clock.month_starts_s[MOBILE_LAUNCH_MONTH - 1]
        live = applied_s >= launch_s
        progress = (applied_s[live] - launch_s) / max(clock.span_s - launch_s, 1)
        share = MOBILE_SHARE[0] + (MOBILE_SHARE[1] - MOBILE_SHARE[0]) * progress
        probabilities[live, :3] *= (1.0 - share)[:, None]
        probabilities[live, 3] = share
    return probabilities


def draw_applications(
    rng: np.random.Generator,
    owner: np.ndarray,
    applied_s: np.ndarray,
    customers: dict[str, np.ndarray],
    clock: Clock,
) -> dict[str, np.ndarray]:
    """Per-application columns (indexes into the vocabularies for categoricals)."""
    n = len(owner)
    years = applied_s / SECONDS_PER_YEAR
    z = customers["z"][owner]

    purpose = rng.choice(len(PURPOSES), size=n, p=PURPOSE_P)
    raw_amount = (
        PURPOSE_MEDIAN_AMOUNT[purpose]
        * np.exp(rng.normal(0.0, 0.55, size=n))
        * (1.0 + AMOUNT_GROWTH_PER_YEAR) ** years
    )
    amount = np.maximum(np.round(raw_amount / 50.0) * 50.0, 500.0)
    term = _categorical_rows(rng, TERM_P_BY_PURPOSE[purpose])
    channel = _categorical_rows(rng, _channel_probabilities(applied_s, clock))

    score = np.clip(np.rint(customers["score_base"][owner] + rng.normal(0.0, 15.0, size=n)), 300, 850)

    # Debt scales with income; riskier customers carry more of it; some carry none.
    debt_ratio = np.exp(rng.normal(np.log(0.30) + 0.25 * z, 0.6))
    has_debt = rng.random(n) >= 0.12
    existing_debt = np.round(np.where(has_debt, customers["income"][owner] * debt_ratio, 0.0), 2)

    return {
        "purpose": purpose,
        "amount": amount,
        "term": term,
        "channel": channel,
        "credit_score": score.astype(np.int64),
        "existing_debt": existing_debt,
    }
