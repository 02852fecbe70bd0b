"""How many rows each stratum of a sample gets: proportional, with a floor, label shares and a cap.

The sample stage counts the rows of every stratum (label x segment columns) and asks
:func:`allocate` for per-stratum quotas, which the reservoirs then fill
(:mod:`ml_tasks.data.sampling.engine`). The allocation is a small closed problem over the
strata, not the rows: each stratum gets ``clip(lam * m_h, lo_h, hi_h)`` rows for the one
``lam`` that makes the total the sample size, found by bisection, then rounded by largest
remainder so the quotas are integers that add up exactly and the same counts always give the
same quotas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ml_tasks.data.sampling.strata import StratumKey

__all__ = ["allocate", "non_negative_int"]


def allocate(
    counts: Mapping[StratumKey, int],
    size: int,
    *,
    floor: int = 0,
    label_shares: Mapping[Any, float] | None = None,
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
    size = non_negative_int(size, "size")
    floor = non_negative_int(floor, "floor")
    cap = None if cap is None else non_negative_int(cap, "cap")
    keys = list(counts)
    population = np.array([non_negative_int(counts[k], f"counts[{k!r}]") for k in keys], dtype=np.int64)
    if not keys:
        return {}
    high = population if cap is None else np.minimum(population, cap)
    low = np.minimum(floor, high)
    if label_shares is None:
        measure = population.astype(np.float64)
    else:
        measure = _label_measure(keys, population, label_shares, label_position)
    target = _bounded_proportional(measure, low, high, size, population)
    return {k: int(n) for k, n in zip(keys, target, strict=True)}


def _label_measure(keys: list[StratumKey], population: np.ndarray, shares: Mapping[Any, float],
                   position: int) -> np.ndarray:
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
    for label, rows in zip(labels, population, strict=True):
        label_rows[label] = label_rows.get(label, 0) + int(rows)
    unlisted_rows = sum(rows for label, rows in label_rows.items() if label not in shares)
    rest = max(0.0, 1.0 - listed_total)
    measure = np.zeros(len(keys))
    for i, (label, rows) in enumerate(zip(labels, population, strict=True)):
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


def non_negative_int(value: Any, name: str) -> int:
    """``value`` as an int when it is a non-negative integer (not a bool); else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return int(value)

