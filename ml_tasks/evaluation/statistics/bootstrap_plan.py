"""The bootstrap's arithmetic: every metric of 64 replicates at once, from one block of counts.

:func:`~ml_tasks.evaluation.statistics.bootstrap.paired_bootstrap_many` draws Poisson(1) counts
as an ``(n, R)`` block (R = 64 replicates, rows in the challenger's score order) and needs, for
each replicate, each metric of both models under the weights ``weights * counts``. Recomputing
each metric per replicate would cost a sort per replicate; instead, everything that does not
depend on the replicate is planned once (:class:`BootstrapPlan`), and each metric becomes a
*linear* function of the counts followed by a cheap finishing step:

* log loss and Brier: a dense product ``(w * row loss)' @ counts`` divided by ``w' @ counts``;
* PR AUC and ROC AUC: per group of tied scores holding positives ("P-group"), the weight scored
  at or above it and its own positive (and tied negative) weight, which one sparse matrix per
  tile of :data:`TILE` rows maps from the counts, then cumulative sums over the groups
  (:meth:`ModelPlan.finish`);
* ECE: ``sum count * w * (y - p)`` per equal-mass bin, the bins cut once on the full sample.

Why tiles: a tile's counts as float64 (4,096 rows x 64 replicates x 8 bytes = 2 MiB) stay in
cache while both the dense and the sparse products read them. Why the model's own order: the
sums a ranking metric needs are over runs of consecutive rows in that model's score order, so
each tile touches a short range of segments; the reference model's rows are gathered into its
own order tile by tile (:attr:`BootstrapPlan.b_at`).

Traps: each replicate's values must equal scikit-learn's metric under that replicate's weights
(the tests check every metric on replicates of both chunks to 1e-12; ``bench/bench_gate.py``
finds differences near 1e-15), so ties must stay whole groups, average precision must treat a
leading run of zero-weight groups as 0/0 = 0, and the buffers reused between chunks must be
zeroed unless the tiles overwrite every segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from ml_tasks.evaluation.metrics import equal_mass_bins, row_losses, tie_groups

#: Rows per tile: a tile of counts as float64 (TILE x CHUNK x 8 bytes = 2 MiB) stays in cache.
TILE = 4096

#: Per-segment sums of one model for R replicates: ``{family name: (segments, R)}``.
Sums = dict[str, npt.NDArray[np.float64]]
#: Per metric, its values for model a and for model b (one per replicate).
PairedValues = dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]


def cumsum_rows(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Cumulative sum along axis 0 of a C-ordered ``(K, R)`` array, in place.

    ``np.cumsum(x, axis=0)`` walks each column separately (one dependent add per element, and
    strided). A blocked scan instead adds whole rows, vectorised over the R replicates:
    cumulate within blocks of 32 rows (a cache-sized piece of blocks at a time), scan the block
    totals recursively, add each block's offset.
    """
    k = len(x)
    block, piece = 32, 64
    if k <= 2 * block:
        for i in range(1, k):
            x[i] += x[i - 1]
        return x
    full = k // block * block
    view = x[:full].reshape(k // block, block, x.shape[1])
    for start in range(0, len(view), piece):
        part = view[start:start + piece]
        for i in range(1, block):
            part[:, i] += part[:, i - 1]
    totals = cumsum_rows(view[:, -1].copy())
    view[1:] += totals[:-1, None, :]
    if full < k:
        x[full] += totals[-1]
        for i in range(full + 1, k):
            x[i] += x[i - 1]
    return x


class _Family(NamedTuple):
    """Rows of a model's segment matrix: which segment each (ordered) row adds to, with what value."""

    ids: npt.NDArray[np.intp]        # segment id of each contributing row, non-decreasing in the model's order
    rows: npt.NDArray[np.intp]       # positions (in the model's order) of the contributing rows
    values: npt.NDArray[np.float64]  # what each contributes per unit of count
    size: int                        # number of segments


class Tile(NamedTuple):
    start: int
    stop: int
    matrix: sp.csr_array                # (segments touched, stop - start)
    spans: tuple[tuple[int, int], ...]  # per family: [first, last + 1) segment ids touched
    continues: tuple[bool, ...]         # per family: its first segment is the previous tile's last


def _ranking_families(pos: npt.NDArray[np.bool_], ws: npt.NDArray[np.float64], group: npt.NDArray[np.intp],
                      with_ties: bool) -> dict[str, _Family]:
    """``inc``, ``pos`` and (for ROC AUC) ``tie``: see :class:`ModelPlan`. Arguments in the model's order."""
    families = {}
    group_has_pos = np.zeros(group[-1] + 1, dtype=bool)
    group_has_pos[group[pos]] = True
    pgroup_of_group = np.cumsum(group_has_pos) - 1          # P-group index (for P-groups)
    n_p = int(group_has_pos.sum())
    # The P-group whose end closes each row's segment: the first P-group at or after the row.
    closing = np.cumsum(group_has_pos)[group] - group_has_pos[group]  # P-groups strictly before
    everything = np.arange(len(pos))
    families["inc"] = _Family(closing, everything, ws, n_p + 1)
    pos_rows = np.flatnonzero(pos)
    families["pos"] = _Family(pgroup_of_group[group[pos_rows]], pos_rows, ws[pos_rows], n_p)
    if with_ties:
        tie_rows = np.flatnonzero(~pos & group_has_pos[group])
        families["tie"] = _Family(pgroup_of_group[group[tie_rows]], tie_rows, ws[tie_rows], n_p)
    return families


def _families(p: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_], w: npt.NDArray[np.float64],
              metrics: set[str], bins: int, order: npt.NDArray[np.intp],
              group: npt.NDArray[np.intp]) -> dict[str, _Family]:
    """The segment families ``metrics`` need, in a fixed order: ``inc``, ``pos``, ``tie``, ``ece``."""
    s, pos, ws = p[order], positive[order], w[order]
    families: dict[str, _Family] = {}
    if metrics & {"pr_auc", "roc_auc"}:
        families.update(_ranking_families(pos, ws, group, "roc_auc" in metrics))
    if "ece" in metrics:
        # The full sample's bins, kept for every replicate. They grow with p; numbered from the
        # top so that ids do not decrease in this (descending) order.
        b = bins - 1 - equal_mass_bins(p, w, bins)[order]
        residual = positive[order].astype(float) - s
        families["ece"] = _Family(b, np.arange(len(p)), ws * residual, bins)
    return families


