"""Approval in the Airflow UI: a spec's ``promotion`` holds a verdict in the retrain DAG's
``approve`` task until a person answers in the task's form (or the REST API), and the registry
follows the answer.

The real retrain DAG runs with ``airflow dags test`` in a background process, which keeps the
run alive while its approve task waits for input; the real api-server (the UI and the REST
API, with a logged-in user ``oncall``) shares its SQLite metadata database, so an answer given
there resumes the run. Headless Chromium answers through the task's Required Actions form.
The model is the demo spec, cut down to the baseline and two backtest folds on the tiny
warehouse; a strict ROC AUC bar in a variant of it makes a FAIL. Only ``oncall`` may approve
(the spec's ``approvers``); ``intern``, an admin too, is refused. The runs write their OpenLineage
events to a file, where ``apply_approval``'s event names the version it registered. The tests
run in order and build on the registry each leaves: approve a PASS over REST (v1), reject a FAIL
in the form (v1 stays), let a FAIL time out (v1 stays), approve a FAIL in the form (v2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from ml_tasks.core.settings import REPO_ROOT, Settings, ensure_local_folders, load_settings
from ml_tasks.io.store import store_from_settings
from refit_airflow.demo import airflow_binary, airflow_env, prepare_airflow
from tests.conftest import TINY_ROWS
from tests.e2e.real_services import AirflowApi

pytestmark = pytest.mark.e2e

MODEL = "credit_default"
DAG_ID = f"retrain_{MODEL}"
CONF = {"candidates": ["logistic_baseline"], "sample_size": 2_000}
RUN_TIMEOUT_S = 420
WAIT_S = 60
#: The Slack webhook connection (in the metadata database) the runs notify through, and its secret.
SLACK_CONN_ID, SLACK_TOKEN = "oncall_slack", "T0REFIT/B0APPROVE/HookSecret4"
#: An admin of the UI who is not among the spec's approvers.
OTHER_USER, OTHER_PASSWORD = "intern", "refit-ui-test-intern"


@dataclass(frozen=True)
class Home:
    settings: Settings
    spec_file: Path

    def edit_spec(self, **changes) -> None:
        """Change the spec; ``thresholds`` replaces the acceptance thresholds (a strict bar: a FAIL)."""
        spec = yaml.safe_load(self.spec_file.read_text())
        if "thresholds" in changes:
            spec["acceptance"]["thresholds"] = changes.pop("thresholds")
        spec.update(changes)
        self.spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture(scope="module")
def slack():
    """A local HTTP endpoint standing in for Slack's incoming webhook: its URL and what it received."""
    from tests.reporting.test_notify import http_receiver

    with http_receiver() as (base_url, posted, paths):
        yield base_url, posted, paths


@pytest.fixture(scope="module")
def home(tmp_path_factory, slack) -> Home:
    from ml_tasks.data.demo_warehouse import build_demo_warehouse

    root = tmp_path_factory.mktemp("approval")
    include = root / "include"
    shutil.copytree(REPO_ROOT / "include", include)
    spec_file = include / "models" / f"{MODEL}.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    for section in ("scoring", "monitoring"):  # no other DAG of this model is needed
        spec.pop(section)
    spec["backtest"].update(folds=2, staleness_periods=0)
    spec["acceptance"]["bootstrap_replicates"] = 200
    spec_file.write_text(yaml.safe_dump({**spec, "promotion": "always_approve", "approvers": ["oncall"]},
                                        sort_keys=False))
    settings = load_settings({"REFIT_HOME": str(root / "refit"), "REFIT_INCLUDE_DIR": str(include)})
    ensure_local_folders(settings)
    build_demo_warehouse(settings.warehouse_url, rows=TINY_ROWS, seed=11)
    prepare_airflow(settings)
    (settings.home / "openlineage").mkdir()  # the file transport writes into it, and creates no folder
    # The Slack connection lives in Airflow's metadata database, secret included: no environment
    # variable of the runs holds it (BackgroundRun names only its id).
    added = subprocess.run([airflow_binary(), "connections", "add", SLACK_CONN_ID, "--conn-type", "slackwebhook",
                            "--conn-host", f"{slack[0]}/services", "--conn-password", SLACK_TOKEN],
                           env=airflow_env(settings), capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stdout + added.stderr
    return Home(settings=settings, spec_file=spec_file)


@pytest.fixture(scope="module")
def server(home):
    from tests.e2e.airflow_ui import api_server

    with api_server(home.settings, other_users={OTHER_USER: OTHER_PASSWORD}) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server):
    from tests.e2e.airflow_ui import chromium
    from tests.e2e.ui_checks import log_in

    with chromium() as driver:
        log_in(driver, server)
        yield driver


