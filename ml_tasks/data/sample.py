"""The sample stage: a stratified, weighted sample of the snapshot in one streaming pass.

Strata are the label crossed with the spec's segment columns (and the source stream when the
spec lists several). The stratum counts come from the snapshot's manifest (extraction counts
them as rows arrive), so the sampler reads the snapshot once, keeping one reservoir per
stratum (:mod:`ml_tasks.data.sampling`): memory grows with the sample, not with the snapshot.

How many rows each stratum gets (:func:`plan_quotas`):

* one stream: proportional to the stratum's size, at least ``min_per_stratum`` (or all it
  has), at most ``max_per_stratum``, optionally with target label shares;
* several streams: a seeded multinomial draw of ``size`` over the streams with the spec's
  weights decides how many examples each stream gives, then each stream's rows are allocated
  over its strata as above. The drawn and the realised mix go into the manifest.

Every sampled row carries ``_weight``, its inverse inclusion probability (times, with several
streams, its stream's weight correction, see :func:`stream_factors`), so weighted metrics on the
sample estimate the population's.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.core.columns import STREAM, WEIGHT
from ml_tasks.core.manifests import (
    RunPlan,
    SampleManifest,
    SnapshotManifest,
    ValidationManifest,
)
from ml_tasks.core.spec import ModelSpec
from ml_tasks.data.extract import strata_columns
from ml_tasks.data.sampling import (
    StratumKey,
    allocate,
    count_strata_parquet,
    reservoir_sample_parquet,
)
from ml_tasks.io.store import ArtifactStore

__all__ = ["plan_quotas", "run_sampling", "stream_factors"]


def plan_quotas(spec: ModelSpec, counts: dict[StratumKey, int],
                size: int) -> tuple[dict[StratumKey, int], dict[str, int]]:
    """Rows to draw per stratum, and (with several streams) the rows the multinomial draw gave
    each stream. Pure and seeded by ``spec.sampling.seed``."""
    if not spec.source.streams:
        return _allocate(spec, counts, size, label_position=0), {}
    streams = spec.source.streams
    weights = np.array([s.weight for s in streams], dtype=float)
    drawn = np.random.default_rng([spec.sampling.seed, 0x5757]).multinomial(size, weights / weights.sum())
    per_stream: dict[str, dict[StratumKey, int]] = defaultdict(dict)
    for key, n in counts.items():
        per_stream[key[0]][key] = n
    quotas: dict[StratumKey, int] = {}
    for stream, rows in zip(streams, drawn, strict=True):
        quotas |= _allocate(spec, per_stream.get(stream.name, {}), int(rows), label_position=1)
    return quotas, {s.name: int(n) for s, n in zip(streams, drawn, strict=True)}


def _allocate(spec: ModelSpec, counts: dict[StratumKey, int], size: int, *,
              label_position: int) -> dict[StratumKey, int]:
    """:func:`allocate` with the spec's floor, cap and label shares; the label is element
    ``label_position`` of each stratum key (after the stream, when there are several)."""
    sampling = spec.sampling
    return allocate(counts, size, floor=sampling.min_per_stratum, cap=sampling.max_per_stratum,
                    label_shares=sampling.label_shares, label_position=label_position)


def stream_factors(spec: ModelSpec, stream_rows: dict[str, int]) -> dict[str, float]:
    """Multiplier of each stream's ``_weight`` so the streams carry the spec's weights.

    Within a stream ``_weight`` sums to the stream's rows ``N_s``; multiplied by
    ``w_s * N / N_s`` (``w`` normalised, ``N`` all rows) the stream's weights sum to ``w_s * N``:
    reweighted metrics describe the mixture the spec asks for, on the scale of the snapshot.
    """
    total_weight = sum(s.weight for s in spec.source.streams)
    total_rows = sum(stream_rows.values())
    return {s.name: (s.weight / total_weight) * total_rows / stream_rows[s.name]
            for s in spec.source.streams if stream_rows.get(s.name)}


def snapshot_strata_counts(snapshot: SnapshotManifest, columns: list[str], path: Path) -> dict[StratumKey, int]:
    """Stratum counts from the manifest when extraction counted the same columns, else one
    pass over just those columns (a snapshot extracted before the spec's segments changed)."""
    if snapshot.strata is not None and snapshot.strata.columns == columns:
        return {tuple(entry[:-1]): int(entry[-1]) for entry in snapshot.strata.counts}
    return count_strata_parquet(path, columns)


def run_sampling(spec: ModelSpec, plan: RunPlan, validation: ValidationManifest,
                 store: ArtifactStore) -> SampleManifest:
    snapshot = validation.snapshot
    strata = strata_columns(spec)
    with store.local_copy(snapshot.uri) as path:
        counts = snapshot_strata_counts(snapshot, strata, path)
        quotas, drawn = plan_quotas(spec, counts, plan.sample_size)
        result = reservoir_sample_parquet(path, strata, quotas, seed=spec.sampling.seed,
                                          importance_weight=spec.sampling.importance_weight)
    table = result.table
    stream_mix: dict[str, dict[str, float]] = {}
    if spec.source.streams:
        stream_rows = {s.name: s.rows for s in snapshot.streams}
        table = _apply_stream_factors(table, stream_factors(spec, stream_rows))
        stream_mix = _realised_mix(spec, table, drawn, stream_rows)
    sample = table.to_pandas()
    label = spec.columns.label
    uri = plan.artifacts.sample_data
    store.write_frame(uri, sample)
    manifest = SampleManifest(
        uri=uri,
        rows=len(sample),
        population_rows=result.rows_scanned,
        seed=spec.sampling.seed,
        strata={"|".join(map(str, key)): {"sampled": float(stats.sampled), "population": float(stats.population)}
                for key, stats in result.strata.items()},
        label_rate_sample=float(sample[label].mean()),
        label_rate_reweighted=float(np.average(sample[label], weights=sample[WEIGHT])),
        stream_mix=stream_mix,
        importance_weight=spec.sampling.importance_weight,
        peak_buffer_rows=result.peak_buffer_rows,
    )
    store.write_json(plan.artifacts.sample, manifest.to_xcom())
    return manifest


def _apply_stream_factors(table: pa.Table, factors: dict[str, float]) -> pa.Table:
    streams = table.column(STREAM).to_numpy(zero_copy_only=False)
    factor = pd.Series(streams).map(factors).to_numpy(dtype=float)
    weights = pc.multiply(table.column(WEIGHT), pa.array(factor))
    return table.set_column(table.schema.get_field_index(WEIGHT), WEIGHT, weights)


def _realised_mix(spec: ModelSpec, table: pa.Table, drawn: dict[str, int],
                  stream_rows: dict[str, int]) -> dict[str, dict[str, float]]:
    realised = pd.Series(table.column(STREAM).to_numpy(zero_copy_only=False)).value_counts()
    total_weight = sum(s.weight for s in spec.source.streams)
    return {s.name: {"weight": s.weight / total_weight, "drawn": float(drawn.get(s.name, 0)),
                     "sampled": float(realised.get(s.name, 0)),
                     "share": float(realised.get(s.name, 0) / max(len(table), 1)),
                     "population": float(stream_rows.get(s.name, 0))}
            for s in spec.source.streams}
