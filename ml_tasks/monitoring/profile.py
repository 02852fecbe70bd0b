"""Binned profiles of a model's features, built from Arrow batches in bounded memory, and PSI between two.

A *profile* holds, per feature, its bins and how many rows fell in each, plus the row count and
the label counts. The reference (the champion's training snapshot) fixes the bins:

- a numeric feature at the deciles of its finite values, plus one bin for missing values
  (:func:`ml_tasks.data.drift.numeric_codes`, the same bins the report's drift section uses);
- a categorical feature by value: its :data:`MAX_CATEGORIES` most frequent values, one bin for
  every other value (and every value the reference never saw), one for missing values.

The last bin of every feature holds its missing values, so a profile also gives null rates.
The PSI of a feature is then :func:`ml_tasks.data.drift.psi_of_counts` of the two histograms.

Why streaming: a training snapshot may hold tens of millions of rows, and a pandas load of it
would hold all of them (the report's :func:`ml_tasks.data.drift.feature_drift` does, on the
sampled frames it already has). Here the reference is read twice, batch by batch — once for the
decile edges, from an evenly spaced sample of at most :data:`EDGE_SAMPLE_ROWS` values per
feature (the row count is known from the Parquet footer), and for the category counts; once
more to count every row into the bins — and the current rows once, as they stream out of the
warehouse. Memory holds one batch and the bins. The reference's profile is small JSON, so a
monitor keeps it in the store and later runs never re-read the snapshot.

>>> import pyarrow as pa
>>> batch = pa.record_batch({"x": [0.0, 1.0, 2.0, None], "c": ["a", "b", "a", None], "y": [0, 1, 0, 1]})
>>> profile = build_profile(lambda: [batch], 4, ["x"], ["c"], "y")
>>> profile.features["c"].categories, profile.features["c"].counts
(['a', 'b'], [2, 1, 0, 1])
>>> round(psi(profile, profile)["x"], 6)
0.0
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.core.manifests import Manifest
from ml_tasks.data.drift import decile_edges, numeric_codes, psi_of_counts

#: At most this many values per numeric feature decide its decile edges.
EDGE_SAMPLE_ROWS = 100_000
#: Categories kept by name; rarer values share the "other" bin.
MAX_CATEGORIES = 50

#: How to open the reference's Parquet file: pyarrow's default ``pre_buffer=True`` makes
#: ``iter_batches`` pre-read the column chunks of every row group, so its memory grows with the
#: file (7, 15 and 25 MB of Arrow memory for 0.25, 1 and 2 million rows, against 5.4 MB flat
#: without; ``tests/monitoring/test_profile.py``), as the sampler found (:mod:`ml_tasks.data.sampling.parquet`).
PARQUET_OPTIONS = {"pre_buffer": False, "buffer_size": 1 << 20}

#: Opens the reference's batches again for each pass (a Parquet file's ``iter_batches``).
BatchSource = Callable[[], Iterable[pa.RecordBatch]]


class FeatureProfile(Manifest):
    """One feature's bins and counts; the last count is the missing values'."""

    kind: Literal["numeric", "categorical"]
    edges: list[float] = []
    categories: list[str] = []
    counts: list[int]

    @property
    def null_rate(self) -> float:
        total = sum(self.counts)
        return self.counts[-1] / total if total else 0.0

    def empty(self) -> FeatureProfile:
        """The same bins with no rows counted: where a current window's counts start."""
        return self.model_copy(update={"counts": [0] * len(self.counts)})


class Profile(Manifest):
    """A table's features binned (:class:`FeatureProfile`), its row count and label counts."""

    rows: int
    label_counts: dict[str, int]
    features: dict[str, FeatureProfile]

    @property
    def positive_rate(self) -> float | None:
        """Share of rows labelled 1; None for no rows."""
        return self.label_counts.get("1", 0) / self.rows if self.rows else None


