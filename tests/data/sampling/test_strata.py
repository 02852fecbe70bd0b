"""Stratum codes: every row gets the id of its own values' stratum, ids follow the data, and each
stratum's random generator depends only on the seed and its values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.data.sampling.strata import StratumEncoder, stratum_rng


@pytest.mark.parametrize("levels", [50, 3_000], ids=["table of combinations", "hashed combinations"])
def test_every_row_gets_the_id_of_its_values_and_counts_add_up(levels):
    """50 x 50 combinations are counted in a table; 3,000 x 3,000 (9M) are too many for one and
    are hashed instead. Both give each row the id of its own key, across batches."""
    rng = np.random.default_rng(3)
    rows = 20_000
    table = pa.table({"a": rng.integers(0, levels, rows), "b": rng.integers(0, levels, rows).astype(np.int16),
                      "s": pa.array(rng.choice(["x", "y", None], rows))})
    encoder = StratumEncoder(["a", "b", "s"])
    totals: dict[tuple, int] = {}
    for batch in table.to_batches(max_chunksize=6_000):
        codes, counts = encoder.encode(batch)
        keys = list(zip(*(batch.column(name).to_pylist() for name in ("a", "b", "s")), strict=True))
        assert [encoder.keys[code] for code in codes.tolist()] == keys
        assert counts.tolist() == np.bincount(codes, minlength=len(encoder.keys)).tolist()
        assert encoder.count(batch).tolist() == counts.tolist()  # counting again finds no new strata
        for key in keys:
            totals[key] = totals.get(key, 0) + 1
    assert sum(totals.values()) == rows and set(totals) == set(encoder.keys)


def test_strata_get_ids_in_the_order_their_first_row_appears():
    encoder = StratumEncoder(["g"])
    encoder.encode(pa.record_batch({"g": ["c", "a", "c", "b"]}))
    encoder.encode(pa.record_batch({"g": ["a", "d", "b"]}))
    assert encoder.keys == [("c",), ("a",), ("b",), ("d",)]


def test_without_strata_columns_every_row_is_in_one_stratum():
    encoder = StratumEncoder([])
    codes, counts = encoder.encode(pa.record_batch({"x": [1.0, 2.0, 3.0]}))
    assert codes.tolist() == [0, 0, 0] and counts.tolist() == [3] and encoder.keys == [()]


def test_a_stratums_generator_depends_only_on_the_seed_and_its_key():
    draw = [stratum_rng(7, (1, "web")).random(3) for _ in range(2)]
    assert np.array_equal(draw[0], draw[1])
    assert not np.array_equal(draw[0], stratum_rng(8, (1, "web")).random(3))
    assert not np.array_equal(draw[0], stratum_rng(7, (0, "web")).random(3))
