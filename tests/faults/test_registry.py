"""Registration converges whatever interrupted it, concurrent writers register one version, and a
registry that cannot be read is never taken for an empty one.

Real MLflow stores and real processes: a registering process is killed with SIGKILL at a named
point (``REFIT_KILL_AT``, :mod:`ml_tasks.core.fault_points`), then the interval is registered
again, as an Airflow retry or a re-run would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.manifests import CLI_RUN_ID, GateManifest, ModelRef, RunPlan
from ml_tasks.core.settings import Settings
from ml_tasks.core.spec import ModelSpec
from ml_tasks.registry import versions
from ml_tasks.registry.lock import RegistryLockTimeout, model_lock
from ml_tasks.registry.versions import COMPLETE, STATE_TAG, RegistryError, register_challenger
from tests.conftest import DEMO_SPEC

SNAPSHOT = "snapshot-abc"


def logged_model(settings: Settings, seed: int) -> ModelRef:
    """A small fitted model logged to MLflow exactly as the trainer logs one (a pyfunc in a run)."""
    import mlflow

    from ml_tasks.core.spec import FeaturesSpec
    from ml_tasks.models import PriorCandidate
    from ml_tasks.registry.pyfunc import CandidateModel
    from ml_tasks.registry.tracking import use_store

    use_store(settings)
    candidate = PriorCandidate(FeaturesSpec(numeric=["x"], categorical=[]), seed=seed)
    candidate.fit(pd.DataFrame({"x": [0.0, 1.0]}), np.array([0, seed % 2 or 1]))
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=CandidateModel(candidate),
                                       pip_requirements=["mlflow"])
    return ModelRef(candidate="logistic_baseline", run_id=run.info.run_id, model_uri=info.model_uri)


def plan_of(run_key: str, settings: Settings) -> RunPlan:
    return RunPlan(model="credit_default", spec_path=str(DEMO_SPEC), spec_hash="h", as_of="2024-03-01",
                   window_start="2023-03-01", sample_size=100, candidates=["logistic_baseline"], dry_run=False,
                   dag_run_id="test", run_key=run_key, run_prefix=f"{settings.artifact_root}/runs/m/{run_key}")


def passed_gate(model: ModelRef, settings: Settings) -> GateManifest:
    return GateManifest(verdict="PASS", champion_version=None, checks=[], uri=f"{settings.artifact_root}/gate.json",
                        challenger_model=model)


#: A registering process: ``register_challenger`` for the plan and gate given as JSON, its manifest printed.
WORKER = ("import json, sys\n"
          "from ml_tasks.core.manifests import GateManifest, RunPlan\n"
          "from ml_tasks.core.settings import load_settings\n"
          "from ml_tasks.core.spec import load_spec\n"
          "from ml_tasks.registry.versions import register_challenger\n"
          "args = json.loads(sys.argv[1])\n"
          "result = register_challenger(load_spec(args['spec']), RunPlan.model_validate(args['plan']),\n"
          "                             GateManifest.model_validate(args['gate']), args['snapshot'], 'report.html',\n"
          "                             load_settings())\n"
          "print(json.dumps(result.to_xcom()))\n")


def worker_command(plan: RunPlan, gate: GateManifest) -> list[str]:
    args = json.dumps({"spec": str(DEMO_SPEC), "plan": plan.to_xcom(), "gate": gate.to_xcom(), "snapshot": SNAPSHOT})
    return [sys.executable, "-c", WORKER, args]


def register_in_a_process(plan: RunPlan, gate: GateManifest, kill_at: str) -> subprocess.CompletedProcess[str]:
    """``register_challenger`` in a fresh Python process that kills itself at ``kill_at``."""
    env = {**os.environ, "REFIT_KILL_AT": kill_at}
    return subprocess.run(worker_command(plan, gate), env=env, capture_output=True, text=True, timeout=300)


def registry_state(settings: Settings, name: str = "credit_default") -> tuple[dict[str, str], list[dict[str, str]]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    aliases = {alias: str(number) for alias, number in client.get_registered_model(name).aliases.items()}
    found = client.search_model_versions(f"name = '{name}'")
    return aliases, [dict(v.tags, version=str(v.version)) for v in sorted(found, key=lambda v: int(v.version))]


@pytest.fixture
def first_champion(refit_home: Settings, demo_spec: ModelSpec) -> ModelRef:
    """A registry whose champion is version 1 (interval 2024-03-01), and that version's model."""
    model = logged_model(refit_home, seed=1)
    register_challenger(demo_spec, plan_of("20240301T000000-aaaaaaaa", refit_home), passed_gate(model, refit_home),
                        SNAPSHOT, "report.html", refit_home)
    return model


@pytest.mark.parametrize("kill_at", ["registry.version_created", "registry.previous_moved", "registry.champion_moved"])
def test_a_registration_killed_midway_is_completed_by_the_retry(refit_home, demo_spec, first_champion, kill_at):
    challenger = logged_model(refit_home, seed=2)
    plan, gate = plan_of("20240401T000000-bbbbbbbb", refit_home), passed_gate(challenger, refit_home)

    killed = register_in_a_process(plan, gate, kill_at=kill_at)

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    aliases, _ = registry_state(refit_home)
    assert aliases["champion"] in {"1", "2"}  # whatever the kill left, someone serves
    retried = register_challenger(demo_spec, plan, gate, SNAPSHOT, "report.html", refit_home)
    aliases, found = registry_state(refit_home)
    assert retried.action == "registered" and retried.version == "2" and retried.previous_version == "1"
    assert aliases == {"champion": "2", "previous": "1"}
    assert [v["version"] for v in found] == ["1", "2"] and found[1][STATE_TAG] == COMPLETE
    again = register_challenger(demo_spec, plan, gate, SNAPSHOT, "report.html", refit_home)
    assert again.action == "already_registered" and registry_state(refit_home)[0] == aliases


def test_a_register_retried_after_its_alias_moved_still_owns_the_champion_move(refit_home, demo_spec,
                                                                                first_champion):
    """The try that moved the alias was lost before it handed its result over: the retry (same
    DAG run) must still let the champion be announced; a re-run in another DAG run, or once a
    later version is champion, must not."""
    challenger = logged_model(refit_home, seed=2)
    plan, gate = plan_of("20240401T000000-bbbbbbbb", refit_home), passed_gate(challenger, refit_home)
    assert register_challenger(demo_spec, plan, gate, SNAPSHOT, "report.html", refit_home).action == "registered"

    retried = register_challenger(demo_spec, plan, gate, SNAPSHOT, "report.html", refit_home)

    assert (retried.action, retried.version, retried.champion_version, retried.previous_version) == (
        "already_registered", "2", "2", "1")
    assert retried.champion_moved_by_this_run
    other_run = plan.model_copy(update={"dag_run_id": "manual__2024-05-02"})
    assert not register_challenger(demo_spec, other_run, gate, SNAPSHOT, "report.html",
                                   refit_home).champion_moved_by_this_run
    from_the_cli = plan.model_copy(update={"dag_run_id": CLI_RUN_ID})
    assert not register_challenger(demo_spec, from_the_cli, gate, SNAPSHOT, "report.html",
                                   refit_home).champion_moved_by_this_run
    later = logged_model(refit_home, seed=3)
    register_challenger(demo_spec, plan_of("20240501T000000-cccccccc", refit_home), passed_gate(later, refit_home),
                        SNAPSHOT, "report.html", refit_home)
    assert not register_challenger(demo_spec, plan, gate, SNAPSHOT, "report.html",
                                   refit_home).champion_moved_by_this_run


def test_the_first_registration_killed_before_its_alias_still_makes_a_champion(refit_home, demo_spec):
    model = logged_model(refit_home, seed=1)
    plan, gate = plan_of("20240301T000000-aaaaaaaa", refit_home), passed_gate(model, refit_home)

    assert register_in_a_process(plan, gate, kill_at="registry.version_created").returncode == -signal.SIGKILL
    assert "champion" not in registry_state(refit_home)[0]

    retried = register_challenger(demo_spec, plan, gate, SNAPSHOT, "report.html", refit_home)
    assert retried.action == "registered" and registry_state(refit_home)[0] == {"champion": "1"}


def test_re_running_an_old_interval_never_moves_the_champion_back(refit_home, demo_spec, first_champion):
    later = logged_model(refit_home, seed=2)
    register_challenger(demo_spec, plan_of("20240401T000000-bbbbbbbb", refit_home), passed_gate(later, refit_home),
                        SNAPSHOT, "report.html", refit_home)

    old = register_challenger(demo_spec, plan_of("20240301T000000-aaaaaaaa", refit_home),
                              passed_gate(first_champion, refit_home), SNAPSHOT, "report.html", refit_home)

    assert old.action == "already_registered" and old.champion_version == "2"
    assert registry_state(refit_home)[0] == {"champion": "2", "previous": "1"}


