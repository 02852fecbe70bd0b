"""Typed manifests that stages hand to each other.

A manifest is small (URIs, counts, hashes, metrics): it travels through Airflow's XCom as a
JSON dict and is also written next to the stage's output, so any stage can be re-run alone
from the CLI. Data frames never travel in a manifest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from ml_tasks.core.artifacts import RunArtifacts, ScoringArtifacts


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_xcom(self) -> dict[str, Any]:
        """A JSON-safe dict for XCom."""
        return self.model_dump(mode="json")


#: The ``dag_run_id`` of a run started from the command line without ``--dag-run-id``.
CLI_RUN_ID = "cli"


class RunPlan(Manifest):
    """What one retraining run does, resolved from the spec, the trigger and its params."""

    model: str
    spec_path: str
    spec_hash: str
    as_of: datetime
    window_start: datetime
    sample_size: int
    candidates: list[str]
    dry_run: bool
    #: The Airflow DAG run, or :data:`CLI_RUN_ID` for a run started from the command line.
    dag_run_id: str
    run_key: str
    run_prefix: str
    #: What started the run when a monitor's retrain trigger did (its fired triggers' reasons);
    #: None for a cron or manual run. Not part of the run key: a triggered run of an interval is that interval's run.
    trigger: str | None = None

    @property
    def in_dag_run(self) -> bool:
        """Whether :attr:`dag_run_id` names one Airflow DAG run (the CLI's default names none: every
        command-line run shares it)."""
        return self.dag_run_id != CLI_RUN_ID

    @property
    def artifacts(self) -> RunArtifacts:
        """Where each of this run's artifacts lives (under :attr:`run_prefix`)."""
        return RunArtifacts(self.run_prefix)


class StreamExtract(Manifest):
    """What one source stream contributed to a snapshot."""

    name: str
    query_file: str
    weight: float
    params: dict[str, str]
    rows: int


class StrataCounts(Manifest):
    """Rows per stratum (``columns``' values, then the count), counted while extracting so the
    sampler needs only one pass over the snapshot."""

    columns: list[str]
    counts: list[list[Any]]


class SnapshotManifest(Manifest):
    model: str
    snapshot_id: str
    uri: str
    manifest_uri: str
    rows: int
    columns: dict[str, str]
    label_counts: dict[str, int]
    time_min: datetime
    time_max: datetime
    as_of: datetime
    window_start: datetime
    query_file: str
    params: dict[str, str]
    reused: bool
    #: Per-stream queries and row counts; the rows' stream is in the ``_stream`` column.
    streams: list[StreamExtract] = []
    #: Engine that read the warehouse (``adbc``, ``copy_csv`` or ``sqlalchemy``).
    engine: str = ""
    strata: StrataCounts | None = None
    #: Where the data waits until validation commits it to ``uri``; None once committed.
    staging_uri: str | None = None
    #: Size and SHA-256 (hex) of the Parquet file's bytes, taken when it was extracted and
    #: checked before a committed snapshot is reused. None in manifests written before snapshots
    #: carried a checksum: those are checked by reading the file's footer and row count.
    data_bytes: int | None = None
    data_sha256: str | None = None
    #: Why the snapshot already committed under this id could not be reused (the reason names the
    #: file), when this extraction replaces it; None for a first extraction or a reuse.
    replaces_corrupt: str | None = None


class CheckResult(Manifest):
    name: str
    passed: bool
    detail: str


class ValidationManifest(Manifest):
    snapshot_id: str
    #: The committed snapshot (validation passed), read by the stages after it.
    snapshot: SnapshotManifest
    rows: int
    checks: list[CheckResult]
    warnings: list[str]
    uri: str


class SampleManifest(Manifest):
    uri: str
    rows: int
    population_rows: int
    seed: int
    strata: dict[str, dict[str, float]]
    label_rate_sample: float
    label_rate_reweighted: float
    #: Per stream: target weight, rows drawn for it by the multinomial draw, rows realised.
    stream_mix: dict[str, dict[str, float]] = {}
    importance_weight: str | None = None
    #: Largest number of rows the sampler held at once (bounded by the sample, not the snapshot).
    peak_buffer_rows: int = 0


class SplitPart(Manifest):
    uri: str
    rows: int
    positives: int
    time_min: datetime
    time_max: datetime


class SplitManifest(Manifest):
    train: SplitPart
    validation: SplitPart
    test: SplitPart
    #: Leakage the spec allows but the report must show.
    warnings: list[str] = []
    uri: str


class TrainResult(Manifest):
    candidate: str
    family: str
    mlflow_run_id: str
    model_uri: str
    validation_metrics: dict[str, float]
    train_rows: int
    fit_seconds: float
    reused: bool
    #: The parameters the tuning budget chose, the trials it spent, and the learning curve
    #: ([training rows, validation score of the selection metric]).
    params: dict[str, Any] = {}
    trials: int = 1
    learning_curve: list[list[float]] = []
    #: "stateless", or what warm start did ("continued from champion v3", "... trained from scratch").
    warm_start: str = "stateless"
    #: The calibration method chosen, its held-out metrics per method, and the reliability diagram.
    calibration: dict[str, Any] = {}


class FoldResult(Manifest):
    """One candidate (or the champion's recipe) on one backtest fold."""

    candidate: str
    fold: int
    family: str
    train_start: datetime
    cutoff: datetime
    test_start: datetime
    test_end: datetime
    train_rows: int
    test_rows: int
    #: Test rows left out because their entity was in the fold's training rows (entity_disjoint).
    dropped_entity_rows: int = 0
    #: For the champion's recipe: the registered version it came from.
    recipe_version: str | None = None
    #: Metrics per model age in periods: "0" is the fold's own test window, "1".. the later ones.
    metrics_by_age: dict[str, dict[str, float]]
    reused: bool


class BacktestManifest(Manifest):
    folds: int
    metric: str
    #: candidate -> fold -> metric -> value (age 0).
    per_fold: dict[str, dict[str, dict[str, float]]]
    #: candidate -> staleness curve (points, recommended interval, summary).
    staleness: dict[str, dict[str, Any]]
    champion_recipe_version: str | None = None
    uri: str


class ModelScores(Manifest):
    name: str
    metrics: dict[str, float]


class ModelRef(Manifest):
    """A trained candidate as MLflow holds it: what registration turns into a model version."""

    candidate: str
    run_id: str
    model_uri: str


class EvaluationManifest(Manifest):
    #: The candidate that won on validation: the gate's first choice.
    challenger: str
    candidates: list[ModelScores]
    champion: ModelScores | None
    champion_version: str | None
    predictions_uri: str
    test_rows: int
    uri: str
    #: Per model (candidate name, or ``p_champion``): latency_ms_per_1k and size_mb.
    serving_costs: dict[str, dict[str, float]] = {}
    #: Why the registered champion is not compared with (it was trained by this very run).
    champion_note: str | None = None
    #: The columns the champion was scored on: the inputs of its own MLflow signature, which may
    #: differ from this spec's features (a feature added or dropped since it was trained).
    champion_columns: list[str] = []
    #: Why the registered champion (``champion_version``) could not be scored on the test rows, and
    #: the signature columns the rows lack; ``champion`` is then None and the run must not promote.
    champion_error: str | None = None
    champion_missing_columns: list[str] = []
    #: Every candidate's MLflow run and model, by candidate name: the gate may put the baseline
    #: forward instead of the challenger.
    models: dict[str, ModelRef]

    @model_validator(mode="before")
    @classmethod
    def _earlier_release(cls, data: Any) -> Any:
        """Read an evaluation.json of an earlier release (the winner's run and model as two
        fields, ``models`` without names), so its runs can still be gated and promoted."""
        if not isinstance(data, dict) or "challenger_run_id" not in data:
            return data
        data = dict(data)
        run_id, model_uri = data.pop("challenger_run_id"), data.pop("challenger_model_uri", None)
        models = {name: {"candidate": name, **ref} for name, ref in (data.get("models") or {}).items()}
        models.setdefault(data.get("challenger"), {"candidate": data.get("challenger"), "run_id": run_id,
                                                   "model_uri": model_uri})
        return {**data, "models": models}


class GateCheck(Manifest):
    """One line of the gate: enough to explain the outcome without opening anything else.

    ``challenger`` is the value checked: the challenger's metric, or for a ``champion_health``
    check the champion's own. ``passed`` says whether the check lets the challenger through
    (a ``waived`` bar does); ``reason`` says why, in words a reviewer reads.
    """

    name: str
    metric: str
    challenger: float
    reference: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    threshold: float | None
    passed: bool
    reason: str
    #: The p-value after its family's multiplicity adjustment: Bonferroni ``min(1, k p)`` for a
    #: harm check (k tested slices). None for the promotion family, which needs none
    #: (intersection-union: the raw ``p_value`` is judged at ``level``), and for non-tests. In a
    #: gate.json of an earlier release: the Holm-adjusted p of the promotion family (``rule`` "holm").
    p_adjusted: float | None = None
    #: The test behind the p-value (DeLong, paired bootstrap, McNemar, sign test, ...).
    test: str | None = None
    #: Which family the p-value belongs to: "promotion" (evidence that the challenger may replace
    #: the reference: every one must pass), "harm" (per-slice guards: any one harmed slice fails
    #: the gate), or None for a check that is not a hypothesis test.
    family: Literal["promotion", "harm"] | None = None
    #: A test that also needs a condition besides its p-value (the backtest win fraction) records
    #: here whether that condition holds; the test fails when it does not.
    condition_met: bool = True
    #: The multiplicity rule the p-value was judged by: "intersection_union" (promotion family:
    #: each test at alpha on its own, since the gate promotes only if all pass), "bonferroni" (harm
    #: family: each slice at alpha / k), "holm" (the promotion family of a gate.json of an earlier
    #: release), or None for a check that is not a test.
    rule: Literal["intersection_union", "bonferroni", "holm"] | None = None
    #: The level the raw ``p_value`` was compared with (alpha, or alpha / k under Bonferroni).
    level: float | None = None
    #: Why a check is not an ordinary one: "insufficient_data" (too few positive or negative rows
    #: for a test: no p-value, fails closed), "not_informative" (tests nothing, e.g. fold wins of
    #: the champion's own recipe: passes), "waived" (an absolute bar the challenger misses, set
    #: aside under ``degraded_champion: replace_if_better``: passes), or None.
    status: Literal["insufficient_data", "not_informative", "waived"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _earlier_rule(cls, data: Any) -> Any:
        """A check of an earlier release's gate.json says which rule decided it: Holm across the
        promotion family (its ``p_adjusted``), Bonferroni across the slices."""
        if not isinstance(data, dict) or "rule" in data:
            return data
        if data.get("family") == "promotion" and data.get("p_adjusted") is not None:
            return {**data, "rule": "holm"}
        if data.get("family") == "harm":
            return {**data, "rule": "bonferroni"}
        return data


class GateManifest(Manifest):
    verdict: Literal["PASS", "FAIL"]
    champion_version: str | None
    checks: list[GateCheck]
    uri: str
    #: Per-slice comparison rows for the report, and a Simpson's-paradox warning if the slices disagree.
    slices: list[dict[str, Any]] = []
    simpson_warning: str | None = None
    #: The model put forward for registration: the challenger, or the baseline the gate fell back
    #: to. The one place registration (automatic or manual) and the report read it from.
    challenger_model: ModelRef
    #: The champion's health: the spec's absolute ``thresholds`` applied to the champion's own
    #: metrics on the same test rows (``EvaluationManifest.champion``), one check per bound, named
    #: ``champion_health:<metric>:<min|max>``, ``challenger`` holding the champion's value. Checked
    #: on every run with a champion, whatever the verdict; they never decide it themselves. Empty
    #: without a champion (and in a gate.json of an earlier release).
    champion_health: list[GateCheck] = []
    #: The spec's ``acceptance.degraded_champion`` policy, recorded when the champion fails a bar
    #: (None otherwise): "alert" (nothing else changed: the challenger had to clear every check) or
    #: "replace_if_better" (bars the challenger missed may have been waived: checks with status
    #: "waived", and ``champion_note`` says whether and why).
    degraded_champion_policy: Literal["alert", "replace_if_better"] | None = None
    #: One paragraph for the report's opening and the notification when the champion fails a bar:
    #: which bars (with the champion's values), the policy, and what it did. None otherwise.
    champion_note: str | None = None

    # mypy does not understand a decorator over @property; this is the form pydantic documents.
    @computed_field  # type: ignore[prop-decorator]
    @property
    def challenger(self) -> str:
        """The candidate put forward (``challenger_model.candidate``); in the JSON for its readers."""
        return self.challenger_model.candidate

    @computed_field  # type: ignore[prop-decorator]
    @property
    def champion_degraded(self) -> bool:
        """The champion fails at least one of its own absolute bars (a failed ``champion_health``
        check): the report opens with it and a notification goes out, whatever the verdict."""
        return any(not c.passed for c in self.champion_health)

    @property
    def waived(self) -> list[GateCheck]:
        """Bars the challenger misses that the degraded-champion policy set aside (status "waived")."""
        return [c for c in self.checks if c.status == "waived"]

    @model_validator(mode="before")
    @classmethod
    def _stored(cls, data: Any) -> Any:
        """Read a stored gate.json: ``challenger`` and ``champion_degraded`` are derived, not read
        back; a gate.json of an earlier release has the model put forward as two fields."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data.pop("champion_degraded", None)
        challenger = data.pop("challenger", None)
        if "challenger_model" not in data and "challenger_run_id" in data:
            data["challenger_model"] = {"candidate": challenger, "run_id": data.pop("challenger_run_id"),
                                        "model_uri": data.pop("challenger_model_uri", None)}
        return data

    @property
    def failing_reasons(self) -> list[str]:
        return [c.reason for c in self.checks if not c.passed]


class RegistrationManifest(Manifest):
    registry_name: str
    #: ``awaiting_approval``: the spec's ``promotion`` holds this verdict for a person (nothing
    #: registered yet); the approve task's answer then gives ``approved`` (registered and made
    #: champion) or ``rejected`` (a rejection or no answer in time: nothing registered).
    action: Literal["registered", "already_registered", "skipped_failed_gate", "skipped_dry_run",
                    "promoted_manually", "rolled_back", "awaiting_approval", "approved", "rejected"]
    version: str | None
    champion_version: str | None
    previous_version: str | None
    #: ``already_registered`` only: an earlier try of this same DAG run's register task registered
    #: the version and made it champion, which it still is (the try was lost after the alias
    #: moved, before it handed its result over), so the champion's Asset event is still due.
    champion_moved_by_this_run: bool = False


class ApprovalManifest(Manifest):
    """What became of a run the spec's ``promotion`` held for a person (``<run>/approval.json``)."""

    #: ``approved``: the gate's put-forward model was registered and made champion;
    #: ``rejected``: a person said no; ``timed_out``: nobody answered within
    #: ``approval_timeout_hours``. Either of the last two leaves the champion where it was.
    decision: Literal["approved", "rejected", "timed_out"]
    promotion: Literal["approve_on_fail", "always_approve"]
    verdict: Literal["PASS", "FAIL"]
    #: The candidate the gate put forward (what an approval promotes).
    challenger: str
    #: Who answered (the Airflow user's name); None when nobody did.
    by: str | None
    by_id: str | None = None
    reason: str
    #: When the answer (or the timeout) was recorded, ISO 8601.
    at: str | None
    registration: RegistrationManifest


class ReportManifest(Manifest):
    verdict: Literal["PASS", "FAIL"]
    html_uri: str
    json_uri: str
    champion_version: str | None
    run_key: str


class ScoringModel(Manifest):
    """A registered model version a scoring run scores with, pinned when the run was planned."""

    version: str
    #: ``models:/<registry_name>/<version>``: what any consumer of the registry loads.
    model_uri: str
    #: The retrain run that registered it (its ``refit.run_key`` tag), for lineage.
    trained_run_key: str | None = None
    #: That run's as-of (its ``refit.as_of`` tag): the rows before it have labels, on which the
    #: scoring query's features are checked against the training query's.
    trained_as_of: datetime | None = None


class ScoringPlan(Manifest):
    """One batch-scoring run: the interval, its run key, and the versions it scores with.

    The versions are resolved once, when the run is planned, so a retry scores with the same
    champion even if the alias moved in between, and tags its rows accordingly.
    """

    model: str
    registry_name: str
    spec_path: str
    as_of: datetime
    window_start: datetime
    #: ``<as_of>-<digest of the interval>``: the same interval always has the same key, so a
    #: re-run replaces its rows.
    run_key: str
    run_prefix: str
    dag_run_id: str
    destination: str
    champion: ScoringModel
    shadow: ScoringModel | None = None
    shadow_destination: str | None = None
    #: Why there is no shadow model although the spec asks for one (None otherwise).
    shadow_note: str | None = None

    @property
    def artifacts(self) -> ScoringArtifacts:
        return ScoringArtifacts(self.run_prefix)


class ScoredTable(Manifest):
    """The rows one model's scores replaced in one table."""

    table: str
    version: str
    rows: int
    #: Rows of the table the run removed before writing its own: earlier scores of the same
    #: interval (a re-run) or of the same ids (scored again in a later interval).
    replaced: int


class ScoringManifest(Manifest):
    """What a batch-scoring run wrote; recorded in the store and passed on through XCom."""

    model: str
    run_key: str
    as_of: datetime
    window_start: datetime
    rows: int
    served: ScoredTable
    shadow: ScoredTable | None = None
    shadow_note: str | None = None
    scored_at: datetime
    seconds: float
    #: Engine that read the warehouse (``adbc``, ``copy_csv`` or ``sqlalchemy``).
    engine: str
    uri: str
    #: The features check before scoring (:mod:`ml_tasks.scoring.parity`): its window, rows
    #: compared, or why it was skipped; None when ``scoring.check_features`` is false.
    feature_check: dict[str, Any] | None = None