def _tiles(n: int, families: dict[str, _Family]) -> list[Tile]:
    """One sparse matrix per :data:`TILE` rows, mapping the tile's counts to the segments it touches."""
    tiles = []
    previous_last = [-1] * len(families)
    for start in range(0, n, TILE):
        stop = min(start + TILE, n)
        rows, cols, values, spans, continues = [], [], [], [], []
        offset = 0
        for index, fam in enumerate(families.values()):
            lo, hi = np.searchsorted(fam.rows, [start, stop])
            ids = fam.ids[lo:hi]
            if len(ids):
                first, last = int(ids[0]), int(ids[-1]) + 1
                continues.append(first == previous_last[index] - 1)
                previous_last[index] = last
            else:
                first = last = 0
                continues.append(False)
            rows.append(ids - first + offset)
            cols.append(fam.rows[lo:hi] - start)
            values.append(fam.values[lo:hi])
            spans.append((first, last))
            offset += last - first
        # Entries are already in CSR order (families stacked, ids and rows ascending within
        # each), so the matrix is built from its arrays, without a sort.
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.intp)
        indptr = np.searchsorted(row, np.arange(offset + 1)).astype(np.int32)
        indices = (np.concatenate(cols) if cols else np.zeros(0)).astype(np.int32)
        data = np.concatenate(values) if values else np.zeros(0)
        matrix = sp.csr_array((data, indices, indptr), shape=(offset, stop - start))
        tiles.append(Tile(start, stop, matrix, tuple(spans), tuple(continues)))
    return tiles


def _covered(families: dict[str, _Family], tiles: list[Tile]) -> set[str]:
    """Families whose segments the tiles cover without a gap: written, not added to, so their
    buffers need no zeroing per chunk (a pass over K x R floats saved)."""
    covered = set()
    for index, name in enumerate(families):
        spans = [t.spans[index] for t in tiles if t.spans[index][1] > t.spans[index][0]]
        edges = [0] + [last for _, last in spans]
        # Each span starts where the one before it ended, or one segment earlier (shared).
        if spans and spans[-1][1] == families[name].size and all(
                first in (edge, edge - 1) for (first, _), edge in zip(spans, edges[:-1], strict=True)):
            covered.add(name)
    return covered


