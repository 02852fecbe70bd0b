"""One-pass, bounded-memory stratified reservoir sampling over a Parquet snapshot.

The sample stage draws a stratified sample (label x segment columns) from a snapshot that may
be far larger than memory. This module does it in one streaming pass over the snapshot's
record batches, with memory proportional to the *sample*, not to the snapshot:

* :func:`count_strata_parquet` counts the rows per stratum, reading only the strata columns,
  and :func:`allocate` turns those populations into per-stratum quotas (proportional with a
  floor, optional target label shares and a cap);
* :func:`reservoir_sample_parquet` streams a Parquet file and keeps a reservoir per stratum;
  :func:`reservoir_sample_batches` is the same engine over any iterable of record batches, and
  :class:`StratifiedReservoir` is that engine as an object fed one batch at a time.

How the pass works
------------------
Each batch is processed with whole-batch (vectorised) numpy/pyarrow operations:

1. **Stratum codes.** The strata columns are dictionary-encoded (or, for small-range integers,
   offset-coded) and combined into one integer code per row; only the *distinct* combinations
   present in the batch go through Python, to be mapped to a global stratum id.
2. **Which rows enter a reservoir.** Uniform mode uses Algorithm L (Li 1994) per stratum. Its
   replacement schedule - the stream positions at which the reservoir takes a row, and the slot
   the row lands in - does not depend on the data, so it is generated ahead in vectorised
   chunks (geometric skips: O(k log(N/k)) random draws for a stratum of N rows and a quota of
   k) and a batch only has to ask "which scheduled positions fall inside my rows of stratum h?"
   (a ``searchsorted``). Weighted mode uses priority sampling (see below).
3. **Copying the rows.** Rows that enter a reservoir are copied out of the batch at once
   (one ``take`` per batch) into a *candidate buffer*; the reservoir slot remembers where its
   row lives in the buffer and the row's global position in the stream. A row that is later
   evicted becomes garbage in the buffer; when garbage exceeds the sample size the buffer is
   compacted. The buffer therefore never holds more than ``3 x`` the sample size
   (live + garbage below the threshold + one batch's new rows, at most one per slot), and
   :attr:`StratifiedReservoir.peak_buffer_rows` records the peak.
4. **The result.** The live rows come back in their original order (sorted by global
   position) with ``_weight``, the inverse of their inclusion probability.

Weighted mode: priority sampling
--------------------------------
With ``importance_weight="w"`` each stratum keeps the ``k`` rows with the largest priorities
``q_i = w_i / u_i`` (``u_i`` uniform on (0, 1]), i.e. priority sampling (Duffield, Lund &
Thorup 2007). It was chosen over A-ExpJ (Efraimidis & Spirakis 2006) because A-ExpJ draws a
*successive* (PPSWOR) sample whose inclusion probabilities have no closed form, so it gives no
exact Horvitz-Thompson weight; priority sampling does: with ``tau`` the (k+1)-th largest
priority of the stratum, ``_weight_i = max(w_i, tau) / w_i`` makes ``sum(_weight * x)`` over
the sample an unbiased estimate of the stratum's total of *any* column ``x`` (and
``sum(_weight)`` of its row count), with near-optimal variance. The keys are drawn for every
row of a stratum with a non-zero quota - one vectorised draw per stratum and batch, which
costs about what the per-row logarithm of an exponential-jump scheme would, so jumps would
save nothing here - and only rows whose priority beats the stratum's current threshold are
merged into the reservoir.

Reproducibility
---------------
Each stratum draws from its own generator, ``np.random.default_rng`` seeded with
``SeedSequence(seed, spawn_key=<hash of the stratum key>)``, and its replacement schedule is
generated in chunks whose size depends only on its quota. So the same input and seed give the
same sample, a stratum's sample does not depend on the rows of other strata, and in practice
not on the batch size either (only guaranteed for the same batch size).

Examples
--------
>>> import pyarrow as pa
>>> table = pa.table({"label": [0, 1] * 500, "x": range(1000)})
>>> quotas = allocate({(0,): 500, (1,): 500}, size=100)
>>> quotas
{(0,): 50, (1,): 50}
>>> result = reservoir_sample_batches(table.to_batches(max_chunksize=128), ["label"], quotas, seed=7)
>>> result.table.num_rows, result.rows_scanned, result.strata[(1,)].weight
(100, 1000, 10.0)
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.core.columns import WEIGHT

__all__ = [
    "SampleResult",
    "StratifiedReservoir",
    "StratumKey",
    "StratumStats",
    "allocate",
    "count_strata_parquet",
    "reservoir_sample_batches",
    "reservoir_sample_parquet",
]

#: Values of the strata columns for one stratum, in the order of ``strata``, e.g.
#: ``(1, "mobile")``; a null value is ``None``.
StratumKey: TypeAlias = tuple

_NO_EVENT = np.iinfo(np.int64).max
# Algorithm L skips beyond this are clipped; it only matters for streams of more than 2**40
# (about 10**12) rows of one stratum, and keeps the int64 position arithmetic from overflowing.
_MAX_SKIP = float(2**40)
# Combined local codes are counted with a bincount up to this many combinations, beyond it
# (high-cardinality strata) with np.unique.
_MAX_DENSE_CODES = 1 << 22  # (int32 arithmetic is safe below 2**31)


# ---------------------------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------------------------


def allocate(
    counts: Mapping[StratumKey, int],
    size: int,
    *,
    floor: int = 0,
    label_shares: Mapping[object, float] | None = None,
    label_position: int = 0,
    cap: int | None = None,
) -> dict[StratumKey, int]:
    """Rows to draw per stratum.

    By default the sample is spread in proportion to each stratum's population, except that
    every stratum keeps at least ``min(floor, its size)`` rows, so the rare class and small
    segments survive. Formally each stratum gets ``clip(lam * m_h, lo_h, hi_h)`` rows, where
    ``m_h`` is its measure (its population by default), ``lo_h = min(floor, hi_h)``,
    ``hi_h = min(population_h, cap)``, and ``lam`` is chosen so the total is ``size``; the
    real-valued allocation is then rounded by largest remainder, deterministically (ties go to
    the stratum listed first in ``counts``).

    Parameters
    ----------
    counts : mapping of stratum key to population
        Rows per stratum in the population, e.g. ``{(0, "web"): 9_000, (1, "web"): 400}``.
    size : int
        Sample size wanted. The total is ``min(size, rows available)``, or less when
        ``label_shares`` gives the remaining strata no share (see below); never more.
    floor : int, default 0
        Minimum rows per stratum (a stratum smaller than the floor is kept whole). When
        ``size`` cannot cover every floor, strata share ``size`` as equally as possible
        (each gets ``min(floor, size_h, level)`` for the highest affordable level; leftover
        rows go to the largest strata first), so the rare strata are kept whole first.
    label_shares : mapping of label value to share, optional
        Target share of the sample per label value, e.g. ``{1: 0.3}`` for 30 % positives;
        the label is element ``label_position`` of each stratum key. Within a label the share
        is split over its strata in proportion to population. Labels not listed share what
        the listed ones leave (``1 - sum(shares)``) in proportion to their populations.
        Shares are targets: floors, caps and strata too small to fill their share move rows
        to the other strata (in proportion to their measures), so a label with share 0 and
        no floor gets no rows. Shares must be non-negative and sum to at most 1.
    label_position : int, default 0
        Which element of the stratum key is the label.
    cap : int, optional
        Maximum rows per stratum.

    Returns
    -------
    dict of stratum key to rows to draw, in the order of ``counts``.

    Examples
    --------
    >>> allocate({(0,): 9_500, (1,): 500}, 1_000)
    {(0,): 950, (1,): 50}
    >>> allocate({(0,): 9_500, (1,): 500}, 1_000, floor=200)
    {(0,): 800, (1,): 200}
    >>> allocate({(0, "web"): 6_000, (0, "app"): 3_000, (1, "web"): 900, (1, "app"): 100},
    ...          1_000, label_shares={1: 0.5})
    {(0, 'web'): 333, (0, 'app'): 167, (1, 'web'): 450, (1, 'app'): 50}
    """
    size = _non_negative_int(size, "size")
    floor = _non_negative_int(floor, "floor")
    cap = None if cap is None else _non_negative_int(cap, "cap")
    keys = list(counts)
    population = np.array([_non_negative_int(counts[k], f"counts[{k!r}]") for k in keys], dtype=np.int64)
    if not keys:
        return {}
    high = population if cap is None else np.minimum(population, cap)
    low = np.minimum(floor, high)
    if label_shares is None:
        measure = population.astype(np.float64)
    else:
        measure = _label_measure(keys, population, label_shares, label_position)
    target = _bounded_proportional(measure, low, high, size, population)
    return {k: int(n) for k, n in zip(keys, target)}


def _label_measure(keys: list, population: np.ndarray, shares: Mapping[object, float], position: int) -> np.ndarray:
    """Per-stratum measure ``share_label * N_h / N_label``: proportional allocation over these
    measures gives each label its share, split over its strata by population."""
    for label, share in shares.items():
        if not (isinstance(share, (int, float)) and math.isfinite(share) and share >= 0):
            raise ValueError(f"label_shares[{label!r}]: expected a finite share >= 0, got {share!r}")
    listed_total = float(sum(shares.values()))
    if listed_total > 1 + 1e-9:
        raise ValueError(f"label_shares: expected shares summing to at most 1, got {listed_total:g}")
    labels = []
    for key in keys:
        if not isinstance(key, tuple) or not -len(key) <= position < len(key):
            raise ValueError(f"label_position={position}: stratum key {key!r} has no element at that position")
        labels.append(key[position])
    label_rows: dict[object, int] = {}
    for label, rows in zip(labels, population):
        label_rows[label] = label_rows.get(label, 0) + int(rows)
    unlisted_rows = sum(rows for label, rows in label_rows.items() if label not in shares)
    rest = max(0.0, 1.0 - listed_total)
    measure = np.zeros(len(keys))
    for i, (label, rows) in enumerate(zip(labels, population)):
        if rows == 0:
            continue
        if label in shares:
            measure[i] = shares[label] * rows / label_rows[label]
        else:
            measure[i] = rest * rows / unlisted_rows
    return measure


def _bounded_proportional(measure: np.ndarray, low: np.ndarray, high: np.ndarray, size: int,
                          population: np.ndarray) -> np.ndarray:
    if int(high.sum()) <= size:
        return high.copy()
    if int(low.sum()) >= size:
        return _level_fill(low, size, population)
    active = (measure > 0) & (high > 0)
    # Strata with no measure stay at their floor; the others can grow up to their bound.
    total = min(size, int(low.sum() + (high - low)[active].sum()))
    if total <= int(low.sum()):
        return low.copy()
    log_measure = np.log(measure[active])
    low_a, high_a = low[active].astype(np.float64), high[active].astype(np.float64)
    rest = float(low[~active].sum())

    def filled(log_lam: float) -> float:
        return rest + float(np.clip(np.exp(log_lam + log_measure), low_a, high_a).sum())

    # The fill is continuous and non-decreasing in lam. Bisect on log(lam), so measures of any
    # magnitude (a label share of 1e-200) keep full precision: at lam_low the fill is at most
    # sum(low) + lam_low * count * max(measure) = total; at lam_high every stratum is at its bound.
    lo_log = math.log(total - int(low.sum())) - math.log(len(log_measure)) - float(np.max(log_measure))
    hi_log = float(np.max(np.log(high_a) - log_measure))
    lo_log = min(lo_log, hi_log)
    for _ in range(200):
        mid = (lo_log + hi_log) / 2
        if mid in (lo_log, hi_log):
            break
        if filled(mid) < total:
            lo_log = mid
        else:
            hi_log = mid
    exact = low.astype(np.float64)
    exact[active] = np.clip(np.exp(hi_log + log_measure), low_a, high_a)
    return _largest_remainder(exact, low, high, total)


def _largest_remainder(exact: np.ndarray, low: np.ndarray, high: np.ndarray, total: int) -> np.ndarray:
    """Round ``exact`` to integers within ``[low, high]`` summing to ``total``, moving the
    shortfall to the largest fractional parts (a stable sort keeps ties in input order)."""
    base = np.clip(np.floor(exact + 1e-9), low, high).astype(np.int64)
    # Rounded so that bisection noise cannot break a tie that should go to the first stratum.
    fraction = np.round(exact - base, 9)
    short = total - int(base.sum())
    while short > 0:  # at most a couple of rounds: each pass adds one row per eligible stratum
        eligible = np.flatnonzero(base < high)
        if not len(eligible):
            break
        pick = eligible[np.argsort(-fraction[eligible], kind="stable")][:short]
        base[pick] += 1
        fraction[pick] -= 1
        short -= len(pick)
    while short < 0:  # float noise in the bisection can overshoot by a row or two
        eligible = np.flatnonzero(base > low)
        if not len(eligible):
            break
        pick = eligible[np.argsort(fraction[eligible], kind="stable")][:-short]
        base[pick] -= 1
        fraction[pick] += 1
        short += len(pick)
    return base


def _level_fill(low: np.ndarray, size: int, population: np.ndarray) -> np.ndarray:
    """Floors do not fit: give every stratum ``min(low_h, level)`` for the highest affordable
    level, and the leftover rows one each to the largest strata still below their floor."""
    ordered = np.sort(low)
    level, spent = 0, 0
    for i, value in enumerate(ordered):  # over strata, not rows
        step = (int(value) - level) * (len(ordered) - i)
        if spent + step > size:
            level += (size - spent) // (len(ordered) - i)
            break
        spent += step
        level = int(value)
    result = np.minimum(low, level)
    left = size - int(result.sum())
    below = np.flatnonzero(result < low)
    pick = below[np.argsort(-population[below], kind="stable")][:left]
    result[pick] += 1
    return result


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StratumStats:
    """What the pass saw and kept of one stratum.

    Attributes
    ----------
    population : int
        Rows of the stratum in the input.
    sampled : int
        Rows of the stratum in the sample: ``min(quota, population)``.
    weight : float
        Uniform mode: ``population / sampled``, the ``_weight`` of every sampled row of the
        stratum. Weighted mode: the mean ``_weight`` of its sampled rows. ``0.0`` when nothing
        was sampled.
    """

    population: int
    sampled: int
    weight: float


@dataclass(frozen=True)
class SampleResult:
    """A drawn sample.

    Attributes
    ----------
    table : pyarrow.Table
        The sampled rows in their original order, with the input's columns and ``_weight``
        (float64), the inverse inclusion probability: weighted sums over the sample estimate
        population totals.
    strata : dict of stratum key to StratumStats
        Every stratum seen in the input (first appearance order), then strata that had a quota
        but no rows (population 0).
    rows_scanned : int
        Rows read from the input.
    peak_buffer_rows : int
        Most rows the candidate buffer held at once (live + evicted, not yet compacted); at
        most three times the sample size.
    """

    table: pa.Table
    strata: dict[StratumKey, StratumStats]
    rows_scanned: int
    peak_buffer_rows: int = 0


# ---------------------------------------------------------------------------------------------
# Stratum codes
# ---------------------------------------------------------------------------------------------


class _StratumEncoder:
    """Maps every row of a batch to a global stratum id with whole-batch operations.

    Each strata column becomes small local integer codes plus the list of values they stand
    for; the combined local code of a row is a mixed-radix number of its column codes. Only the
    distinct combinations present in the batch (a handful) are looked up in Python.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.keys: list[StratumKey] = []
        self._ids: dict[StratumKey, int] = {}

    def encode(self, batch: pa.RecordBatch, *, codes: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """Stratum id of every row (``None`` when ``codes=False``) and rows per stratum id
        (length ``len(self.keys)``, strata discovered by this batch included)."""
        n = batch.num_rows
        if not self.columns:
            if not self.keys:
                self._ids[()] = 0
                self.keys.append(())
            return (np.zeros(n, dtype=np.uint8) if codes else None), np.array([n], dtype=np.int64)
        locals_, values = zip(*(_local_codes(batch.column(name)) for name in self.columns))
        radices = [len(v) for v in values]
        dense = math.prod(radices)
        # Mixed radix, last column least significant; int32 while the product fits a table.
        combined = locals_[0] if dense <= _MAX_DENSE_CODES else locals_[0].astype(np.int64)
        for local, radix in zip(locals_[1:], radices[1:]):
            combined = combined * radix + local
        if dense <= _MAX_DENSE_CODES:
            combo_rows = np.bincount(combined, minlength=dense)
            present = np.flatnonzero(combo_rows)
            combo_rows = combo_rows[present]
            inverse = None
        else:  # too many combinations for a table: hash them instead
            present, inverse, combo_rows = np.unique(combined.astype(np.int64), return_inverse=True, return_counts=True)
        strata = np.empty(len(present), dtype=np.int64)
        new: list[int] = []
        for slot, code in enumerate(present.tolist()):
            digits, rest = [], code
            for radix in reversed(radices):
                rest, digit = divmod(rest, radix)
                digits.append(digit)
            key = tuple(vals[d] for vals, d in zip(values, reversed(digits)))
            stratum = self._ids.get(key)
            if stratum is None:
                stratum = len(self.keys)
                self._ids[key] = stratum
                self.keys.append(key)
                new.append(slot)
            strata[slot] = stratum
        if len(new) > 1:
            # Strata discovered in the same batch get ids in the order of their first row, so
            # ids (and the order of ``SampleResult.strata``) follow the data, not the encoding.
            first = [int(np.argmax(combined == present[slot] if inverse is None else inverse == slot)) for slot in new]
            ids = strata[new]  # a contiguous range, in encoding order
            keys = [self.keys[i] for i in ids]
            for rank, position in enumerate(np.argsort(first, kind="stable").tolist()):
                strata[new[position]] = ids[rank]
                self.keys[ids[rank]] = keys[position]
                self._ids[keys[position]] = int(ids[rank])
        counts = np.zeros(len(self.keys), dtype=np.int64)
        np.add.at(counts, strata, combo_rows)
        if not codes:
            return None, counts
        narrow = np.uint8 if len(self.keys) <= 1 << 8 else np.uint16 if len(self.keys) <= 1 << 16 else np.int64
        if inverse is not None:
            return strata.astype(narrow)[inverse], counts
        lookup = np.zeros(dense, dtype=narrow)
        lookup[present] = strata
        return np.take(lookup, combined), counts


class _IntRange:
    """The values ``low, low + 1, ...`` of an offset-coded integer column, without a list."""

    def __init__(self, low: int, size: int) -> None:
        self.low, self.size = low, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, code: int) -> int:
        return self.low + code


