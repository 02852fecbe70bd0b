"""Where every artifact lives in the artifact store: the one module that names them.

A run keeps everything under its folder, ``runs/<model>/<run_key>/`` (the plan's
``run_prefix``); snapshots are shared by every run of a model and keyed by content; reports
keep a pointer to each model's latest verdict and a history of all of them::

    runs/<model>/<run_key>/plan.json                   RunArtifacts.plan
                           spec.json                   .spec
                           snapshot.json               .snapshot
                           validation.json             .validation
                           sample.json, sample.parquet .sample, .sample_data
                           split.json, split/<part>.parquet
                           train/<candidate>.json      .train_result(candidate)
                           train/<candidate>/reliability.png, train/<candidate>/checkpoints/
                           backtest/<candidate>/fold-<n>.json, backtest.json
                           evaluation.json, predictions.parquet
                           gate.json, registration.json, report.html, report.json
    snapshots/<model>/<snapshot_id>/data.parquet, manifest.json
    staging/<model>/<snapshot_id>/data.parquet         (an extraction not yet validated)
    reports/<model>/latest.json, reports/<model>/history/<written_at>-<run_key>.json
    scoring/<model>/<run_key>/plan.json, scoring.json   ScoringArtifacts (a batch-scoring run)
    scoring/<model>/latest.json                        the latest scoring run's manifest
    monitoring/<model>/history/<as_of>-<run_key>.json  one health record per monitor run (its interval)
    monitoring/<model>/latest.json                     the latest monitor run's health record
    monitoring/<model>/profiles/<snapshot_id>.json     a training snapshot's binned profile (drift reference)

Stages get these URIs from here and never build a path themselves, so the layout can be read
(and changed) in one place. The names are those every earlier release wrote: runs and models
from before a change of this module must still be found.

>>> run = RunArtifacts("s3://refit/artifacts/runs/credit_default/20240901T000000-1a2b3c4d")
>>> run.gate
's3://refit/artifacts/runs/credit_default/20240901T000000-1a2b3c4d/gate.json'
>>> StoreLayout("/srv/refit").snapshot_data("credit_default", "ab12")
'/srv/refit/snapshots/credit_default/ab12/data.parquet'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, overload

#: The manifests a run writes under its folder, by stage (``<name>.json``).
RUN_MANIFESTS = ("plan", "snapshot", "validation", "sample", "split", "backtest", "evaluation", "gate",
                 "registration", "approval")


_HISTORY = "history"


def join(root: str, *parts: str) -> str:
    """``root`` and ``parts`` joined by ``/``, empty parts dropped and each part's slashes trimmed."""
    return "/".join([root.rstrip("/"), *(part.strip("/") for part in parts if part)])


class _Folder(Protocol):
    """A run's folder: :class:`RunArtifacts` or :class:`ScoringArtifacts`."""

    @property
    def prefix(self) -> str: ...


class _InRun:
    """A fixed file or folder under a run's folder, read as an attribute of :class:`RunArtifacts`
    (or :class:`ScoringArtifacts`)."""

    def __init__(self, name: str, doc: str = "") -> None:
        self.name = name
        self.__doc__ = doc or f"``<run>/{name}``"

    @overload
    def __get__(self, run: None, owner: type[_Folder]) -> _InRun: ...

    @overload
    def __get__(self, run: _Folder, owner: type[_Folder]) -> str: ...

    def __get__(self, run: _Folder | None, owner: type[_Folder]) -> _InRun | str:
        return self if run is None else join(run.prefix, self.name)


@dataclass(frozen=True)
class RunArtifacts:
    """The URIs of one run's artifacts, under its folder ``prefix`` (the plan's ``run_prefix``)."""

    prefix: str

    plan = _InRun("plan.json")
    spec = _InRun("spec.json", "The model spec as planned, validated: what every later stage, a trainer "
                               "container's included, runs with.")
    snapshot = _InRun("snapshot.json")
    validation = _InRun("validation.json")
    sample = _InRun("sample.json")
    sample_data = _InRun("sample.parquet", "The sampled rows, each with its ``_weight``.")
    split = _InRun("split.json")
    backtest_folds = _InRun("backtest", "Folder of every fold result (:meth:`fold_result`) of the run.")
    backtest = _InRun("backtest.json")
    evaluation = _InRun("evaluation.json")
    predictions = _InRun("predictions.parquet", "Every model's probabilities on the test rows (what the gate tests).")
    gate = _InRun("gate.json")
    registration = _InRun("registration.json")
    approval = _InRun("approval.json", "A person's answer to the approve task (``promotion`` other than auto): "
                                       "approved, rejected or timed out, by whom, why.")
    report_html = _InRun("report.html")
    report_json = _InRun("report.json")

    def manifest(self, stage: str) -> str:
        """The manifest a stage writes (``<stage>.json``), by its name in :data:`RUN_MANIFESTS`."""
        if stage not in RUN_MANIFESTS:
            raise ValueError(f"stage {stage!r}: no manifest of that name; expected one of {list(RUN_MANIFESTS)}")
        return join(self.prefix, f"{stage}.json")

    def split_part(self, part: str) -> str:
        """Rows of one part of the time split (``train``, ``validation`` or ``test``)."""
        return join(self.prefix, "split", f"{part}.parquet")

    def train_result(self, candidate: str) -> str:
        return join(self.prefix, "train", f"{candidate}.json")

    def reliability_chart(self, candidate: str) -> str:
        """The candidate's reliability diagram before and after calibration."""
        return join(self.prefix, "train", candidate, "reliability.png")

    def checkpoints(self, candidate: str) -> str:
        """Folder of the candidate's training checkpoints (a retried trainer resumes from them)."""
        return join(self.prefix, "train", candidate, "checkpoints")

    def fold_result(self, candidate: str, fold: int) -> str:
        return join(self.backtest_folds, candidate, f"fold-{fold}.json")

    @staticmethod
    def is_fold_result(uri: str) -> bool:
        """Whether a URI listed under :attr:`backtest_folds` is a fold result."""
        return "/fold-" in uri and uri.endswith(".json")