def feature_codes(feature: FeatureProfile, column: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.intp]:
    """The bin of each value of ``column`` under ``feature``'s bins."""
    if feature.kind == "numeric":
        values = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
        return numeric_codes(values, np.asarray(feature.edges, dtype=float))
    other, missing = len(feature.categories), len(feature.categories) + 1
    text = pc.cast(column, pa.string())
    found = pc.index_in(text, value_set=pa.array(feature.categories, pa.string()))
    codes = np.asarray(found.fill_null(other).to_numpy(zero_copy_only=False), dtype=np.intp)
    return np.where(np.asarray(text.is_null().to_numpy(zero_copy_only=False)), missing, codes)


class ProfileCounter:
    """Counts batches into fixed bins: ``add`` each batch, then :meth:`profile`."""

    def __init__(self, bins: dict[str, FeatureProfile], label: str) -> None:
        self.label = label
        self.rows = 0
        self.labels: Counter[str] = Counter()
        self.counts = {name: np.zeros(len(feature.counts), dtype=np.int64) for name, feature in bins.items()}
        self.bins = bins

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for item in pc.value_counts(batch.column(self.label)).to_pylist():
            self.labels[str(item["values"])] += item["counts"]
        for name, feature in self.bins.items():
            self.counts[name] += np.bincount(feature_codes(feature, batch.column(name)),
                                             minlength=len(feature.counts))

    def profile(self) -> Profile:
        features = {name: feature.model_copy(update={"counts": [int(c) for c in self.counts[name]]})
                    for name, feature in self.bins.items()}
        return Profile(rows=self.rows, label_counts=dict(sorted(self.labels.items())), features=features)


def reference_bins(batches: Iterable[pa.RecordBatch], total_rows: int, numeric: list[str],
                   categorical: list[str]) -> dict[str, FeatureProfile]:
    """The bins of every feature from one pass over the reference: decile edges from every
    ``stride``-th value, categories by frequency (ties by name, so the bins never depend on order)."""
    stride = max(1, math.ceil(total_rows / EDGE_SAMPLE_ROWS))
    samples: dict[str, list[npt.NDArray[np.float64]]] = {name: [] for name in numeric}
    frequencies: dict[str, Counter[str]] = {name: Counter() for name in categorical}
    seen = 0
    for batch in batches:
        # Row positions seen + i with (seen + i) % stride == 0: evenly spaced whatever the batch sizes.
        take = np.arange((-seen) % stride, batch.num_rows, stride)
        for name in numeric:
            values = pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False)[take]
            samples[name].append(values[np.isfinite(values)])
        for name in categorical:
            for item in pc.value_counts(pc.cast(batch.column(name), pa.string()).drop_null()).to_pylist():
                frequencies[name][item["values"]] += item["counts"]
        seen += batch.num_rows
    bins = {}
    for name in numeric:
        edges = decile_edges(np.concatenate(samples[name]) if samples[name] else np.array([]))
        bins[name] = FeatureProfile(kind="numeric", edges=[float(e) for e in edges], counts=[0] * (len(edges) + 2))
    for name in categorical:
        ranked = sorted(frequencies[name].items(), key=lambda item: (-item[1], item[0]))[:MAX_CATEGORIES]
        categories = sorted(value for value, _ in ranked)
        bins[name] = FeatureProfile(kind="categorical", categories=categories, counts=[0] * (len(categories) + 2))
    return bins


def build_profile(open_batches: BatchSource, total_rows: int, numeric: list[str], categorical: list[str],
                  label: str) -> Profile:
    """The reference's profile: its bins (first pass), then every row counted into them (second)."""
    bins = reference_bins(open_batches(), total_rows, numeric, categorical)
    counter = ProfileCounter(bins, label)
    for batch in open_batches():
        counter.add(batch)
    return counter.profile()


def psi(reference: Profile, current: Profile) -> dict[str, float]:
    """PSI of each feature of ``current`` against ``reference`` (same bins), largest first."""
    values = {name: psi_of_counts(np.asarray(feature.counts), np.asarray(current.features[name].counts))
              for name, feature in reference.features.items() if name in current.features}
    return dict(sorted(values.items(), key=lambda item: -item[1]))
