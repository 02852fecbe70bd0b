"""Stratified sampling with weights that reweight the sample back to the population.

Strata are the label crossed with the spec's segment columns. Each stratum gets a share of the
sample proportional to its size, but never fewer than ``min_per_stratum`` rows (or all it
has), so the rare class and small segments survive. Every sampled row carries
``_weight = N_stratum / n_stratum`` (its inverse inclusion probability): weighted metrics on
the sample estimate the population's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_tasks.manifests import RunPlan, SampleManifest, ValidationManifest
from ml_tasks.spec import ModelSpec
from ml_tasks.storage import ArtifactStore

WEIGHT = "_weight"


def allocate(stratum_sizes: pd.Series, total: int, floor: int) -> pd.Series:
    """Rows to draw per stratum: proportional allocation with a floor, summing to ≤ ``total``."""
    population = int(stratum_sizes.sum())
    if total >= population:
        return stratum_sizes.copy()
    floors = np.minimum(stratum_sizes, floor)
    remaining = max(total - int(floors.sum()), 0)
    spare = stratum_sizes - floors
    extra = np.floor(spare / max(int(spare.sum()), 1) * remaining).astype(int)
    return np.minimum(floors + extra, stratum_sizes).astype(int)


def stratified_sample(frame: pd.DataFrame, strata: list[str], size: int, floor: int, seed: int) -> pd.DataFrame:
    """Draw the sample and attach ``_weight``; rows keep their original (time) order."""
    rng = np.random.default_rng(seed)
    codes = (frame.groupby(strata, dropna=False, sort=True).ngroup().to_numpy() if strata
             else np.zeros(len(frame), dtype=int))
    quota = allocate(pd.Series(np.bincount(codes, minlength=1)), size, floor)
    chosen, weights = [], np.zeros(len(frame))
    for code, take in quota.items():
        members = np.flatnonzero(codes == code)
        picked = members if take >= len(members) else np.sort(rng.choice(members, size=int(take), replace=False))
        chosen.append(picked)
        weights[picked] = len(members) / max(len(picked), 1)
    index = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)
    sample = frame.iloc[index].copy()
    sample[WEIGHT] = weights[index]
    return sample


def run_sampling(spec: ModelSpec, plan: RunPlan, validation: ValidationManifest, store: ArtifactStore) -> SampleManifest:
    frame = store.read_frame(validation.snapshot.uri)
    strata = [spec.columns.label, *spec.sampling.segments]
    sample = stratified_sample(frame, strata, plan.sample_size, spec.sampling.min_per_stratum, spec.sampling.seed)
    label = spec.columns.label
    by_stratum = (
        sample.groupby([*strata], dropna=False)[WEIGHT].agg(["size", "sum"]).rename(columns={"size": "sampled", "sum": "population"})
    )
    uri = f"{plan.run_prefix}/sample.parquet"
    store.write_frame(uri, sample)
    manifest = SampleManifest(
        uri=uri,
        rows=len(sample),
        population_rows=len(frame),
        seed=spec.sampling.seed,
        strata={"|".join(map(str, k if isinstance(k, tuple) else (k,))): {"sampled": float(r.sampled), "population": float(r.population)}
                for k, r in by_stratum.iterrows()},
        label_rate_sample=float(sample[label].mean()),
        label_rate_reweighted=float(np.average(sample[label], weights=sample[WEIGHT])),
    )
    store.write_json(f"{plan.run_prefix}/sample.json", manifest.to_xcom())
    return manifest