@dataclass(frozen=True)
class ScoringArtifacts:
    """The URIs of one batch-scoring run's manifests, under its folder ``prefix``."""

    prefix: str

    plan = _InRun("plan.json", "The scoring plan: interval, run key, the versions it scores with.")
    manifest = _InRun("scoring.json", "What the run wrote: rows, versions, tables, seconds.")


@dataclass(frozen=True)
class StoreLayout:
    """The store-wide locations under the artifact store's ``root``: runs, snapshots and reports."""

    root: str

    def run(self, model: str, run_key: str) -> RunArtifacts:
        """A run's artifacts; its folder is the plan's ``run_prefix``."""
        return RunArtifacts(join(self.root, "runs", model, run_key))

    def snapshots(self, model: str) -> str:
        """Folder of every snapshot of ``model``."""
        return join(self.root, "snapshots", model)

    def snapshot_data(self, model: str, snapshot_id: str) -> str:
        return join(self.snapshots(model), snapshot_id, "data.parquet")

    def snapshot_manifest(self, model: str, snapshot_id: str) -> str:
        return join(self.snapshots(model), snapshot_id, "manifest.json")

    def staging_data(self, model: str, snapshot_id: str) -> str:
        """Where an extraction waits until validation commits it under :meth:`snapshot_data`."""
        return join(self.root, "staging", model, snapshot_id, "data.parquet")

    @property
    def reports(self) -> str:
        return join(self.root, "reports")

    def latest_report(self, model: str) -> str:
        """The pointer to ``model``'s latest gate result (what ``status`` reads)."""
        return join(self.reports, model, "latest.json")

    def report_history(self, model: str) -> str:
        """Folder of ``model``'s gate results, one small entry per report."""
        return join(self.reports, model, _HISTORY)

    def report_history_entry(self, model: str, written_at: str, run_key: str) -> str:
        """The history entry of one report: named by the UTC time it was written, then its run key,
        so that entries sort oldest first by name."""
        # ISO times sort as text once the separators that differ between writers are dropped.
        stamp = re.sub(r"[^0-9]", "", written_at)[:14]
        return join(self.report_history(model), f"{stamp}-{run_key}.json")

    def model_of_history_entry(self, uri: str) -> str | None:
        """The model whose history holds ``uri`` (a URI under :attr:`reports`), or None for another file."""
        model, _, rest = uri.removeprefix(self.reports.rstrip("/") + "/").partition("/")
        return model if rest.startswith(f"{_HISTORY}/") else None

    def scoring_run(self, model: str, run_key: str) -> ScoringArtifacts:
        """A batch-scoring run's manifests; its folder is the scoring plan's ``run_prefix``."""
        return ScoringArtifacts(join(self.root, "scoring", model, run_key))

    def latest_scoring(self, model: str) -> str:
        """The manifest of ``model``'s latest batch-scoring run."""
        return join(self.root, "scoring", model, "latest.json")

    def feature_check(self, model: str, key: str) -> str:
        """A passed check of ``model``'s scoring query against its training query, by
        :func:`ml_tasks.scoring.parity.check_key` (champion version and both queries)."""
        return join(self.root, "scoring", model, "feature-checks", f"{key}.json")

    def monitoring(self, model: str) -> str:
        """Folder of ``model``'s monitor runs: health history, latest record, reference profiles."""
        return join(self.root, "monitoring", model)

    def health_history(self, model: str) -> str:
        """Folder of ``model``'s health records, one per monitor run; names sort oldest first."""
        return join(self.monitoring(model), _HISTORY)

    def health_record(self, model: str, run_key: str) -> str:
        """The health record of one monitor run: its run key starts with its as-of stamp, so a re-run
        of the same moment replaces its record and names sort by as-of."""
        return join(self.health_history(model), f"{run_key}.json")

    def latest_health(self, model: str) -> str:
        """The latest monitor run's health record (what ``status`` shows first)."""
        return join(self.monitoring(model), "latest.json")

    def drift_profile(self, model: str, snapshot_id: str) -> str:
        """The binned profile of a training snapshot: built once, read by every monitor run after."""
        return join(self.monitoring(model), "profiles", f"{snapshot_id}.json")

    @staticmethod
    def is_history_entry_of(uri: str, run_key: str) -> bool:
        """Whether a history entry's name says it is a report of ``run_key`` (no need to read it)."""
        return uri.endswith(f"-{run_key}.json")
