"""Time-ordered train / validation / test split.

The oldest rows train, the next validate (early stopping, model selection), the most recent
test. Cut points fall between distinct timestamps, so no instant is on both sides of a cut.
"""

from __future__ import annotations

import pandas as pd

from ml_tasks.core.manifests import RunPlan, SampleManifest, SplitManifest, SplitPart
from ml_tasks.core.spec import ModelSpec
from ml_tasks.io.store import ArtifactStore

PARTS = ("train", "validation", "test")


class SplitError(ValueError):
    """A split cannot be made from the sample; the message names the part."""


class LeakageError(ValueError):
    """The split leaks information across its parts and the spec says to fail."""


def leakage_findings(spec: ModelSpec, parts: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(policy, message) for each leak found between train and the later parts. Pure.

    * entity overlap: the same entity in train and in validation/test (counts of entities and rows);
    * duplicate rows: a validation/test row whose features and label also occur in train.
    """
    findings: list[tuple[str, str]] = []
    train = parts["train"]
    entity = spec.columns.entity
    if entity and spec.leakage.entity_overlap != "ignore":
        seen = set(train[entity].unique())
        for name in ("validation", "test"):
            shared = parts[name][entity].isin(seen)
            if shared.any():
                findings.append((spec.leakage.entity_overlap,
                                 f"column {entity!r}: {parts[name].loc[shared, entity].nunique()} entities "
                                 f"({int(shared.sum())} of {len(shared)} rows) of the {name} split "
                                 "also appear in train"))
    if spec.leakage.duplicate_rows != "ignore":
        columns = [*spec.features.all, spec.columns.label]
        train_rows = set(pd.util.hash_pandas_object(train[columns], index=False))
        for name in ("validation", "test"):
            hashes = pd.util.hash_pandas_object(parts[name][columns], index=False)
            duplicated = int(hashes.isin(train_rows).sum())
            if duplicated:
                findings.append((spec.leakage.duplicate_rows,
                                 f"{duplicated} of {len(hashes)} rows of the {name} split repeat a train row "
                                 f"(same features {spec.features.all} and label)"))
    return findings


def time_split(frame: pd.DataFrame, timestamp: str, validation_fraction: float,
               test_fraction: float) -> dict[str, pd.DataFrame]:
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
    """Split the stored sample by time, write the three parts and the manifest.

    Fails with :class:`SplitError` when a part lacks one of the classes, and with
    :class:`LeakageError` when a leak is found whose ``leakage.*`` policy is ``fail``; the other
    leaks travel as warnings in the manifest.
    """
    frame = store.read_frame(sample.uri)
    parts = time_split(frame, spec.columns.timestamp, spec.split.validation_fraction, spec.split.test_fraction)
    label = spec.columns.label
    described = {}
    for name in PARTS:
        part = parts[name]
        if part[label].nunique() < 2:
            values = sorted(part[label].unique().tolist())
            raise SplitError(f"split {name!r}: {len(part)} rows with label values {values}; "
                             "expected both classes — widen source.window_days or the sample size")
        uri = plan.artifacts.split_part(name)
        store.write_frame(uri, part)
        stamps = part[spec.columns.timestamp]
        described[name] = SplitPart(uri=uri, rows=len(part), positives=int(part[label].sum()),
                                    time_min=stamps.min(), time_max=stamps.max())
    findings = leakage_findings(spec, parts)
    fatal = [message for policy, message in findings if policy == "fail"]
    if fatal:
        raise LeakageError("leakage between splits (spec leakage.* says fail): " + "; ".join(fatal))
    manifest = SplitManifest(**described, warnings=[message for _, message in findings],
                             uri=plan.artifacts.split)
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest
