"""A promotion the spec holds for a person (``promotion``): nothing is registered until someone
approves; an approval promotes through the locked path with who and why on the version; a
rejection or a timeout leaves the champion alone; a retry of the same answer changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ml_tasks.core.manifests import GateCheck, ModelRef, RegistrationManifest
from ml_tasks.core.spec import approval_needed
from ml_tasks.registry.approval import ApprovalAnswer, approval_form, decide, pending_approval
from ml_tasks.registry.versions import RegistryActionError, promote_run, register_challenger
from tests.faults.test_registry import (
    SNAPSHOT,
    first_champion,  # noqa: F401 (a fixture)
    logged_model,
    passed_gate,
    plan_of,
    registry_state,
)

RUN_KEY = "20240601T000000-cccccccc"
REASON = "recall trade-off accepted for the campaign"


def failed_check(reason: str) -> GateCheck:
    return GateCheck(name="threshold:roc_auc:min", metric="roc_auc", challenger=0.74, reference=None,
                     difference=None, ci_low=None, ci_high=None, p_value=None, threshold=0.99, passed=False,
                     reason=reason)


@pytest.fixture
def held(refit_home, demo_spec, first_champion):  # noqa: F811 (the fixture imported above)
    """A FAIL of a spec with ``promotion: approve_on_fail``, registered (held) but not decided."""
    spec = demo_spec.model_copy(update={"promotion": "approve_on_fail"})
    gate = passed_gate(logged_model(refit_home, seed=2), refit_home).model_copy(
        update={"verdict": "FAIL", "checks": [failed_check("roc_auc 0.7400 misses the spec's min >= 0.99")]})
    plan = plan_of(RUN_KEY, refit_home)
    registration = register_challenger(spec, plan, gate, SNAPSHOT, "report.html", refit_home,
                                       hold=approval_needed(spec.promotion, gate.verdict))
    return spec, plan, gate, registration


def answer(chosen: str, by: str | None, reason: str = "") -> ApprovalAnswer:
    return ApprovalAnswer(chosen=chosen, reason=reason, by=by, by_id=by, at="2024-06-02T09:30:00+00:00")


@pytest.mark.parametrize(("promotion", "verdict", "dry_run", "needed"), [
    ("auto", "FAIL", False, False), ("auto", "PASS", False, False),
    ("approve_on_fail", "FAIL", False, True), ("approve_on_fail", "PASS", False, False),
    ("always_approve", "PASS", False, True), ("always_approve", "FAIL", False, True),
    ("always_approve", "FAIL", True, False),
])
def test_which_verdicts_wait_for_a_person(promotion, verdict, dry_run, needed):
    assert approval_needed(promotion, verdict, dry_run) is needed


def test_a_held_fail_registers_nothing_until_approved_then_names_who_and_why(refit_home, held):
    spec, plan, gate, registration = held
    assert (registration.action, registration.version, registration.champion_version) == (
        "awaiting_approval", None, "1")
    assert registry_state(refit_home)[0] == {"champion": "1"} and len(registry_state(refit_home)[1]) == 1

    approval = decide(spec, plan, gate, registration, SNAPSHOT, "report.html", answer("Approve", "alice", REASON),
                      refit_home)

    assert (approval.decision, approval.by, approval.reason, approval.verdict) == ("approved", "alice", REASON, "FAIL")
    assert (approval.registration.action, approval.registration.version) == ("approved", "2")
    aliases, found = registry_state(refit_home)
    assert aliases == {"champion": "2", "previous": "1"}
    tags = found[1]
    assert (tags["refit.approved_by"], tags["refit.approval_reason"]) == ("alice", REASON)
    assert tags["refit.verdict"] == "FAIL" and tags["refit.run_key"] == RUN_KEY
    assert tags["refit.registration"] == "complete"

    # The same answer again (a retried task): no second version, no second history entry.
    again = decide(spec, plan, gate, registration, SNAPSHOT, "report.html", answer("Approve", "alice", REASON),
                   refit_home)
    assert again.registration.action == "already_registered"
    aliases, found = registry_state(refit_home)
    assert aliases == {"champion": "2", "previous": "1"} and len(found) == 2
    assert sorted(tag for tag in found[1] if tag.startswith("refit.approval.")) == ["refit.approval.1"]


def test_a_rejection_a_timeout_or_an_approval_without_a_reason_leaves_the_champion(refit_home, held):
    spec, plan, gate, registration = held
    for by, decision, reason in (("bob", "rejected", "holiday traffic: not now"),
                                 (None, "timed_out", "no answer within 24 h")):
        given = answer("Reject", by, reason if by else "")

        approval = decide(spec, plan, gate, registration, SNAPSHOT, "report.html", given, refit_home)

        assert (approval.decision, approval.by, approval.reason) == (decision, by, reason)
        assert approval.registration.action == "rejected" and approval.registration.champion_version == "1"
    for reason in ("", "ok"):
        with pytest.raises(RegistryActionError, match="parameter 'reason'"):
            decide(spec, plan, gate, registration, SNAPSHOT, "report.html", answer("Approve", "alice", reason),
                   refit_home)
    aliases, found = registry_state(refit_home)
    assert aliases == {"champion": "1"} and len(found) == 1


def test_only_the_specs_approvers_may_approve_and_anyone_else_moves_nothing(refit_home, held):
    spec, plan, gate, registration = held
    spec = spec.model_copy(update={"approvers": ["alice"]})

    refused = r"user 'mallory' / 'mallory' may not promote model 'credit_default': it takes promotions and " \
              r"approvals only from its approvers \['alice'\]"
    with pytest.raises(RegistryActionError, match=refused):
        decide(spec, plan, gate, registration, SNAPSHOT, "report.html", answer("Approve", "mallory", REASON),
               refit_home)
    assert registry_state(refit_home)[0] == {"champion": "1"} and len(registry_state(refit_home)[1]) == 1
    # A rejection or a timeout promotes nothing, so it needs no approver.
    assert decide(spec, plan, gate, registration, SNAPSHOT, "report.html", answer("Reject", None),
                  refit_home).decision == "timed_out"

    # Nor can anyone else promote the run by hand (the registry DAG's promote knows the user's name).
    with pytest.raises(RegistryActionError, match=r"user 'mallory' may not promote model 'credit_default'"):
        promote_run(spec, plan, gate, SNAPSHOT, "report.html", REASON, "mallory", refit_home)
    assert registry_state(refit_home)[0] == {"champion": "1"} and len(registry_state(refit_home)[1]) == 1

    approval = decide(spec, plan, gate, registration, SNAPSHOT, "report.html", answer("Approve", "alice", REASON),
                      refit_home)
    assert (approval.decision, approval.registration.version) == ("approved", "2")


def test_an_interval_whose_approval_completed_is_not_held_again(refit_home, held):
    spec, plan, gate, registration = held
    decide(spec, plan, gate, registration, SNAPSHOT, "report.html", answer("Approve", "alice", REASON), refit_home)

    rerun = register_challenger(spec, plan, gate, SNAPSHOT, "report.html", refit_home, hold=True)

    assert (rerun.action, rerun.version, rerun.champion_version) == ("already_registered", "2", "2")


def test_always_approve_holds_a_pass_too(refit_home, demo_spec):
    spec = demo_spec.model_copy(update={"promotion": "always_approve"})
    gate = passed_gate(logged_model(refit_home, seed=1), refit_home)
    plan = plan_of(RUN_KEY, refit_home)

    held = register_challenger(spec, plan, gate, SNAPSHOT, "report.html", refit_home,
                               hold=approval_needed(spec.promotion, gate.verdict))
    assert (held.action, held.champion_version) == ("awaiting_approval", None)
    approval = decide(spec, plan, gate, held, SNAPSHOT, "report.html", answer("Approve", "carol", REASON), refit_home)

    assert approval.registration.action == "approved"
    aliases, found = registry_state(refit_home)
    assert aliases == {"champion": "1"} and found[0]["refit.verdict"] == "PASS"
    assert found[0]["refit.approved_by"] == "carol"


def held_without_a_registry(demo_spec, settings):
    """What ``held`` gives, without the registry: for what reads only the manifests."""
    spec = demo_spec.model_copy(update={"promotion": "approve_on_fail"})
    model = ModelRef(candidate="logistic_baseline", run_id="run-2", model_uri="models:/m-2")
    gate = passed_gate(model, settings).model_copy(
        update={"verdict": "FAIL", "checks": [failed_check("roc_auc 0.7400 misses the spec's min >= 0.99")]})
    registration = RegistrationManifest(registry_name="credit_default", action="awaiting_approval", version=None,
                                        champion_version="1", previous_version=None)
    return spec, plan_of(RUN_KEY, settings), gate, registration


def test_the_form_shows_the_verdict_the_failing_reasons_and_the_report_link(refit_home, demo_spec):
    spec, plan, gate, registration = held_without_a_registry(demo_spec, refit_home)
    now = datetime(2024, 6, 2, 8, 0, tzinfo=UTC)

    form = approval_form(spec, plan, gate, registration, "/store/run/report.html", "/refit/runs/retrain_x/run_1",
                         now=now)

    assert form is not None
    assert form["subject"] == "Promote credit_default's challenger logistic_baseline? Gate FAIL, as of 2024-03-01"
    body = form["body"]
    assert body.startswith("**FAIL** · `credit_default` · as of 2024-03-01 · challenger `logistic_baseline` · "
                           "champion v1")
    assert "- roc_auc 0.7400 misses the spec's min >= 0.99" in body
    assert "[Open the gating report](/refit/runs/retrain_x/run_1)" in body and "/store/run/report.html" in body
    assert "champion v1 stays" in body and "No answer by 2024-06-03 08:00 UTC counts as a rejection." in body
    assert pending_approval(spec, registration) == {"state": "pending", "promotion": "approve_on_fail",
                                                    "timeout_hours": 24.0, "approvers": []}
    assert "may answer" not in body
    named = spec.model_copy(update={"approvers": ["alice", "7"]})
    assert "Only alice, 7 may answer (the spec's `approvers`)." in approval_form(
        named, plan, gate, registration, "report.html", now=now)["body"]


def test_nothing_is_asked_when_the_registration_waits_for_no_one(refit_home, demo_spec):
    spec, plan, gate, _ = held_without_a_registry(demo_spec, refit_home)
    registered = RegistrationManifest(registry_name="credit_default", action="registered", version="2",
                                      champion_version="2", previous_version="1")
    assert approval_form(spec, plan, gate, registered, "report.html") is None
    assert pending_approval(spec, registered) is None
    with pytest.raises(RegistryActionError, match="not waiting for an approval"):
        decide(spec, plan, gate, registered, SNAPSHOT, "report.html", answer("Approve", "alice", REASON), refit_home)


def test_an_answer_that_is_not_an_option_is_refused():
    with pytest.raises(RegistryActionError, match="expected one of"):
        ApprovalAnswer.from_dict({"chosen": "Maybe", "by": "alice"})
    assert ApprovalAnswer.from_dict({"chosen": "Reject", "by": None, "reason": None}).decision == "timed_out"


def test_the_pipeline_holds_a_fail_then_records_the_answer_in_the_run_and_its_report(refit_home, tiny_warehouse_url,
                                                                                   tmp_path, monkeypatch):
    """The stages as the DAG calls them, without Airflow: register holds, the report says so, and
    apply_approval promotes, writes approval.json and the report, and a retry changes nothing."""
    import shutil

    import yaml

    from ml_tasks import pipeline
    from ml_tasks.io.store import store_from_settings
    from tests.conftest import DEMO_SPEC

    include = tmp_path / "include"
    shutil.copytree(DEMO_SPEC.parents[1], include)
    spec_file = include / "models" / DEMO_SPEC.name
    raw = yaml.safe_load(spec_file.read_text())
    raw["acceptance"]["thresholds"]["roc_auc"] = {"min": 0.99}  # no model gets there: a FAIL
    raw["backtest"].update(folds=2, staleness_periods=0)
    spec_file.write_text(yaml.safe_dump({**raw, "promotion": "approve_on_fail"}))
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)
    monkeypatch.setenv("REFIT_INCLUDE_DIR", str(include))

    reported = pipeline.run_all(str(spec_file), "2024-03-01", sample_size=2_000, candidates=["logistic_baseline"])

    store = store_from_settings(refit_home)
    run = store.layout.run("credit_default", reported["run_key"])
    plan, validation, gate, held = (store.read_json(run.manifest(stage))
                                    for stage in ("plan", "validation", "gate", "registration"))
    assert (reported["verdict"], held["action"]) == ("FAIL", "awaiting_approval")
    report_html = store.read_text(f"{plan['run_prefix']}/report.html")
    assert 'id="approval" data-state="pending"' in report_html and "Awaiting approval" in report_html
    assert pipeline.approval_form(plan, gate, held, reported) is not None

    answer = {"chosen": "Approve", "reason": REASON, "by": "alice", "by_id": "alice", "at": "2024-03-02T08:00:00+00:00"}
    first = pipeline.apply_approval(plan, validation, gate, held, answer)
    again = pipeline.apply_approval(plan, validation, gate, held, answer)  # a retried task

    assert first == again and (first["action"], first["version"]) == ("approved", "1")
    approval = store.read_json(run.manifest("approval"))
    assert (approval["decision"], approval["by"], approval["reason"]) == ("approved", "alice", REASON)
    report_html = store.read_text(f"{plan['run_prefix']}/report.html")
    assert 'data-state="approved"' in report_html and '<b id="approved-by">alice</b>' in report_html
    latest = store.read_json(store.layout.latest_report("credit_default"))
    assert latest["champion_version"] == "1" and latest["approval"]["state"] == "approved"
    assert registry_state(refit_home)[0] == {"champion": "1"}
    # A registration that waited for no one passes through untouched.
    assert pipeline.apply_approval(plan, validation, gate, first, None) == first
