"""The gating report: what the person on call reads, as self-contained HTML and as JSON.

The verdict comes first; right under it, a champion that could not be scored (its missing
columns) or that fails its own bars (which, its values, what the policy did); then the failing
reasons, every check (its reason on a line under its row, so the table fits a 1280 px screen),
the metrics of every model on the same test rows, the data summary and the lineage. The report is written to the run's
folder in the artifact store, logged to the challenger's MLflow run, and the model's
``latest.json`` pointer is updated for ``python -m ml_tasks status`` (by real runs, not dry
runs), and a history entry is added for the gate results view in the Airflow UI and the run
notes (:mod:`ml_tasks.reporting.gate_results`).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ml_tasks.core.manifests import (
    BacktestManifest,
    EvaluationManifest,
    GateManifest,
    RegistrationManifest,
    ReportManifest,
    RunPlan,
    SampleManifest,
    SplitManifest,
    ValidationManifest,
)
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import ModelSpec
from ml_tasks.io.store import ArtifactStore
from ml_tasks.reporting import gate_results
from ml_tasks.reporting.champion import champion_health, champion_inputs_note
from ml_tasks.reporting.gate_results import GateResult

METRICS = ["roc_auc", "pr_auc", "log_loss", "brier", "ece"]
#: The multiplicity rule of a check (``GateCheck.rule``), named and explained under the checks table.
RULES = {"intersection_union": "intersection–union", "bonferroni": "Bonferroni", "holm": "Holm"}
RULE_REASONS = {
    "intersection_union": "the promotion tests. The gate promotes only if every one of them passes, so each is "
                          "judged at alpha on its own: the chance of a false promotion is already at most alpha, and "
                          "an adjustment would only cost power.",
    "bonferroni": "the slice harm checks. Any one harmed slice fails the gate, so each of the k tested slices is "
                  "tested at alpha / k; the adjusted p is min(1, k p), compared with alpha.",
    "holm": "the promotion tests of a gate of an earlier release, Holm-adjusted together.",
}


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def build_report(
    plan: RunPlan, validation: ValidationManifest, sample: SampleManifest,
    split: SplitManifest, evaluation: EvaluationManifest, gate: GateManifest, registration: RegistrationManifest,
    backtest: BacktestManifest | None = None, spec: ModelSpec | None = None,
    calibration: dict | None = None, reliability_png: bytes | None = None, drift: dict | None = None,
    test_reliability_png: bytes | None = None, section_warnings: list[str] | None = None,
    shadow: dict | None = None, approval: dict | None = None,
) -> dict:
    """The report's content as one JSON-safe dict (charts as PNG data URIs). Pure.

    ``section_warnings`` name the optional sections that could not be built, and why; ``shadow``
    is the latest scoring run's shadow model against the champion on matured rows
    (:func:`ml_tasks.scoring.shadow.compare_shadow`); ``approval`` is the spec's ``promotion``
    holding the verdict for a person (``{"state": "pending", …}``), or the decision's
    :class:`~ml_tasks.core.manifests.ApprovalManifest` once made.
    """
    from ml_tasks.reporting.charts import intervals_png

    gate_content = gate.to_xcom()
    return {
        "verdict": gate.verdict,
        "failing": gate.failing_reasons,
        "plan": plan.to_xcom(), "snapshot": validation.snapshot.to_xcom(), "validation": validation.to_xcom(),
        "sample": sample.to_xcom(), "split": split.to_xcom(), "evaluation": evaluation.to_xcom(),
        "gate": gate_content, "gate_chart": _data_uri(intervals_png(gate_content["checks"])),
        "champion_health": champion_health(evaluation, gate, registration),
        "champion_inputs": champion_inputs_note(evaluation, spec),
        "registration": registration.to_xcom(),
        "approval": approval,
        "backtest": _backtest_section(backtest, gate.challenger, spec) if backtest else None,
        "calibration": _calibration_section(calibration, reliability_png) if calibration else None,
        "drift": drift,
        "shadow": shadow,
        "test_reliability_chart": _data_uri(test_reliability_png),
        "section_warnings": list(section_warnings or []),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _data_uri(png: bytes | None) -> str | None:
    from ml_tasks.reporting.charts import as_data_uri

    return as_data_uri(png) if png else None


def _calibration_section(calibration: dict, reliability_png: bytes | None) -> dict:
    from ml_tasks.reporting.charts import as_data_uri

    return {**calibration, "reliability_chart": as_data_uri(reliability_png) if reliability_png else None}


def _backtest_section(backtest: BacktestManifest, challenger: str, spec: ModelSpec | None) -> dict:
    """Per-fold metrics of the challenger and the champion's recipe, and the challenger's staleness."""
    from ml_tasks.core.columns import CHAMPION
    from ml_tasks.data.folds import cron_interval_days
    from ml_tasks.reporting.charts import as_data_uri, fold_chart_png, staleness_png

    shown = {name: folds for name, folds in backtest.per_fold.items() if name in (challenger, CHAMPION)}
    curve = backtest.staleness.get(challenger)
    schedule_days = cron_interval_days(spec.schedule) if spec else None
    return {
        **backtest.to_xcom(), "challenger": challenger, "shown": shown,
        "schedule": spec.schedule if spec else None, "schedule_days": schedule_days,
        "curve": curve,
        "fold_chart": as_data_uri(fold_chart_png(backtest.per_fold, backtest.metric, highlight=challenger)),
        "staleness_chart": as_data_uri(staleness_png(curve, backtest.metric, schedule_days)) if curve else None,
    }


def render_html(content: dict, templates_dir: Path, alpha: float) -> str:
    environment = Environment(loader=FileSystemLoader(templates_dir), autoescape=select_autoescape(["html", "j2"]),
                              undefined=StrictUndefined)
    return environment.get_template("report.html.j2").render(**content, metric_names=METRICS, fmt=_fmt, alpha=alpha,
                                                            rules=RULES, rule_reasons=RULE_REASONS)


def write_report(
    content: dict, plan: RunPlan, store: ArtifactStore, settings: Settings, mlflow_run_id: str | None, alpha: float,
) -> ReportManifest:
    html_uri, json_uri = plan.artifacts.report_html, plan.artifacts.report_json
    html = render_html(content, settings.include_dir / "templates", alpha)
    store.write_text(html_uri, html)
    store.write_json(json_uri, content)
    registration = content["registration"]
    manifest = ReportManifest(verdict=content["verdict"], html_uri=html_uri, json_uri=json_uri,
                              champion_version=registration["champion_version"], run_key=plan.run_key)
    experiment_id = _log_to_mlflow(settings, mlflow_run_id, html, content) if mlflow_run_id else None
    # One record for `status`, the run note and the on-call view: the latest, and the history.
    # A dry run is history only: `latest` keeps pointing at the last real run.
    result = gate_result_of(content, manifest, plan, mlflow_run_id, experiment_id)
    if not plan.dry_run:
        store.write_json(store.layout.latest_report(plan.model), result.to_dict())
    gate_results.record(store, result)
    return manifest


def gate_result_of(content: dict, manifest: ReportManifest, plan: RunPlan, mlflow_run_id: str | None,
                   mlflow_experiment_id: str | None = None) -> GateResult:
    """The one-line history entry of a report, for the on-call view. Pure."""
    return GateResult(
        model=plan.model, run_key=plan.run_key, verdict=manifest.verdict, written_at=content["generated_at"],
        as_of=plan.as_of.isoformat(), challenger=content["gate"]["challenger"],
        champion_version=manifest.champion_version, dag_run_id=plan.dag_run_id, dry_run=plan.dry_run,
        html_uri=manifest.html_uri, json_uri=manifest.json_uri, mlflow_run_id=mlflow_run_id,
        mlflow_experiment_id=mlflow_experiment_id, failing=list(content.get("failing") or []),
        trigger=plan.trigger, approval=_approval_summary(content.get("approval")),
    )


def _approval_summary(approval: dict | None) -> dict | None:
    """The approval as the history keeps it: state (pending, approved, rejected, timed_out), who, why."""
    if not approval:
        return None
    if approval.get("state") == "pending":
        return {"state": "pending", "promotion": approval.get("promotion")}
    return {"state": approval["decision"], "by": approval.get("by"), "reason": approval.get("reason"),
            "at": approval.get("at"), "version": (approval.get("registration") or {}).get("version")}


def _log_to_mlflow(settings: Settings, run_id: str, html: str, content: dict) -> str:
    """Attach the report to the challenger's run; returns the run's experiment id, recorded so the
    UI's link to the run needs no MLflow call when clicked."""
    from ml_tasks.registry.tracking import use_store

    mlflow_client = use_store(settings)
    with tempfile.TemporaryDirectory(prefix="refit-report-") as folder:
        path = Path(folder) / "gating_report.html"
        path.write_text(html)
        mlflow_client.log_artifact(run_id, str(path), artifact_path="report")
    mlflow_client.log_dict(run_id, content, "report/gating_report.json")
    mlflow_client.set_tag(run_id, "refit.verdict", content["verdict"])
    return mlflow_client.get_run(run_id).info.experiment_id