def run_at_once(commands: list[list[str]], env: dict[str, str]) -> list[tuple[int, str, str]]:
    """Start every command at once; (exit code, stdout, stderr) of each."""
    started = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for command in commands]
    return [(process.wait(timeout=300), *process.communicate()) for process in started]


def test_concurrent_registrations_of_one_interval_make_one_version(refit_home):
    model = logged_model(refit_home, seed=1)
    command = worker_command(plan_of("20240301T000000-aaaaaaaa", refit_home), passed_gate(model, refit_home))

    results = run_at_once([command] * 4, dict(os.environ))

    assert all(code == 0 for code, _, _ in results), [err[-1500:] for _, _, err in results]
    actions = sorted(json.loads(out.splitlines()[-1])["action"] for _, out, _ in results)
    assert actions == ["already_registered"] * 3 + ["registered"]
    aliases, found = registry_state(refit_home)
    assert aliases == {"champion": "1"} and [v["version"] for v in found] == ["1"]


def test_processes_opening_a_fresh_embedded_store_at_once_all_succeed(tmp_path):
    """MLflow creates a SQLite store's tables on first use; four at once used to collide."""
    env = {**os.environ, "REFIT_HOME": str(tmp_path / "fresh")}
    env.pop("MLFLOW_TRACKING_URI", None)
    opener = [sys.executable, "-c", "from ml_tasks.core.settings import load_settings\n"
              "from ml_tasks.registry.tracking import use_store\n"
              "print(len(use_store(load_settings()).search_registered_models()))\n"]

    results = run_at_once([opener] * 4, env)

    assert [(code, out.strip()) for code, out, _ in results] == [(0, "0")] * 4, [e[-800:] for _, _, e in results]


def test_a_registry_that_cannot_be_searched_is_never_taken_for_one_without_the_version(refit_home):
    """A search that fails (here: the server is unreachable) raises; it does not mean "absent"."""
    from mlflow import MlflowClient

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        unreachable = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
        with pytest.raises(RegistryError, match="could not search its versions for run key 'k'"):
            versions.version_with_key(unreachable, "credit_default", "k")
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]


def test_a_second_writer_waits_then_names_the_holder(refit_home):
    with model_lock(refit_home, "credit_default"):
        waiting = subprocess.run(
            [sys.executable, "-c", "from ml_tasks.core.settings import load_settings\n"
             "from ml_tasks.registry.lock import model_lock\n"
             "with model_lock(load_settings(), 'credit_default', timeout_s=0.5): pass\n"],
            capture_output=True, text=True, timeout=60)
    assert waiting.returncode != 0
    assert "RegistryLockTimeout" in waiting.stderr and f"pid {os.getpid()}" in waiting.stderr
    with model_lock(refit_home, "credit_default", timeout_s=0.5):  # released: free again
        pass


def test_writers_of_other_models_do_not_wait(refit_home):
    with model_lock(refit_home, "credit_default"):
        with model_lock(refit_home, "another_model", timeout_s=0.3):
            pass
        with pytest.raises(RegistryLockTimeout, match="held by host"), \
                model_lock(refit_home, "credit_default", timeout_s=0.3):
            pass


def test_every_manual_promotion_is_kept_in_the_versions_history(refit_home, demo_spec, first_champion):
    challenger = logged_model(refit_home, seed=2)
    plan, gate = plan_of("20240401T000000-bbbbbbbb", refit_home), passed_gate(challenger, refit_home)
    failed = gate.model_copy(update={"verdict": "FAIL"})

    versions.promote_run(demo_spec, plan, failed, SNAPSHOT, "report.html", "accepted the accuracy trade-off",
                         "alice", refit_home)
    versions.rollback(demo_spec, "latency regression in serving", "bob", refit_home)
    versions.promote_run(demo_spec, plan, failed, SNAPSHOT, "report.html", "latency fixed upstream, promote again",
                         "carol", refit_home)

    _, found = registry_state(refit_home)
    promoted = found[1]
    history = [json.loads(promoted[f"refit.promotion.{n}"]) for n in (1, 2)]
    assert [(h["reason"], h["by"]) for h in history] == [("accepted the accuracy trade-off", "alice"),
                                                         ("latency fixed upstream, promote again", "carol")]
    assert json.loads(promoted["refit.rollback.1"])["by"] == "bob"
    assert promoted["refit.manual_promotion_reason"] == "latency fixed upstream, promote again"
    assert registry_state(refit_home)[0] == {"champion": "2", "previous": "1"}
