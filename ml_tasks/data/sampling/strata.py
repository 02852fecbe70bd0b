"""Which stratum every row of a batch belongs to, found with whole-batch operations.

A stratum is one combination of values of the strata columns (label x segments), named by its
:data:`StratumKey`. The sampler meets millions of rows and a handful of strata, so nothing here
goes through Python per row:

1. Each strata column becomes small local integer codes plus the list of values they stand
   for: Parquet's own dictionary for dictionary-encoded strings, an offset for small-range
   integers (labels, flags), a dictionary encoding otherwise.
2. The local codes combine into one integer per row, a mixed-radix number of its column codes.
3. Only the *distinct* combinations present in the batch go through Python, to be mapped to a
   global stratum id (in order of first appearance, so ids follow the data).

:class:`RowGroups` then finds each stratum's rows in a batch, and :func:`stratum_rng` gives
each stratum its own random generator.

Reproducibility
---------------
Each stratum draws from its own generator, ``np.random.default_rng`` seeded with
``SeedSequence(seed, spawn_key=<hash of the stratum key>)``. So the same input and seed give
the same sample, and a stratum's sample does not depend on the rows of other strata (nor on
which strata exist or in what order they appear).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["RowGroups", "StratumEncoder", "StratumKey", "stratum_rng"]

#: Values of the strata columns for one stratum, in the order of ``strata``, e.g.
#: ``(1, "mobile")``; a null value is ``None``.
StratumKey: TypeAlias = tuple[Any, ...]

# Combined local codes are counted with a bincount up to this many combinations, beyond it
# (high-cardinality strata) with np.unique.
_MAX_DENSE_CODES = 1 << 22  # (int32 arithmetic is safe below 2**31)


class _Levels(Protocol):
    """The values a column's local codes stand for: ``levels[code]`` is the value of ``code``."""

    def __len__(self) -> int: ...

    def __getitem__(self, code: int) -> Any: ...


@dataclass(frozen=True)
class _Located:
    """Where a batch's rows fall: each row's combination code, and each combination's stratum."""

    combined: np.ndarray  # combination code of every row
    present: np.ndarray  # the codes that occur, ascending
    inverse: np.ndarray | None  # every row's index into ``present``; None on the bincount path
    strata: np.ndarray  # global stratum id of each present code
    dense: int  # how many codes are possible (the bincount path's table size)
    counts: np.ndarray  # rows per global stratum id

    def row_ids(self, strata_known: int) -> np.ndarray:
        """Stratum id of every row, in the narrowest integer type that holds ``strata_known`` ids."""
        narrow = np.uint8 if strata_known <= 1 << 8 else np.uint16 if strata_known <= 1 << 16 else np.int64
        if self.inverse is not None:
            return self.strata.astype(narrow)[self.inverse]
        lookup = np.zeros(self.dense, dtype=narrow)
        lookup[self.present] = self.strata
        return np.take(lookup, self.combined)


