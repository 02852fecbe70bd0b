"""The champion's own health in the report and the notifications (issue 15, problem 3): a
champion that fails its bars is told on every verdict, with its values and what became of it,
and a champion that cannot be scored is named with its missing columns."""

from __future__ import annotations

from ml_tasks.core.manifests import (
    EvaluationManifest,
    GateCheck,
    GateManifest,
    ModelRef,
    ModelScores,
    RegistrationManifest,
)
from ml_tasks.reporting.champion import bar_text, champion_health
from ml_tasks.reporting.notify import report_notifications

MODEL = "loan_approval"
REPORT_URI = "runs/loan_approval/x/report.html"


def bar(metric: str, kind: str, value: float, limit: float) -> GateCheck:
    passed = value >= limit if kind == "min" else value <= limit
    return GateCheck(name=f"champion_health:{metric}:{kind}", metric=metric, challenger=value, reference=None,
                     difference=None, ci_low=None, ci_high=None, p_value=None, threshold=limit, passed=passed,
                     reason=f"champion v1's {metric} {value:.4f} {'meets' if passed else 'misses'} the spec's {kind}")


def manifests(verdict: str, action: str, health: list[GateCheck], policy: str | None = "alert",
              **evaluation_fields) -> tuple[EvaluationManifest, GateManifest, RegistrationManifest]:
    ref = ModelRef(candidate="lightgbm", run_id="r", model_uri="m")
    champion = evaluation_fields.pop("champion", ModelScores(name="champion v1", metrics={"roc_auc": 0.56}))
    evaluation = EvaluationManifest(challenger="lightgbm", candidates=[], champion=champion, champion_version="1",
                                    predictions_uri="p", test_rows=3000, uri="e", models={"lightgbm": ref},
                                    **evaluation_fields)
    degraded = any(not c.passed for c in health)
    gate = GateManifest(verdict=verdict, champion_version="1", checks=[], uri="g", challenger_model=ref,
                        champion_health=health, degraded_champion_policy=policy if degraded else None,
                        champion_note="champion v1 fails its own bars on these test rows: ..." if degraded else None)
    registration = RegistrationManifest(registry_name=MODEL, action=action,
                                        version="2" if action == "registered" else None,
                                        champion_version="2" if action == "registered" else "1", previous_version=None)
    return evaluation, gate, registration


def report_of(evaluation: EvaluationManifest, gate: GateManifest, registration: RegistrationManifest) -> dict:
    """The parts of the report's content the notifications read."""
    return {"verdict": gate.verdict, "failing": gate.failing_reasons, "gate": gate.to_xcom(),
            "evaluation": evaluation.to_xcom(), "champion_health": champion_health(evaluation, gate, registration)}


COLLAPSED = [bar("roc_auc", "min", 0.56, 0.70), bar("brier", "max", 0.485, 0.08), bar("ece", "max", 0.01, 0.05)]


def test_a_bar_reads_as_the_value_its_relation_and_the_limit():
    assert [bar_text(c) for c in COLLAPSED] == ["roc_auc 0.5600 < 0.7", "brier 0.4850 > 0.08", "ece 0.0100 <= 0.05"]


def test_a_collapsed_champion_is_told_before_the_failed_gate_with_its_values_and_that_it_stays():
    report = report_of(*manifests("FAIL", "skipped_failed_gate", COLLAPSED))

    health = report["champion_health"]
    assert health["degraded"] and health["failing"] == ["roc_auc 0.5600 < 0.7", "brier 0.4850 > 0.08"]
    told = report_notifications(MODEL, report, "scheduled__1", REPORT_URI)
    assert [n.kind for n in told] == ["champion_degraded", "gate_failed"]
    assert told[0].summary == (f"{MODEL}: champion v1 fails its own bars: roc_auc 0.5600 < 0.7, brier 0.4850 > 0.08; "
                               "policy alert: challenger lightgbm not promoted, so champion v1 stays champion")
    assert told[0].reasons[:2] == [COLLAPSED[0].reason, COLLAPSED[1].reason]
    assert told[0].reasons[-1].startswith("champion v1 fails its own bars")
    assert "champion v1 unchanged although it fails its own bars: roc_auc 0.5600 < 0.7" in told[1].summary
    assert all(n.report_uri == REPORT_URI for n in told)


def test_a_collapsed_champion_replaced_by_a_passing_challenger_is_still_told():
    report = report_of(*manifests("PASS", "registered", COLLAPSED, policy="replace_if_better"))

    [told] = report_notifications(MODEL, report, None, REPORT_URI)

    assert told.kind == "champion_degraded"
    assert told.summary.endswith("policy replace_if_better: challenger lightgbm replaces it as v2")


def test_a_healthy_champion_tells_nothing_on_pass_and_only_the_gate_on_fail():
    healthy = [bar("roc_auc", "min", 0.81, 0.70)]

    assert report_notifications(MODEL, report_of(*manifests("PASS", "registered", healthy)), None, REPORT_URI) == []
    [told] = report_notifications(MODEL, report_of(*manifests("FAIL", "skipped_failed_gate", healthy)), None,
                                  REPORT_URI)
    assert told.kind == "gate_failed" and told.summary.endswith("champion unchanged")


def test_a_champion_that_cannot_be_scored_is_named_with_its_missing_columns_in_the_failed_gate():
    evaluation, gate, registration = manifests(
        "FAIL", "skipped_failed_gate", [], champion=None, champion_missing_columns=["salary", "tenure"],
        champion_error="champion v1 (models:/loan_approval/1) cannot score the test rows")
    report = report_of(evaluation, gate, registration)

    assert report["champion_health"] is None
    [told] = report_notifications(MODEL, report, None, REPORT_URI)
    assert told.kind == "gate_failed"
    assert told.summary.endswith("champion v1 unchanged but cannot score the test rows: missing column(s) "
                                 "['salary', 'tenure']")