class BackgroundRun:
    """``airflow dags test`` of the retrain DAG at one logical date, running while the test answers."""

    def __init__(self, home: Home, logical_date: str) -> None:
        self.logical_date = logical_date
        self.log = home.settings.home / "logs" / f"approval-{logical_date}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # OpenLineage's file transport: one JSON event a line, every run of the module appending.
        run_env = {"AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(lineage_file(home)), "append": True})}
        # Notifications through Airflow's Slack notifier: Refit's settings name the connection only.
        run_env |= {"REFIT_NOTIFY_CHANNELS": "log,slack", "REFIT_NOTIFY_SLACK_CONN_ID": SLACK_CONN_ID}
        with self.log.open("wb") as handle:
            self.process = subprocess.Popen(
                [airflow_binary(), "dags", "test", DAG_ID, logical_date, "--conf", json.dumps(CONF)],
                env={**airflow_env(home.settings), **run_env}, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.run_id: str | None = None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_until(self, what: str, probe, timeout: float = RUN_TIMEOUT_S):
        """Poll ``probe`` until it returns something; fail with the run's log if the run ends first."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if self.process.poll() is not None:
                raise AssertionError(f"{DAG_ID} at {self.logical_date} ended (code {self.process.returncode}) "
                                     f"before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {timeout:.0f}s\n{self.tail()}")
            time.sleep(1)

    def wait_for_question(self, server) -> dict:
        """The approve task's pending HITL detail (its task instance awaiting input)."""
        def pending() -> dict | None:
            listed = server.api.http.get(f"/dags/{DAG_ID}/dagRuns/~/hitlDetails", params={"limit": 100})
            listed.raise_for_status()
            for detail in listed.json()["hitl_details"]:
                ti = detail["task_instance"]
                if (ti["task_id"] == "approve" and (ti["logical_date"] or "").startswith(self.logical_date)
                        and ti["state"] == "awaiting_input" and not detail["response_received"]):
                    self.run_id = ti["dag_run_id"]
                    return detail
            return None

        return self.wait_until("the approve task asked", pending)

    def hitl_path(self) -> str:
        assert self.run_id is not None
        return f"/dags/{DAG_ID}/dagRuns/{quote(self.run_id, safe='')}/taskInstances/approve/-1/hitlDetails"

    def finish(self, server) -> dict:
        """Wait for ``dags test`` to end; the run (its state, note) as the REST API shows it."""
        try:
            code = self.process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"{DAG_ID} at {self.logical_date} still running:\n{self.tail()}") from None
        assert code == 0, self.tail()
        run = server.api.run(DAG_ID, quote(self.run_id or "", safe=""))
        assert run["state"] == "success", self.tail()
        return run

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def lineage_file(home: Home) -> Path:
    return home.settings.home / "openlineage" / "events.jsonl"


def approval_lineage(home: Home) -> list[list[tuple[str, str]]]:
    """The outputs (name, dataset version) of every ``apply_approval`` COMPLETE OpenLineage event,
    oldest first: one per run of the module, in the order the tests run them."""
    events = [json.loads(line) for line in lineage_file(home).read_text().splitlines()]
    return [[(d["name"], d["facets"]["version"]["datasetVersion"]) for d in e["outputs"]] for e in events
            if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"{DAG_ID}.apply_approval"]


@pytest.fixture
def start(home):
    runs: list[BackgroundRun] = []

    def started(logical_date: str) -> BackgroundRun:
        runs.append(BackgroundRun(home, logical_date))
        return runs[-1]

    yield started
    for run in runs:  # a failed test leaves no run behind to hold the metadata database
        run.stop()


def registry(home: Home):
    from mlflow import MlflowClient

    uri = home.settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions(home: Home) -> list:
    return sorted(registry(home).search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))


def aliases(home: Home) -> dict[str, str]:
    return {alias: str(v) for alias, v in registry(home).get_registered_model(MODEL).aliases.items()}


def latest_report(home: Home) -> tuple[dict, dict | None]:
    """The latest run's report (JSON) and its ``approval.json``."""
    store = store_from_settings(home.settings)
    latest = store.read_json(store.layout.latest_report(MODEL))
    run = store.layout.run(MODEL, latest["run_key"])
    approval = run.manifest("approval")
    return store.read_json(latest["json_uri"]), store.read_json(approval) if store.exists(approval) else None


def champion_events(server) -> list[dict]:
    """The champion Asset's events (who emitted them, and their extra), oldest first."""
    uri = f"refit://{MODEL}/champion"
    assets = server.api._ok(server.api.http.get("/assets", params={"uri_pattern": "champion"}))["assets"]
    asset = next((a for a in assets if a["uri"] == uri), None)
    if asset is None:
        return []
    events = server.api._ok(server.api.http.get("/assets/events", params={"asset_id": asset["id"]}))
    return [{"task": e["source_task_id"], **(e["extra"] or {})} for e in events["asset_events"]]


def open_form(driver, server, run: BackgroundRun):
    """The approve task's Required Actions form in the UI; returns its reason field."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{server.url}/dags/{DAG_ID}/runs/{quote(run.run_id or '', safe='')}/tasks/approve/required_actions")
    return WebDriverWait(driver, WAIT_S).until(ec.element_to_be_clickable((By.ID, "element_reason")))


def answer_in_form(driver, server, run: BackgroundRun, option: str, reason: str | None) -> None:
    """Type the reason (if any) into the form and press the option's button, as a person does."""
    from selenium.webdriver.common.by import By

    field = open_form(driver, server, run)
    if reason:
        field.send_keys(reason)
    driver.find_element(By.CSS_SELECTOR, f"[data-testid='hitl-option-{option}']").click()


def wait_for_answer(server, run: BackgroundRun, option: str) -> dict:
    """The HITL detail once the api-server recorded the answer ``option``."""
    def recorded() -> dict | None:
        detail = server.api.http.get(run.hitl_path()).json()
        return detail if detail["response_received"] and detail["chosen_options"] == [option] else None

    return run.wait_until(f"the answer {option!r} recorded", recorded, WAIT_S)


def test_a_pass_that_always_waits_is_approved_through_the_rest_api(home, server, start):
    run = start("2024-03-01")
    question = run.wait_for_question(server)

    assert question["subject"] == "Promote credit_default's challenger logistic_baseline? Gate PASS, as of 2024-03-01"
    body = question["body"]
    assert body.startswith("**PASS**") and "`promotion: always_approve` still asks a person" in body
    assert f"[Open the gating report](/refit/runs/{DAG_ID}/" in body and "report.html" in body
    assert (question["options"], question["defaults"], list(question["params"])) == (
        ["Approve", "Reject"], ["Reject"], ["reason"])
    assert not registry_has_versions(home), "a held PASS registered a version before anyone answered"
    # The pools the trainer tasks need were created with the metadata database.
    assert server.api.http.get("/pools/refit_gpu").json()["slots"] >= 1

    assert [user["id"] for user in question["assigned_users"]] == ["oncall"]
    # An admin who is not among the spec's approvers is refused by Airflow itself.
    other = AirflowApi(server.url, OTHER_USER, OTHER_PASSWORD)
    not_theirs = other.http.patch(run.hitl_path(), json={"chosen_options": ["Approve"],
                                                         "params_input": {"reason": "looks fine to me, ship it"}})
    assert not_theirs.status_code == 403 and "not a respondent" in not_theirs.text, not_theirs.text
    refused = server.api.http.patch(run.hitl_path(), json={"chosen_options": ["Maybe"], "params_input": {}})
    assert refused.status_code == 400, refused.text
    reason = "first model of this spec: reviewed the report, launch it"
    answered = server.api.http.patch(run.hitl_path(), json={"chosen_options": ["Approve"],
                                                            "params_input": {"reason": reason}})
    assert answered.status_code == 200, answered.text
    assert answered.json()["responded_by"]["name"] == "oncall"
    assert server.api.http.patch(run.hitl_path(), json={"chosen_options": ["Reject"],
                                                        "params_input": {"reason": None}}).status_code == 409

    dag_run = run.finish(server)

    assert aliases(home) == {"champion": "1"}
    tags = versions(home)[0].tags
    assert (tags["refit.approved_by"], tags["refit.approval_reason"], tags["refit.verdict"]) == (
        "oncall", reason, "PASS")
    report, approval = latest_report(home)
    assert approval is not None and (approval["decision"], approval["by"]) == ("approved", "oncall")
    assert report["approval"]["decision"] == "approved" and report["registration"]["action"] == "approved"
    assert f"Approved by oncall (v1): {reason}" in dag_run["note"]
    assert [(e["task"], e["action"], e["version"]) for e in champion_events(server)] == [
        ("announce_champion", "approved", "1")]
    assert approval_lineage(home) == [[(MODEL, "1")]]  # the snapshot -> the version the approval registered


def registry_has_versions(home: Home) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return bool(versions(home))
    except MlflowException:
        return False


def test_a_fail_rejected_in_the_tasks_form_leaves_the_champion(home, server, browser, start, slack):
    from selenium.webdriver.common.by import By

    home.edit_spec(promotion="approve_on_fail", thresholds={"roc_auc": {"min": 0.99}})  # no model gets there
    run = start("2024-06-01")
    run.wait_for_question(server)

    open_form(browser, server, run)
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "Promote credit_default's challenger logistic_baseline? Gate FAIL, as of 2024-06-01" in page
    assert "Why the gate failed:" in page and "misses the spec's min >= 0.99" in page
    assert "champion v1 stays" in page
    link = browser.find_element(By.LINK_TEXT, "Open the gating report")
    assert f"/refit/runs/{DAG_ID}/" in link.get_attribute("href")
    reason = "a recall drop this size is not worth it before the holidays"
    answer_in_form(browser, server, run, "Reject", reason)
    detail = wait_for_answer(server, run, "Reject")
    assert (detail["responded_by_user"]["name"], detail["params_input"]) == ("oncall", {"reason": reason})

    dag_run = run.finish(server)

    assert aliases(home) == {"champion": "1"} and len(versions(home)) == 1
    report, approval = latest_report(home)
    assert (report["verdict"], approval["decision"], approval["by"], approval["reason"]) == (
        "FAIL", "rejected", "oncall", reason)
    assert approval["registration"] == {"registry_name": MODEL, "action": "rejected", "version": None,
                                        "champion_version": "1", "previous_version": None,
                                        "champion_moved_by_this_run": False}
    assert f"Rejected by oncall: {reason}" in dag_run["note"]
    assert len(champion_events(server)) == 1
    # The person on call was told, through the connection in Airflow's database, that the FAIL waits.
    _, posted, paths = slack
    [told] = [p["text"] for p in posted if "gate FAIL" in p["text"]]
    assert "the run's approve task waits for an approval from oncall (Required actions); no answer within 24 h" \
           in told
    assert set(paths) == {f"/services/{SLACK_TOKEN}"}
    assert approval_lineage(home)[-1] == []  # nothing registered, no output


def test_a_fail_nobody_answers_in_time_is_recorded_and_leaves_the_champion(home, server, start):
    home.edit_spec(approval_timeout_hours=0.0003)  # about a second
    run = start("2024-07-01")
    run.wait_for_question(server)

    # The scheduler's sweep of tasks awaiting input past their deadline, as the scheduler runs it.
    sweep = ("from airflow.jobs.job import Job\n"
             "from airflow.jobs.scheduler_job_runner import SchedulerJobRunner\n"
             "SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()\n")
    done = subprocess.run([sys.executable, "-c", sweep], env=airflow_env(home.settings), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "1 resolved" in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
    dag_run = run.finish(server)

    assert aliases(home) == {"champion": "1"} and len(versions(home)) == 1
    _, approval = latest_report(home)
    assert (approval["decision"], approval["by"]) == ("timed_out", None)
    assert approval["reason"] == "no answer within 0.0003 h"
    assert "Not approved in time" in dag_run["note"]
    home.edit_spec(approval_timeout_hours=24)


def test_a_fail_approved_in_the_tasks_form_is_promoted_with_the_approver_and_reason(home, server, browser, start):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.e2e.ui_checks import open_plugin_frame, report_banner

    run = start("2024-09-01")
    run.wait_for_question(server)

    # Approve without a reason: not taken, the form is asked again.
    answer_in_form(browser, server, run, "Approve", None)
    run.wait_until("the approve task asked again", lambda: "asking again" in run.log.read_text(errors="replace"))
    run.wait_for_question(server)
    reason = "accuracy trade-off accepted: the new channel needs this model"
    answer_in_form(browser, server, run, "Approve", reason)
    assert wait_for_answer(server, run, "Approve")["responded_by_user"]["name"] == "oncall"

    run.finish(server)

    assert aliases(home) == {"champion": "2", "previous": "1"}
    approved = versions(home)[1]
    assert (approved.tags["refit.approved_by"], approved.tags["refit.approval_reason"]) == ("oncall", reason)
    assert approved.tags["refit.verdict"] == "FAIL" and approved.tags["refit.registration"] == "complete"
    assert [(e["action"], e["version"]) for e in champion_events(server)] == [("approved", "1"), ("approved", "2")]
    assert approval_lineage(home)[-1] == [(MODEL, "2")]
    # The report the person opened from the form now says who approved it, and why.
    open_plugin_frame(browser, server, f"/dags/{DAG_ID}/runs/{run.run_id}/plugin/refit-gate-report")
    assert report_banner(browser).startswith("FAIL · credit_default · as of 2024-09-01")
    assert WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.ID, "approved-by"))).text == "oncall"
    assert browser.find_element(By.ID, "approval-reason").text == reason
    browser.switch_to.default_content()