class ModelPlan:
    """One model's score order and the sparse maps from counts to the sums its metrics need.

    Rows are sorted by descending score and cut into tie groups. A *P-group* is a tie group
    holding at least one positive row; ``K`` of them. For every replicate the plan computes

    * ``inc[k]``: the replicate's weight in rows after P-group ``k-1`` up to the end of P-group
      ``k`` (``inc[K]``: the rows after the last P-group), so ``cumsum(inc)[k]`` is the weight
      scored at or above P-group ``k``;
    * ``pos[k]``: the positive weight inside P-group ``k`` (``cumsum(pos)[k]``: true positives);
    * ``tie[k]``: the negative weight inside P-group ``k`` (ties with positives; ROC AUC only);
    * ``ece[b]``: ``sum count * w * (y - p)`` in equal-mass bin ``b`` (ECE only).

    All are linear in the counts, so one sparse matrix per tile of rows maps a ``(rows, R)``
    block of counts to them for R replicates at once.
    """

    def __init__(self, p: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_], w: npt.NDArray[np.float64],
                 metrics: set[str], bins: int) -> None:
        self.order, _, group = tie_groups(p, descending=True)
        families = _families(p, positive, w, metrics, bins, self.order, group)
        self.tiles = _tiles(len(p), families)
        self.covered = _covered(families, self.tiles)
        # The tiles hold everything the replicates need: keep only the sizes.
        self.sizes = {name: fam.size for name, fam in families.items()}

    def zero_sums(self, r: int) -> Sums:
        return {name: np.zeros((size, r)) for name, size in self.sizes.items()}

    def add_tile(self, tile: Tile, part: npt.NDArray[np.float64], sums: Sums) -> None:
        """Add one tile's counts (float64, ``(rows, R)``, this model's order) into ``sums``."""
        out = tile.matrix @ part
        offset = 0
        for name, (first, last), continues in zip(self.sizes, tile.spans, tile.continues, strict=True):
            if last > first:
                block, target = out[offset:offset + last - first], sums[name]
                if name not in self.covered:
                    target[first:last] += block
                elif continues:
                    target[first] += block[0]
                    target[first + 1:last] = block[1:]
                else:
                    target[first:last] = block
            offset += last - first

    def finish(self, sums: Sums, metrics: Sequence[str], scratch: npt.NDArray[np.float64]) -> Sums:
        """PR AUC (weighted average precision) and ROC AUC per replicate from the segment sums.

        With P-groups in descending score order, ``pos_k`` their positive weight, ``TP_k =
        cumsum(pos)_k`` and ``ALL_k = cumsum(inc)_k`` the weight at or above P-group ``k``::

            AP  = sum_k pos_k * (TP_k / ALL_k) / P          (recall step x precision, as sklearn)
            AUC = (P N - sum_k pos_k FP_k + 1/2 sum_k pos_k tie_k) / (P N),   FP_k = ALL_k - TP_k

        (``N - FP_k`` negatives rank below P-group ``k``; ``tie_k`` tie with it, counting half.)
        Works in place: ``sums`` is spent; ``scratch`` is a float buffer of at least their size.
        """
        result = {}
        inc = cumsum_rows(sums["inc"])
        pos = sums["pos"]
        tp = scratch[: pos.size].reshape(pos.shape)
        np.copyto(tp, pos)
        cumsum_rows(tp)
        total = inc[-1].copy()
        p_total = tp[-1].copy() if len(tp) else np.zeros_like(total)
        at_or_above = inc[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            if "roc_auc" in metrics:
                n_total = total - p_total
                false_pos = np.einsum("kr,kr->r", pos, at_or_above) - np.einsum("kr,kr->r", pos, tp)
                ties = np.einsum("kr,kr->r", pos, sums["tie"])
                result["roc_auc"] = (p_total * n_total - false_pos + 0.5 * ties) / (p_total * n_total)
            if "pr_auc" in metrics:
                # ALL_k = 0 only where TP_k = 0 too, and only in a leading run of P-groups (ALL
                # grows with k): a tiny floor there turns 0/0 into 0.
                lead = 0
                while lead < len(at_or_above) and not at_or_above[lead].all():
                    lead += 1
                np.maximum(at_or_above[:lead], 1e-300, out=at_or_above[:lead])
                np.divide(tp, at_or_above, out=tp)
                result["pr_auc"] = np.einsum("kr,kr->r", pos, tp) / p_total
        return result


class _Buffers(NamedTuple):
    """What one chunk of R replicates works in, kept from chunk to chunk (see :meth:`BootstrapPlan.values`)."""

    sums_a: Sums
    sums_b: Sums
    scratch: npt.NDArray[np.float64]   # as large as the largest sum: true positives in finish()
    part: npt.NDArray[np.float64]      # one tile of counts as float64, (TILE, R)
    gathered: npt.NDArray[np.uint8]    # one tile of counts in b's order, (TILE, R)


class BootstrapPlan:
    """Everything about the two models that does not depend on the replicate, and reused buffers."""

    def __init__(self, metrics: Sequence[str], y: npt.NDArray[np.bool_], p_a: npt.NDArray[np.float64],
                 p_b: npt.NDArray[np.float64], w: npt.NDArray[np.float64], bins: int) -> None:
        wanted = set(metrics)
        self.metrics = list(dict.fromkeys(metrics))
        self.a = ModelPlan(p_a, y, w, wanted, bins)
        self.b = ModelPlan(p_b, y, w, wanted, bins)
        # Row of the counts (drawn in a's order) that each row in b's order takes.
        rank_a = np.empty(len(p_a), dtype=np.intp)
        rank_a[self.a.order] = np.arange(len(p_a))
        self.b_at = rank_a[self.b.order]
        # Dense columns for the mean-type metrics and the total weight, in a's order.
        columns = [w]
        self.mean_columns: dict[str, tuple[int, int]] = {}
        yf = y.astype(float)
        for metric in self.metrics:
            if metric in ("log_loss", "brier"):
                self.mean_columns[metric] = (len(columns), len(columns) + 1)
                columns += [w * row_losses(metric, yf, p_a), w * row_losses(metric, yf, p_b)]
        self.dense = np.ascontiguousarray(np.stack(columns, axis=1)[self.a.order])
        self._buffers: dict[int, _Buffers] = {}

    def _buffers_for(self, r: int) -> _Buffers:
        if r not in self._buffers:
            sums_a, sums_b = self.a.zero_sums(r), self.b.zero_sums(r)
            largest = max([x.size for x in (*sums_a.values(), *sums_b.values())], default=0)
            self._buffers[r] = _Buffers(sums_a, sums_b, np.empty(largest), np.empty((TILE, r)),
                                        np.empty((TILE, r), dtype=np.uint8))
        return self._buffers[r]

    def values(self, counts: npt.NDArray[np.uint8]) -> PairedValues:
        """``{metric: (values of a, values of b)}``, one per column of ``counts`` (rows in a's order)."""
        buffers = self._buffers_for(counts.shape[1])
        for plan, sums in ((self.a, buffers.sums_a), (self.b, buffers.sums_b)):
            for name, x in sums.items():
                if name not in plan.covered:
                    x.fill(0.0)
        dense = self._add_counts(counts, buffers)
        total = dense[0]
        ranking = [m for m in self.metrics if m in ("pr_auc", "roc_auc")]
        ranked_a = self.a.finish(buffers.sums_a, ranking, buffers.scratch) if ranking else {}
        ranked_b = self.b.finish(buffers.sums_b, ranking, buffers.scratch) if ranking else {}
        result = {}
        for metric in self.metrics:
            if metric in self.mean_columns:
                ia, ib = self.mean_columns[metric]
                result[metric] = (dense[ia] / total, dense[ib] / total)
            elif metric == "ece":
                result[metric] = (np.abs(buffers.sums_a["ece"]).sum(axis=0) / total,
                                  np.abs(buffers.sums_b["ece"]).sum(axis=0) / total)
            else:
                result[metric] = (ranked_a[metric], ranked_b[metric])
        return result

    def _add_counts(self, counts: npt.NDArray[np.uint8], buffers: _Buffers) -> npt.NDArray[np.float64]:
        """Pass the counts through every tile: fills both models' segment sums and returns the
        dense sums (total weight, then each mean-type metric's weighted loss for a and b)."""
        sums_a, sums_b, _, part, gathered = buffers
        dense = np.zeros((self.dense.shape[1], counts.shape[1]))
        for tile in self.a.tiles:
            rows = tile.stop - tile.start
            np.copyto(part[:rows], counts[tile.start:tile.stop])
            dense += self.dense[tile.start:tile.stop].T @ part[:rows]
            if sums_a:
                self.a.add_tile(tile, part[:rows], sums_a)
        if sums_b:
            for tile in self.b.tiles:
                rows = tile.stop - tile.start
                np.take(counts, self.b_at[tile.start:tile.stop], axis=0, out=gathered[:rows], mode="clip")
                np.copyto(part[:rows], gathered[:rows])
                self.b.add_tile(tile, part[:rows], sums_b)
        return dense