class StratumEncoder:
    """Maps every row of a batch to a global stratum id with whole-batch operations.

    Each strata column becomes small local integer codes plus the list of values they stand
    for; the combined local code of a row is a mixed-radix number of its column codes. Only the
    distinct combinations present in the batch (a handful) are looked up in Python.

    Attributes
    ----------
    keys : list of StratumKey
        Every stratum met so far; a stratum's id is its index here.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.keys: list[StratumKey] = []
        self._ids: dict[StratumKey, int] = {}

    def count(self, batch: pa.RecordBatch) -> np.ndarray:
        """Rows per stratum id (length ``len(self.keys)``, strata discovered by this batch included)."""
        if not self.columns:
            return self._whole(batch)
        return self._locate(batch).counts

    def encode(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """Stratum id of every row, and rows per stratum id (as :meth:`count`)."""
        if not self.columns:
            return np.zeros(batch.num_rows, dtype=np.uint8), self._whole(batch)
        located = self._locate(batch)
        return located.row_ids(len(self.keys)), located.counts

    def _whole(self, batch: pa.RecordBatch) -> np.ndarray:
        """No strata columns: every row is in the one stratum ``()``."""
        if not self.keys:
            self._ids[()] = 0
            self.keys.append(())
        return np.array([batch.num_rows], dtype=np.int64)

    def _locate(self, batch: pa.RecordBatch) -> _Located:
        locals_, values = zip(*(_local_codes(batch.column(name)) for name in self.columns), strict=True)
        radices = [len(v) for v in values]
        dense = math.prod(radices)
        # Mixed radix, last column least significant; int32 while the product fits a table.
        combined = locals_[0] if dense <= _MAX_DENSE_CODES else locals_[0].astype(np.int64)
        for local, radix in zip(locals_[1:], radices[1:], strict=True):
            combined = combined * radix + local
        inverse: np.ndarray | None
        if dense <= _MAX_DENSE_CODES:
            combo_rows = np.bincount(combined, minlength=dense)
            present = np.flatnonzero(combo_rows)
            combo_rows = combo_rows[present]
            inverse = None
        else:  # too many combinations for a table: hash them instead
            present, inverse, combo_rows = np.unique(combined.astype(np.int64), return_inverse=True, return_counts=True)
        strata, new = self._stratum_ids(present, values, radices)
        if len(new) > 1:
            self._order_new_strata(strata, new, present, combined, inverse)
        counts = np.zeros(len(self.keys), dtype=np.int64)
        np.add.at(counts, strata, combo_rows)
        return _Located(combined, present, inverse, strata, dense, counts)

    def _stratum_ids(self, present: np.ndarray, values: Sequence[_Levels],
                     radices: list[int]) -> tuple[np.ndarray, list[int]]:
        """The global id of each present combination code (new strata get the next ids), and the
        positions in ``present`` of the strata this batch discovered."""
        strata = np.empty(len(present), dtype=np.int64)
        new: list[int] = []
        for slot, code in enumerate(present.tolist()):
            digits, rest = [], code
            for radix in reversed(radices):
                rest, digit = divmod(rest, radix)
                digits.append(digit)
            key = tuple(vals[d] for vals, d in zip(values, reversed(digits), strict=True))
            stratum = self._ids.get(key)
            if stratum is None:
                stratum = len(self.keys)
                self._ids[key] = stratum
                self.keys.append(key)
                new.append(slot)
            strata[slot] = stratum
        return strata, new

    def _order_new_strata(self, strata: np.ndarray, new: list[int], present: np.ndarray, combined: np.ndarray,
                          inverse: np.ndarray | None) -> None:
        """Strata discovered in the same batch get ids in the order of their first row, so ids
        (and the order of ``SampleResult.strata``) follow the data, not the encoding."""
        first = [int(np.argmax(combined == present[slot] if inverse is None else inverse == slot)) for slot in new]
        ids = strata[new]  # a contiguous range, in encoding order
        keys = [self.keys[i] for i in ids]
        for rank, position in enumerate(np.argsort(first, kind="stable").tolist()):
            strata[new[position]] = ids[rank]
            self.keys[ids[rank]] = keys[position]
            self._ids[keys[position]] = int(ids[rank])


class _IntRange:
    """The values ``low, low + 1, ...`` of an offset-coded integer column, without a list."""

    def __init__(self, low: int, size: int) -> None:
        self.low, self.size = low, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, code: int) -> int:
        return self.low + code


def _local_codes(array: pa.Array) -> tuple[np.ndarray, _Levels]:
    """Small integer codes for one column of a batch and the values they stand for (nulls:
    ``None``)."""
    if pa.types.is_dictionary(array.type):
        # As read with ParquetFile(read_dictionary=...): the Parquet dictionary is the encoding.
        values = array.dictionary.to_pylist()
        indices = array.indices
        if indices.null_count:
            indices = indices.fill_null(len(values))
            values = [*values, None]
        return indices.to_numpy().astype(np.int32, copy=False), values
    kind = array.type
    if (pa.types.is_integer(kind) or pa.types.is_boolean(kind)) and array.null_count == 0 and len(array):
        # Small-range integers (labels, flags, codes): an offset is much cheaper than hashing.
        raw = array.to_numpy(zero_copy_only=False)
        if raw.dtype == np.bool_:
            return raw.astype(np.int32), [False, True]
        low, high = int(raw.min()), int(raw.max())
        if high - low < 1 << 16:
            local = raw.astype(np.int32) if low == 0 else np.subtract(raw, low, dtype=np.int32, casting="unsafe")
            return local, _IntRange(low, high - low + 1)
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    return encoded.indices.to_numpy().astype(np.int32, copy=False), encoded.dictionary.to_pylist()


def stratum_rng(seed: int, key: StratumKey) -> np.random.Generator:
    """A generator for one stratum that depends only on the seed and the stratum's values (not
    on which strata exist or in what order they appear)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    words = tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=words))


class RowGroups:
    """The rows of each stratum in a batch (ascending), located once per batch.

    For a few strata, one comparison pass per stratum wanted is cheapest; for many, one stable
    sort of the codes (a radix sort for 8/16-bit codes) serves them all.
    """

    _FEW = 32

    def __init__(self, codes: np.ndarray, counts: np.ndarray, wanted: int) -> None:
        self._codes = codes
        self._order: np.ndarray | None = None
        if wanted > self._FEW:
            self._order = np.argsort(codes, kind="stable")
            self._starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            self._counts = counts

    def rows(self, stratum: int) -> np.ndarray:
        """Positions in the batch of the rows of ``stratum``, ascending."""
        if self._order is None:
            return np.flatnonzero(self._codes == stratum)
        start = self._starts[stratum]
        return self._order[start:start + self._counts[stratum]]
