"""The history of gate results per model: one small record per report, newest first on request.

Every report writes one entry under the model's history
(:meth:`ml_tasks.core.artifacts.StoreLayout.report_history_entry`), next to the ``latest.json``
pointer that ``python -m ml_tasks status`` reads. Whoever lists verdicts (the on-call view in
the Airflow UI, the run notes, a script) reads these records, never the full reports with
their embedded charts; listing a prefix of small entries is cheap on a local folder and on S3.

Entry names start with the UTC time the report was written, so the newest sort last; a run
that is re-run keeps its old entries, which is what an on-call reviewer wants to see.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from ml_tasks.core.artifacts import StoreLayout
from ml_tasks.io.store import ArtifactStore

# Run keys and model names may come from a URL or a form: only these shapes are ever looked up,
# so a name never reaches the store as a path to somewhere else.
RUN_KEY_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6,64}$")
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class GateResult:
    """One gate verdict, as the view lists it.

    Attributes
    ----------
    model : spec name (the DAG is ``retrain_<model>``).
    run_key : the run's key (``<as_of>-<hash>``), also its folder in the artifact store.
    verdict : ``PASS`` or ``FAIL``.
    written_at : ISO time (UTC) the report was written.
    as_of : the data cut-off the run trained on.
    challenger : the candidate that was gated.
    champion_version : registry version that is champion after the run (None: none yet).
    dag_run_id : the Airflow run that produced it (None when run from the CLI).
    dry_run : gated and reported without touching the registry.
    html_uri, json_uri : where the report lives in the artifact store.
    mlflow_run_id : the challenger's MLflow run, which also holds the report.
    mlflow_experiment_id : that run's experiment (MLflow UI addresses need it).
    failing : the failing checks' reasons, most important first (empty on PASS).
    trigger : what started the run when a monitor's retrain trigger did (None: cron or by hand).
    approval : the spec's ``promotion`` held the verdict for a person: ``state`` (pending, approved,
        rejected, timed_out), ``by``, ``reason``, ``at``, ``version``; None when nobody was asked.
    """

    model: str
    run_key: str
    verdict: str
    written_at: str
    as_of: str
    challenger: str
    champion_version: str | None
    dag_run_id: str | None
    dry_run: bool
    html_uri: str
    json_uri: str
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    failing: list[str] = field(default_factory=list)
    trigger: str | None = None
    approval: dict | None = None

    @classmethod
    def from_dict(cls, payload: dict) -> GateResult:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in known})

    def to_dict(self) -> dict:
        return asdict(self)


def record(store: ArtifactStore, result: GateResult) -> str:
    """Add ``result`` to its model's history; returns the entry's URI."""
    uri = store.layout.report_history_entry(result.model, result.written_at, result.run_key)
    store.write_json(uri, result.to_dict())
    return uri


def models_with_results(store: ArtifactStore) -> list[str]:
    """Models that have at least one recorded gate result, sorted."""
    layout = store.layout
    models = (layout.model_of_history_entry(uri) for uri in store.list(layout.reports, suffix=".json"))
    return sorted({model for model in models if model is not None})


def _entry_uris(store: ArtifactStore, model: str) -> list[str]:
    """The model's history entries, newest first."""
    if not MODEL_PATTERN.match(model):
        raise ValueError(f"parameter 'model': {model!r} is not a model name (letters, digits, '_', '.', '-')")
    return sorted(store.list(store.layout.report_history(model), suffix=".json"), reverse=True)


def recent_results(store: ArtifactStore, model: str, limit: int = 20) -> list[GateResult]:
    """The ``limit`` newest gate results of ``model``, newest first."""
    return [GateResult.from_dict(store.read_json(uri)) for uri in _entry_uris(store, model)[:limit]]


def find_result(store: ArtifactStore, model: str, *, run_key: str | None = None,
                dag_run_id: str | None = None) -> GateResult | None:
    """The newest result of ``model`` with this run key or from this DAG run, if any.

    Entries are read newest first and only until one matches; a run key is matched on the
    entry's name, so only that entry is read.
    """
    if run_key is not None and not RUN_KEY_PATTERN.match(run_key):
        raise ValueError(f"parameter 'run_key': {run_key!r} is not a run key (expected like 20240901T000000-1a2b3c4d)")
    for uri in _entry_uris(store, model):
        if run_key is not None and StoreLayout.is_history_entry_of(uri, run_key):
            return GateResult.from_dict(store.read_json(uri))
        if dag_run_id is not None:
            result = GateResult.from_dict(store.read_json(uri))
            if result.dag_run_id == dag_run_id:
                return result
    return None
