"""Time-ordered train / validation / test split.

The oldest rows train, the next validate (early stopping, model selection), the most recent
test. Cut points fall between distinct timestamps, so no instant is on both sides of a cut.
"""

from __future__ import annotations

import pandas as pd

from ml_tasks.manifests import RunPlan, SampleManifest, SplitManifest, SplitPart
from ml_tasks.spec import ModelSpec
from ml_tasks.storage import ArtifactStore

PARTS = ("train", "validation", "test")


class SplitError(ValueError):
    """A split cannot be made from the sample; the message names the part."""


def time_split(frame: pd.DataFrame, timestamp: str, validation_fraction: float, test_fraction: float) -> dict[str, pd.DataFrame]:
    """Split ``frame`` by ``timestamp`` into three contiguous periods. Pure."""
    ordered = frame.sort_values(timestamp, kind="stable")
    stamps = ordered[timestamp]
    test_cut = stamps.quantile(1.0 - test_fraction)
    valid_cut = stamps.quantile(1.0 - test_fraction - validation_fraction)
    return {
        "train": ordered[stamps < valid_cut],
        "validation": ordered[(stamps >= valid_cut) & (stamps < test_cut)],
        "test": ordered[stamps >= test_cut],
    }


def run_split(spec: ModelSpec, plan: RunPlan, sample: SampleManifest, store: ArtifactStore) -> SplitManifest:
    frame = store.read_frame(sample.uri)
    parts = time_split(frame, spec.columns.timestamp, spec.split.validation_fraction, spec.split.test_fraction)
    label = spec.columns.label
    described = {}
    for name in PARTS:
        part = parts[name]
        if part[label].nunique() < 2:
            raise SplitError(f"split {name!r}: {len(part)} rows with label values {sorted(part[label].unique().tolist())}; "
                             "expected both classes — widen source.window_days or the sample size")
        uri = f"{plan.run_prefix}/split/{name}.parquet"
        store.write_frame(uri, part)
        described[name] = SplitPart(uri=uri, rows=len(part), positives=int(part[label].sum()),
                                    time_min=part[spec.columns.timestamp].min(), time_max=part[spec.columns.timestamp].max())
    manifest = SplitManifest(**described, uri=f"{plan.run_prefix}/split.json")
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest
