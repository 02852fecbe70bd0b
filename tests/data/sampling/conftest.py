"""The population every sampler test module shares, built once per test session."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ml_tasks.data.sampling import allocate
from tests.data.sampling.population import make_population, stratum_counts


@pytest.fixture(scope="session")
def population() -> pa.Table:
    return make_population()


@pytest.fixture(scope="session")
def counts(population) -> dict[tuple, int]:
    return stratum_counts(population)


@pytest.fixture(scope="session")
def quotas(counts) -> dict[tuple, int]:
    return allocate(counts, 2_000, floor=150)