def _local_codes(array: pa.Array) -> tuple[np.ndarray, Sequence]:
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


def _stratum_rng(seed: int, key: StratumKey) -> np.random.Generator:
    """A generator for one stratum that depends only on the seed and the stratum's values (not
    on which strata exist or in what order they appear)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    words = tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=words))


# ---------------------------------------------------------------------------------------------
# Reservoirs
# ---------------------------------------------------------------------------------------------


class _AlgorithmL:
    """Replacement schedule of one stratum's reservoir of ``k`` rows (Li 1994, Algorithm L).

    Positions count the stratum's rows from 0. Positions ``0..k-1`` fill slots ``0..k-1``;
    then, with ``W`` drawn as ``U**(1/k)``, the next replacement happens after a geometric skip
    ``floor(log U' / log(1 - W)) + 1`` rows, into a uniform slot, and ``W`` shrinks by another
    ``U''**(1/k)``. None of this looks at the data, so the schedule is generated ahead in
    vectorised chunks; a chunk's size depends only on ``k``, which keeps it reproducible.
    """

    def __init__(self, k: int, rng: np.random.Generator) -> None:
        self.k = k
        self._rng = rng
        self._pos = np.arange(k, dtype=np.int64)
        self._slot = np.arange(k, dtype=np.int64)
        self._next = 0
        self._last = k - 1
        # log W for the first replacement after the fill.
        self._log_w = math.log(1.0 - rng.random()) / k if k else 0.0
        self._chunk = int(min(max(k // 4, 256), 1 << 16))

    @property
    def next_position(self) -> int:
        """Stream position of the next scheduled replacement (no more for ``k == 0``)."""
        if self.k == 0:
            return _NO_EVENT
        if self._next >= len(self._pos):
            self._extend()
        return int(self._pos[self._next])

    def until(self, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Scheduled (position, slot) pairs with ``position < end``, consumed."""
        positions, slots = [], []
        while self.k:
            if self._next >= len(self._pos):
                self._extend()
            stop = self._next + int(np.searchsorted(self._pos[self._next:], end))
            positions.append(self._pos[self._next:stop])
            slots.append(self._slot[self._next:stop])
            self._next = stop
            if stop < len(self._pos):
                break
        if len(positions) == 1:
            return positions[0], slots[0]
        if not positions:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(positions), np.concatenate(slots)

    def _extend(self) -> None:
        m, k, rng = self._chunk, self.k, self._rng
        shrink = np.log(1.0 - rng.random(m)) / k  # log of U**(1/k); 1 - U avoids log(0)
        gaps = np.log(1.0 - rng.random(m))
        slots = rng.integers(0, k, m, dtype=np.int64)
        # W used by replacement j is W_0 times the shrink factors of replacements before it.
        log_w = self._log_w + np.concatenate(([0.0], np.cumsum(shrink[:-1])))
        self._log_w = float(log_w[-1] + shrink[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            skip = np.floor(gaps / np.log1p(-np.exp(log_w)))
        skip = np.nan_to_num(skip, nan=0.0, posinf=_MAX_SKIP)
        steps = np.minimum(skip, _MAX_SKIP).astype(np.int64) + 1
        positions = self._last + np.cumsum(steps)
        self._last = int(positions[-1])
        self._pos, self._slot, self._next = positions, slots, 0


class _PriorityReservoir:
    """Priority sampling (Duffield, Lund & Thorup 2007) for one stratum: the ``k`` rows with
    the largest priorities ``w / u``, and ``tau``, the (k+1)-th largest priority seen.

    Members are kept sorted by priority (ascending) with their slot, so merging a batch's
    candidates is an insertion and the evicted rows are a prefix.
    """

    def __init__(self, k: int, rng: np.random.Generator) -> None:
        self.k = k
        self.rng = rng
        self.tau = -math.inf if k else math.inf  # a row enters iff its priority beats tau
        self._priority = np.empty(0)
        self._slot = np.empty(0, dtype=np.int64)
        self._filled = 0

    def merge(self, priority: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Offer candidates (all with priority > tau). Returns (indices into ``priority`` of
        the candidates that became members, the slots they take, the slots whose rows were
        evicted)."""
        order = np.argsort(priority, kind="stable")
        at = np.searchsorted(self._priority, priority[order])
        merged = np.insert(self._priority, at, priority[order])
        # Members carry their slot (>= 0); candidate i carries -1 - i.
        tags = np.insert(self._slot, at, -1 - order)
        drop = len(merged) - self.k
        evicted = np.empty(0, dtype=np.int64)
        if drop > 0:
            self.tau = float(merged[drop - 1])
            evicted = tags[:drop]
            evicted = evicted[evicted >= 0]
            merged, tags = merged[drop:], tags[drop:]
        entering = np.flatnonzero(tags < 0)
        need = len(entering) - len(evicted)
        slots = np.concatenate((evicted, np.arange(self._filled, self._filled + need, dtype=np.int64)))
        self._filled += need
        candidates = -1 - tags[entering]
        tags[entering] = slots
        self._priority, self._slot = merged, tags
        return candidates, slots, evicted


class _CandidateBuffer:
    """Copies of the rows that entered a reservoir, as a list of record batches (chunks).

    A row's buffer index is its position in the concatenation of the chunks. Rows are appended
    in stream order, so buffer order is the original row order. Evicted rows stay until
    :meth:`compact` rewrites the chunks with the live rows only (order kept).
    """

    def __init__(self) -> None:
        self.chunks: list[pa.RecordBatch] = []
        self.rows = 0
        self.peak_rows = 0
        self.compactions = 0

    def append(self, rows: pa.RecordBatch) -> int:
        start = self.rows
        self.chunks.append(rows)
        self.rows += rows.num_rows
        self.peak_rows = max(self.peak_rows, self.rows)
        return start

    def select(self, indices: np.ndarray) -> list[pa.RecordBatch]:
        """The rows at ascending buffer ``indices``, chunk by chunk.

        One ``take`` per chunk on its own rows: a ``take`` across a chunked table would first
        resolve every index to its chunk (about twice as slow), and a chunk that is wholly
        kept is reused without a copy.
        """
        out = []
        ends = np.cumsum([chunk.num_rows for chunk in self.chunks])
        bounds = np.searchsorted(indices, ends)
        begin, start = 0, 0
        for chunk, end, stop in zip(self.chunks, ends.tolist(), bounds.tolist()):
            if stop > begin:
                local = indices[begin:stop] - start
                out.append(chunk if stop - begin == chunk.num_rows else chunk.take(pa.array(local)))
            begin, start = stop, end
        return out

    def compact(self, live: np.ndarray, garbage_left: int) -> tuple[np.ndarray, int]:
        """Drop evicted rows, rewriting the sparsest chunks first, until at most
        ``garbage_left`` evicted rows remain.

        Rewriting only the sparsest chunks copies fewer live rows per evicted row freed than
        rewriting everything: old chunks are mostly evicted, recent ones mostly live.

        Parameters
        ----------
        live : ndarray
            Ascending buffer indices of the live rows.
        garbage_left : int
            How many evicted rows may stay.

        Returns
        -------
        The new buffer index of every row of ``live`` (same order), and how many evicted rows
        remain.
        """
        sizes = np.array([chunk.num_rows for chunk in self.chunks], dtype=np.int64)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        stops = np.searchsorted(live, ends)  # each chunk's live rows are live[begins:stops]
        begins = np.concatenate(([0], stops[:-1]))
        kept = stops - begins
        garbage = sizes - kept
        order = np.argsort(kept / np.maximum(sizes, 1), kind="stable")
        freed = np.cumsum(garbage[order])
        needed = int(np.searchsorted(freed, int(garbage.sum()) - garbage_left)) + 1
        rewrite = np.zeros(len(sizes), dtype=bool)
        rewrite[order[:needed]] = True
        chunks = []
        for c, chunk in enumerate(self.chunks):  # over chunks (at most one per batch)
            if not rewrite[c]:
                chunks.append(chunk)
            elif kept[c] == chunk.num_rows:
                chunks.append(chunk)
                rewrite[c] = False
            elif kept[c]:
                chunks.append(chunk.take(pa.array(live[begins[c]:stops[c]] - starts[c])))
        new_sizes = np.where(rewrite, kept, sizes)
        new_starts = np.cumsum(new_sizes) - new_sizes
        chunk_of = np.repeat(np.arange(len(sizes)), kept)
        local = np.where(rewrite[chunk_of], np.arange(len(live)) - begins[chunk_of], live - starts[chunk_of])
        self.chunks = chunks
        self.rows = int(new_sizes.sum())
        self.compactions += 1
        return new_starts[chunk_of] + local, int(garbage[~rewrite].sum())


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class StratifiedReservoir:
    """Stratified reservoir sample of a stream of record batches, fed one batch at a time.

    :func:`reservoir_sample_batches` and :func:`reservoir_sample_parquet` wrap this class; use
    it directly to sample while doing something else with the same batches, or to watch the
    buffer (:attr:`peak_buffer_rows`, :attr:`buffer_rows`) between batches.

    Parameters
    ----------
    strata : list of str
        Columns whose value combinations define the strata (may be empty: one stratum ``()``).
    quotas : mapping of stratum key to int
        Rows to keep per stratum (see :func:`allocate`). Strata absent from ``quotas`` get 0;
        a quota above a stratum's population keeps the whole stratum. With a single strata
        column a key may be given bare (``1`` for ``(1,)``).
    seed : int
        Non-negative seed; the same input, batches and seed give the same sample.
    importance_weight : str, optional
        Column of positive, finite importance weights: draw within each stratum with
        probability proportional to it (priority sampling) instead of uniformly.
    schema : pyarrow.Schema, optional
        Schema of the emitted rows. Batches may carry dictionary-encoded versions of its
        columns (as ``ParquetFile(read_dictionary=...)`` reads them); sampled rows are cast
        back. Default: the first batch's schema.

    Examples
    --------
    >>> import pyarrow as pa
    >>> sampler = StratifiedReservoir(["g"], {("a",): 2, ("b",): 1}, seed=0)
    >>> for batch in pa.table({"g": list("aabbaab"), "v": range(7)}).to_batches(max_chunksize=3):
    ...     sampler.update(batch)
    >>> result = sampler.result()
    >>> result.table.num_rows, {k: s.population for k, s in result.strata.items()}
    (3, {('a',): 4, ('b',): 3})
    """

    def __init__(self, strata: Sequence[str], quotas: Mapping[Any, int], *, seed: int,
                 importance_weight: str | None = None, schema: pa.Schema | None = None) -> None:
        self.strata = list(strata)
        if len(set(self.strata)) != len(self.strata):
            raise ValueError(f"strata: expected distinct column names, got {self.strata}")
        self.quotas = _normalise_quotas(quotas, len(self.strata))
        self.seed = _non_negative_int(seed, "seed")
        self.importance_weight = importance_weight
        self.schema = schema
        self.rows_scanned = 0
        #: Rows that entered a reservoir so far. Uniform mode: every replacement Algorithm L
        #: scheduled (each costs three random draws), expected ``k * (1 + H_N - H_k)``, about
        #: ``k * (1 + ln(N / k))`` per stratum - not ``N``. Weighted mode: rows that were members
        #: at the end of their batch.
        self.rows_entered = 0
        #: Rows copied into the candidate buffer: ``rows_entered`` less the rows a later row of
        #: the same batch replaced again (those are never copied).
        self.rows_copied = 0
        self._encoder = _StratumEncoder(self.strata)
        self._buffer = _CandidateBuffer()
        # Per stratum (index = stratum id).
        self._quota: list[int] = []
        self._offset: list[int] = []
        self._schedule: list[_AlgorithmL | _PriorityReservoir] = []
        self._seen = np.zeros(0, dtype=np.int64)
        self._next_event = np.zeros(0, dtype=np.int64)
        # Per reservoir slot (all strata's slots side by side).
        self._slots = 0
        self._slot_row = np.zeros(0, dtype=np.int64)  # buffer index, -1 while empty
        self._slot_position = np.zeros(0, dtype=np.int64)  # row number in the whole stream
        self._slot_stratum = np.zeros(0, dtype=np.int64)
        self._slot_importance = np.zeros(0, dtype=np.float64)
        self._slot_latest = np.zeros(0, dtype=np.int64)  # scratch for de-duplicating slots
        self._garbage = 0
        self._plain_schema: pa.Schema | None = None

    # -- public -------------------------------------------------------------------------------

    @property
    def peak_buffer_rows(self) -> int:
        """Most rows the candidate buffer has held at once."""
        return self._buffer.peak_rows

    @property
    def buffer_rows(self) -> int:
        """Rows in the candidate buffer now (live and evicted)."""
        return self._buffer.rows

    @property
    def compactions(self) -> int:
        """How many times the buffer was compacted."""
        return self._buffer.compactions

    @property
    def sample_size(self) -> int:
        """Reservoir slots of the strata seen so far (the sum of their quotas)."""
        return self._slots

    def update(self, batch: pa.RecordBatch) -> None:
        """Consume one batch."""
        if self._plain_schema is None:
            _check_columns(batch.schema, self.strata, self.importance_weight, "the batches")
            self.schema = self.schema or batch.schema
            self._plain_schema = pa.schema([_plain_field(f) for f in self.schema])
        n = batch.num_rows
        if n == 0:
            return
        codes, counts = self._encoder.encode(batch)
        self._grow_strata()
        if self.importance_weight is None:
            self._update_uniform(batch, codes, counts)
        else:
            self._update_weighted(batch, codes, counts)
        self._seen += counts
        self.rows_scanned += n

    def result(self) -> SampleResult:
        """The sample so far, rows in original order, with ``_weight``."""
        rows, live = self._live()
        positions = self._slot_position[live]
        # Buffer order is stream order (rows are appended in order, compaction keeps it).
        assert np.all(positions[1:] > positions[:-1]), "candidate buffer out of stream order"
        stratum = self._slot_stratum[live]
        population = self._seen[stratum].astype(np.float64)
        if self.importance_weight is None:
            sampled = np.minimum(np.asarray(self._quota, dtype=np.int64), self._seen)
            weights = population / sampled[stratum]
        else:
            tau = np.array([s.tau for s in self._schedule], dtype=np.float64)[stratum]
            importance = self._slot_importance[live]
            # Horvitz-Thompson weight of priority sampling; 1 while the stratum fits whole.
            weights = np.where(np.isfinite(tau), np.maximum(importance, tau) / importance, 1.0)
        schema = self._output_schema()
        if self._buffer.chunks:
            table = pa.Table.from_batches(self._buffer.select(rows), schema=self._buffer.chunks[0].schema)
            table = table.cast(schema) if not table.schema.equals(schema) else table
        else:
            table = schema.empty_table()
        table = table.append_column(pa.field(WEIGHT, pa.float64()), pa.array(weights, type=pa.float64()))
        kept = np.bincount(stratum, minlength=len(self._quota))
        weight_sum = np.bincount(stratum, weights=weights, minlength=len(self._quota))
        stats: dict[StratumKey, StratumStats] = {}
        for h, key in enumerate(self._encoder.keys):
            sampled_h, population_h = int(kept[h]), int(self._seen[h])
            if not sampled_h:
                weight_h = 0.0
            elif self.importance_weight is None:
                weight_h = population_h / sampled_h  # exactly the rows' weight
            else:
                weight_h = float(weight_sum[h] / sampled_h)
            stats[key] = StratumStats(population_h, sampled_h, weight_h)
        for key in self.quotas:
            stats.setdefault(key, StratumStats(0, 0, 0.0))
        return SampleResult(table=table, strata=stats, rows_scanned=self.rows_scanned,
                            peak_buffer_rows=self.peak_buffer_rows)

    # -- per batch ----------------------------------------------------------------------------

    def _update_uniform(self, batch: pa.RecordBatch, codes: np.ndarray, counts: np.ndarray) -> None:
        end = self._seen + counts
        due = np.flatnonzero(self._next_event < end)  # strata with a replacement in this batch
        if not len(due):
            return
        groups = _RowGroups(codes, counts, len(due))
        found, slots = [], []
        for h in due.tolist():  # over strata, not rows
            schedule = self._schedule[h]
            positions, slot = schedule.until(int(end[h]))
            # Position p of the stratum's stream is its (p - seen)-th row in this batch.
            found.append(groups.rows(h)[positions - self._seen[h]])
            slots.append(self._offset[h] + slot)
            self._next_event[h] = schedule.next_position
        slot_ids, rows = np.concatenate(slots), np.concatenate(found)
        self.rows_entered += len(rows)
        # A slot hit twice in one batch keeps only the later row: copy just that one. (Later
        # in the stratum is later in the batch; ufunc.at applies every index, in order.)
        latest = self._slot_latest
        np.maximum.at(latest, slot_ids, rows)
        keep = latest[slot_ids] == rows
        latest[slot_ids] = -1
        self._store(batch, slot_ids[keep], rows[keep])

    def _update_weighted(self, batch: pa.RecordBatch, codes: np.ndarray, counts: np.ndarray) -> None:
        importance = _importance(batch, self.importance_weight, self.rows_scanned)
        sampled = [h for h in np.flatnonzero(counts).tolist() if self._schedule[h].k]
        groups = _RowGroups(codes, counts, len(sampled))
        slot_ids, rows, values = [], [], []
        for h in sampled:  # over strata, not rows
            reservoir = self._schedule[h]
            members = groups.rows(h)  # this stratum's rows, in order
            # One key per row from the stratum's own generator, in row order.
            priority = importance[members] / (1.0 - reservoir.rng.random(len(members)))
            candidates = np.flatnonzero(priority > reservoir.tau)
            if not len(candidates):
                continue
            entering, slots, _ = reservoir.merge(priority[candidates])
            chosen = members[candidates[entering]]
            slot_ids.append(self._offset[h] + slots)
            rows.append(chosen)
            values.append(importance[chosen])
        if slot_ids:
            slot_ids_all = np.concatenate(slot_ids)
            self.rows_entered += len(slot_ids_all)
            self._store(batch, slot_ids_all, np.concatenate(rows))
            self._slot_importance[slot_ids_all] = np.concatenate(values)

    def _store(self, batch: pa.RecordBatch, slot_ids: np.ndarray, rows: np.ndarray) -> None:
        """Copy ``rows`` of the batch (distinct) into the buffer as the rows of ``slot_ids``."""
        if not len(rows):
            return
        # Rows in batch order, so the buffer stays in stream order: a scatter over the batch
        # is cheaper than sorting the (row, slot) pairs.
        slot_at = np.full(batch.num_rows, -1, dtype=np.int64)
        slot_at[rows] = slot_ids
        rows = np.flatnonzero(slot_at >= 0)
        slot_ids = slot_at[rows]
        taken = batch.take(pa.array(rows))
        self.rows_copied += len(rows)
        self._garbage += int(np.count_nonzero(self._slot_row[slot_ids] >= 0))
        start = self._buffer.append(taken)
        self._slot_row[slot_ids] = start + np.arange(len(rows), dtype=np.int64)
        self._slot_position[slot_ids] = self.rows_scanned + rows
        if self._garbage > self._slots:
            # Down to half the sample size in garbage, so compactions do not follow each other
            # batch after batch.
            rows_live, live = self._live()
            self._slot_row[live], self._garbage = self._buffer.compact(rows_live, self._slots // 2)

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """Buffer indices of the live rows, ascending, and their slots."""
        slot_of = np.full(self._buffer.rows, -1, dtype=np.int64)
        filled = np.flatnonzero(self._slot_row >= 0)
        slot_of[self._slot_row[filled]] = filled
        rows = np.flatnonzero(slot_of >= 0)
        return rows, slot_of[rows]

    # -- bookkeeping --------------------------------------------------------------------------

    def _grow_strata(self) -> None:
        """Set up reservoirs for strata the encoder has just discovered."""
        new_keys = self._encoder.keys[len(self._quota):]
        if not new_keys:
            return
        weighted = self.importance_weight is not None
        ids, next_events = [], []
        for key in new_keys:
            k = self.quotas.get(key, 0)
            rng = _stratum_rng(self.seed, key)
            schedule = _PriorityReservoir(k, rng) if weighted else _AlgorithmL(k, rng)
            ids.append(np.full(k, len(self._quota), dtype=np.int64))
            self._quota.append(k)
            self._offset.append(self._slots)
            self._schedule.append(schedule)
            next_events.append(_NO_EVENT if weighted else schedule.next_position)
            self._slots += k
        added = self._slots - len(self._slot_row)
        self._seen = np.concatenate((self._seen, np.zeros(len(new_keys), dtype=np.int64)))
        self._next_event = np.concatenate((self._next_event, np.array(next_events, dtype=np.int64)))
        self._slot_row = np.concatenate((self._slot_row, np.full(added, -1, dtype=np.int64)))
        self._slot_position = np.concatenate((self._slot_position, np.zeros(added, dtype=np.int64)))
        self._slot_stratum = np.concatenate((self._slot_stratum, *ids))
        self._slot_importance = np.concatenate((self._slot_importance, np.zeros(added)))
        self._slot_latest = np.concatenate((self._slot_latest, np.full(added, -1, dtype=np.int64)))

    def _output_schema(self) -> pa.Schema:
        if self._plain_schema is not None:
            return self._plain_schema
        if self.schema is None:  # nothing was fed: at least the strata columns
            return pa.schema([pa.field(name, pa.null()) for name in self.strata])
        return pa.schema([_plain_field(f) for f in self.schema])


def _plain_field(field: pa.Field) -> pa.Field:
    """The field with dictionary encoding undone (the sample keeps the snapshot's types)."""
    return field.with_type(field.type.value_type) if pa.types.is_dictionary(field.type) else field


class _RowGroups:
    """The rows of each stratum in a batch (ascending), located once per batch.

    For a few strata, one comparison pass per stratum wanted is cheapest; for many, one stable
    sort of the codes (a radix sort for 8/16-bit codes) serves them all.
    """

    _FEW = 32

    def __init__(self, codes: np.ndarray, counts: np.ndarray, wanted: int) -> None:
        self._codes = codes
        self._order = None
        if wanted > self._FEW:
            self._order = np.argsort(codes, kind="stable")
            self._starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            self._counts = counts

    def rows(self, stratum: int) -> np.ndarray:
        if self._order is None:
            return np.flatnonzero(self._codes == stratum)
        start = self._starts[stratum]
        return self._order[start:start + self._counts[stratum]]


def _importance(batch: pa.RecordBatch, name: str, offset: int) -> np.ndarray:
    column = batch.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise ValueError(f"importance weight column {name!r}: expected numbers, got type {column.type}")
    if column.null_count:
        first = offset + int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(f"importance weight column {name!r}: expected positive finite weights, "
                         f"got {column.null_count} nulls (first at row {first})")
    values = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"importance weight column {name!r}: expected positive finite weights, got "
                         f"{int(bad.sum())} bad values (first {values[first]!r} at row {offset + first})")
    return values


def _normalise_quotas(quotas: Mapping[Any, int], width: int) -> dict[StratumKey, int]:
    normalised: dict[StratumKey, int] = {}
    for key, quota in quotas.items():
        tuple_key = key if isinstance(key, tuple) else (key,)
        if len(tuple_key) != width:
            raise ValueError(f"quotas: key {key!r} has {len(tuple_key)} values, expected one per strata column ({width})")
        normalised[tuple_key] = _non_negative_int(quota, f"quotas[{key!r}]")
    return normalised


def _check_columns(schema: pa.Schema, strata: Sequence[str], importance_weight: str | None, source: str) -> None:
    names = set(schema.names)
    for name in strata:
        if name not in names:
            raise ValueError(f"strata column {name!r} is not in {source} (columns: {', '.join(schema.names)})")
    if importance_weight is not None and importance_weight not in names:
        raise ValueError(f"importance weight column {importance_weight!r} is not in {source} "
                         f"(columns: {', '.join(schema.names)})")
    if WEIGHT in names:
        raise ValueError(f"column {WEIGHT!r} is already in {source}; the sample adds it (rename the input column)")


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def reservoir_sample_batches(
    batches: Iterable[pa.RecordBatch],
    strata: list[str],
    quotas: Mapping[StratumKey, int],
    *,
    seed: int,
    importance_weight: str | None = None,
    batch_rows: int | None = None,
    columns: list[str] | None = None,
    schema: pa.Schema | None = None,
) -> SampleResult:
    """Stratified reservoir sample of a stream of record batches, in one pass.

    Parameters
    ----------
    batches : iterable of pyarrow.RecordBatch
        The population, in order; read once.
    strata, quotas, seed, importance_weight
        See :class:`StratifiedReservoir`.
    batch_rows : int, optional
        Slice larger batches (zero-copy) into pieces of at most this many rows, bounding the
        per-batch scratch memory (codes, sort order). Default: use the batches as they come.
    columns : list of str, optional
        Columns to keep in the sample; the strata and importance columns are always kept.
        Default: all.
    schema : pyarrow.Schema, optional
        Output schema, see :class:`StratifiedReservoir`; also gives the empty result its
        columns when there are no batches.

    Returns
    -------
    SampleResult

    Raises
    ------
    ValueError
        A strata, importance or requested column is missing (the message names it), an
        importance weight is not positive and finite, or a quota is not a non-negative int.
    """
    keep = None if columns is None else _keep_columns(columns, strata, importance_weight)
    if schema is not None:
        _check_columns(schema, strata, importance_weight, "the schema")
        if keep is not None:
            schema = pa.schema([schema.field(name) for name in schema.names if name in keep])
    sampler = StratifiedReservoir(strata, quotas, seed=seed, importance_weight=importance_weight, schema=schema)
    for batch in _sliced(batches, batch_rows):
        if keep is not None:
            _check_requested(batch.schema, keep)
            batch = batch.select([name for name in batch.schema.names if name in keep])
        sampler.update(batch)
    return sampler.result()


def reservoir_sample_parquet(
    path: str | Path,
    strata: list[str],
    quotas: Mapping[StratumKey, int],
    *,
    seed: int,
    importance_weight: str | None = None,
    batch_rows: int = 131_072,
    columns: list[str] | None = None,
) -> SampleResult:
    """Stratified reservoir sample of a Parquet file, in one streaming pass.

    Memory is proportional to the sample (plus one row group being decoded), not to the file.
    String strata columns are read dictionary-encoded (Parquet already stores them that way),
    which saves hashing every value; the sample gets the file's own types back.

    Parameters
    ----------
    path : str or Path
        The Parquet file.
    strata, quotas, seed, importance_weight
        See :class:`StratifiedReservoir` (quotas e.g. from :func:`allocate` over the strata's
        counts).
    batch_rows : int, default 131_072
        Rows per record batch read. The same ``batch_rows`` and seed always give the same
        sample.
    columns : list of str, optional
        Columns to read and keep (plus the strata and importance columns). Default: all.

    Returns
    -------
    SampleResult

    Raises
    ------
    ValueError
        A strata, importance or requested column is not in the file (the message names it and
        the file), or an importance weight is not positive and finite.

    Examples
    --------
    >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> path = tempfile.mkdtemp() + "/snapshot.parquet"
    >>> pq.write_table(pa.table({"y": [0, 0, 0, 1] * 250, "x": range(1000)}), path)
    >>> result = reservoir_sample_parquet(path, ["y"], {(0,): 30, (1,): 10}, seed=1)
    >>> result.table.column_names, result.strata[(0,)]
    (['y', 'x', '_weight'], StratumStats(population=750, sampled=30, weight=25.0))
    """
    schema = pq.read_schema(path)
    _check_columns(schema, strata, importance_weight, f"Parquet file {str(path)!r}")
    keep = list(schema.names) if columns is None else _keep_columns(columns, strata, importance_weight)
    _check_requested(schema, keep, f"Parquet file {str(path)!r}")
    read = [name for name in schema.names if name in set(keep)]
    file = _open(path, _string_columns(schema, strata))
    with _read_ahead(file.iter_batches(batch_size=batch_rows, columns=read)) as batches:
        return reservoir_sample_batches(batches, strata, quotas, seed=seed, importance_weight=importance_weight,
                                        schema=pa.schema([schema.field(name) for name in read]))


def count_strata_parquet(path: str | Path, strata: list[str], *, batch_rows: int = 131_072) -> dict[StratumKey, int]:
    """Rows per stratum of a Parquet file, in one streaming pass over the strata columns only.

    Feed the result to :func:`allocate` to get the quotas for :func:`reservoir_sample_parquet`;
    the keys are built exactly as the sampler builds them, so they match.

    Examples
    --------
    >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> path = tempfile.mkdtemp() + "/snapshot.parquet"
    >>> pq.write_table(pa.table({"y": [0, 0, 0, 1] * 250, "seg": ["a", "b"] * 500}), path)
    >>> count_strata_parquet(path, ["y", "seg"])
    {(0, 'a'): 500, (0, 'b'): 250, (1, 'b'): 250}
    """
    schema = pq.read_schema(path)
    _check_columns(schema, strata, None, f"Parquet file {str(path)!r}")
    file = _open(path, _string_columns(schema, strata))
    if not strata:
        return {(): file.metadata.num_rows} if file.metadata.num_rows else {}
    encoder = _StratumEncoder(strata)
    counts = np.zeros(0, dtype=np.int64)
    with _read_ahead(file.iter_batches(batch_size=batch_rows, columns=list(strata))) as batches:
        for batch in batches:
            if not batch.num_rows:
                continue
            found = encoder.encode(batch, codes=False)[1]
            counts = np.concatenate((counts, np.zeros(len(found) - len(counts), dtype=np.int64))) + found
    return {key: int(n) for key, n in zip(encoder.keys, counts)}


def _open(path: str | Path, dictionary_columns: list[str]) -> pq.ParquetFile:
    """A Parquet reader whose memory does not grow with the file.

    ``pre_buffer=False``: with pyarrow's default (True) ``iter_batches`` pre-reads the column
    chunks of every row group it will visit - a 1.6 GiB file costs 1.6 GiB of memory - while a
    buffered stream reads each column chunk as it is decoded, and is no slower locally.
    """
    return pq.ParquetFile(path, read_dictionary=dictionary_columns, pre_buffer=False, buffer_size=1 << 20)


class _read_ahead:  # noqa: N801 (used as a context manager, like open())
    """Decode the next batches on a background thread while the caller works on this one.

    Parquet decoding and the sampler's numpy/pyarrow work both release the GIL, so on a
    machine with spare cores they overlap (about a fifth off the wall time on 2 cores). At
    most ``depth`` decoded batches wait, so memory stays bounded. Leaving the ``with`` block
    early (an error in the sampler) stops the thread; an error while reading is re-raised in
    the caller.
    """

    _END = object()

    def __init__(self, batches: Iterable[pa.RecordBatch], depth: int = 2) -> None:
        self._source = batches
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="refit-reservoir-read-ahead", daemon=True)

    def __enter__(self) -> Iterator[pa.RecordBatch]:
        self._thread.start()
        return self._batches()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _run(self) -> None:
        try:
            for batch in self._source:
                if not self._put(batch):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the caller's thread
            self._put(_ReadError(exc))

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, _ReadError):
                raise item.error
            yield item


@dataclass(frozen=True)
class _ReadError:
    error: BaseException


def _string_columns(schema: pa.Schema, names: Sequence[str]) -> list[str]:
    """String columns among ``names``: read them dictionary-encoded (Parquet stores them so)."""
    return [name for name in names if pa.types.is_string(schema.field(name).type)
            or pa.types.is_large_string(schema.field(name).type)]


def _keep_columns(columns: Sequence[str], strata: Sequence[str], importance_weight: str | None) -> list[str]:
    extra = [*strata, *([importance_weight] if importance_weight else [])]
    return [*columns, *[name for name in extra if name not in columns]]


def _check_requested(schema: pa.Schema, keep: Sequence[str], source: str = "the batches") -> None:
    names = set(schema.names)
    for name in keep:
        if name not in names:
            raise ValueError(f"column {name!r} (in columns=) is not in {source} (columns: {', '.join(schema.names)})")


def _sliced(batches: Iterable[pa.RecordBatch], batch_rows: int | None) -> Iterator[pa.RecordBatch]:
    if batch_rows is not None and batch_rows < 1:
        raise ValueError(f"batch_rows: expected a positive integer, got {batch_rows!r}")
    for batch in batches:
        if batch_rows is None or batch.num_rows <= batch_rows:
            yield batch
        else:
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)
