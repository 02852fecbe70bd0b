"""A known synthetic population for the sampler's statistical tests, and numpy bookkeeping over it.

200k rows, a ~5 % label, a segment with a rare level ("mobile"), a numeric column ``x`` and an
importance weight ``w`` of 1 or 3. Tolerances in the tests are z-scores on standard errors
(computed from the population or from the seeds), never bare magic numbers; with z = 5 a correct
sampler fails one of these checks about once in a million runs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ml_tasks.data.sampling import SampleResult, reservoir_sample_batches

Z = 5.0  # two-sided z bound: a false alarm per check has probability ~6e-7
N = 200_000
STRATA = ["label", "segment"]
SEGMENTS = np.array(["web", "branch", "mobile"])
BATCH = 7_919  # odd, so batch boundaries fall at different places in every stratum


def make_population(rows: int = N, seed: int = 20_240_601) -> pa.Table:
    rng = np.random.default_rng(seed)
    segment = rng.choice(3, rows, p=[0.62, 0.35, 0.03])  # "mobile" is the rare level
    label = (rng.random(rows) < np.array([0.04, 0.05, 0.12])[segment]).astype(np.int64)
    x = rng.gamma(2.0, 50.0, rows) + 40.0 * label + 25.0 * (segment == 2)
    importance = rng.choice([1.0, 3.0], rows)
    return pa.table({
        "row": np.arange(rows, dtype=np.int64),
        "label": label,
        "segment": pa.array(SEGMENTS[segment]),
        "x": x,
        "w": importance,
    })


def stratum_counts(table: pa.Table) -> dict[tuple, int]:
    grouped = table.group_by(STRATA).aggregate([("row", "count")])
    columns = (grouped.column(c).to_pylist() for c in [*STRATA, "row_count"])
    return {(lab, seg): n for lab, seg, n in zip(*columns, strict=True)}


def stratum_of(table: pa.Table) -> tuple[np.ndarray, list[tuple]]:
    """Stratum index per row and the keys, for numpy bookkeeping in the tests."""
    keys = sorted(stratum_counts(table))
    index = {k: i for i, k in enumerate(keys)}
    pairs = zip(table.column("label").to_pylist(), table.column("segment").to_pylist(), strict=True)
    return np.array([index[p] for p in pairs]), keys


def pc_equal(table: pa.Table, key: tuple) -> np.ndarray:
    return (np.asarray(table.column("label").to_numpy()) == key[0]) & (
        np.asarray(table.column("segment").to_pylist(), dtype=object) == key[1])


def sample_many(population: pa.Table, quotas: dict[tuple, int], seeds: int,
                importance_weight: str | None = None) -> tuple[np.ndarray, list[SampleResult]]:
    """The sampler over seeds ``0 .. seeds - 1`` (batches of BATCH rows): how often each row was
    included, and every run's result."""
    batches = population.to_batches(max_chunksize=BATCH)
    included = np.zeros(population.num_rows, dtype=np.int64)
    results = []
    for seed in range(seeds):
        result = reservoir_sample_batches(batches, STRATA, quotas, seed=seed, importance_weight=importance_weight)
        included[result.table.column("row").to_numpy()] += 1
        results.append(result)
    return included, results
