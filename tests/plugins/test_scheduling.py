"""Where trainer tasks run (the refit_gpu pool, the queue), the pools a deployment creates, and
the approve task's answer as Refit keeps it."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="refit-airflow-"))

from refit_airflow.scheduling import (
    GPU_POOL,
    gpu_slots,
    main,
    refit_pools,
    trainer_placement,
)


def with_trainer(spec, **changes):
    return spec.model_copy(update={"trainer": spec.trainer.model_copy(update=changes)})


def test_a_gpu_trainer_takes_its_gpus_in_the_gpu_pool_and_a_cpu_trainer_none(demo_spec):
    assert trainer_placement(with_trainer(demo_spec, gpus=2), env={}) == {"pool": GPU_POOL, "pool_slots": 2}
    assert trainer_placement(with_trainer(demo_spec, gpus=0), env={}) == {}


def test_the_trainer_queue_is_the_specs_else_the_deployments(demo_spec):
    cpu = with_trainer(demo_spec, gpus=0)
    assert trainer_placement(cpu, env={"REFIT_TRAINER_QUEUE": "gpu"}) == {"queue": "gpu"}
    assert trainer_placement(with_trainer(cpu, queue="a100"), env={"REFIT_TRAINER_QUEUE": "gpu"}) == {"queue": "a100"}
    assert trainer_placement(cpu, env={"REFIT_TRAINER_QUEUE": " "}) == {}


def test_the_gpu_pool_is_sized_by_the_deployment_or_by_the_largest_ask(demo_spec):
    specs = [with_trainer(demo_spec, gpus=0), with_trainer(demo_spec, gpus=3)]
    assert gpu_slots(specs, env={}) == 3
    assert gpu_slots([with_trainer(demo_spec, gpus=0)], env={}) == 1
    assert gpu_slots(specs, env={"REFIT_GPU_SLOTS": "8"}) == 8
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="REFIT_GPU_SLOTS"):
            gpu_slots(specs, env={"REFIT_GPU_SLOTS": bad})
    pools = refit_pools(specs, env={"REFIT_GPU_SLOTS": "8"})
    assert list(pools) == [GPU_POOL] and pools[GPU_POOL]["slots"] == 8
    assert {"slots", "description", "include_deferred"} <= set(pools[GPU_POOL])


def test_the_pools_file_is_what_airflow_pools_import_reads(tmp_path, monkeypatch):
    monkeypatch.delenv("REFIT_GPU_SLOTS", raising=False)
    monkeypatch.delenv("REFIT_INCLUDE_DIR", raising=False)
    assert main(["pools", str(tmp_path / "pools.json")]) == 0
    written = json.loads((tmp_path / "pools.json").read_text())
    # The demo spec's trainer asks for one GPU.
    assert written[GPU_POOL]["slots"] == 1 and isinstance(written[GPU_POOL]["description"], str)
    assert main(["pool"]) == 2


def test_the_answer_names_who_responded_and_a_timeout_nobody():
    from refit_airflow.approval import answer_of

    at = datetime(2024, 6, 2, 9, 30, 12, 345, tzinfo=UTC)
    answered = answer_of({"chosen_options": ["Approve"], "params_input": {"reason": "  fine for launch  "},
                          "responded_at": at, "responded_by_user": {"id": "7", "name": "alice"}})
    assert answered == {"chosen": "Approve", "reason": "fine for launch", "by": "alice", "by_id": "7",
                        "at": "2024-06-02T09:30:12+00:00"}
    timed_out = answer_of({"chosen_options": ["Reject"], "params_input": {"reason": None}, "responded_at": at,
                           "responded_by_user": None})
    assert (timed_out["chosen"], timed_out["by"], timed_out["reason"]) == ("Reject", None, "")


def test_an_approval_without_a_reason_is_asked_again(demo_spec, monkeypatch):
    from refit_airflow.approval import ApprovalTask

    approve = ApprovalTask(task_id="approve", spec=demo_spec.model_copy(update={"promotion": "approve_on_fail"}),
                           plan={}, gate_manifest={}, registration={}, report_manifest={})
    asked = []
    monkeypatch.setattr(approve, "_ask", lambda context: asked.append(context) or "asked again")

    def respond(chosen: str, reason: str | None):
        return approve.execute_complete({}, {"chosen_options": [chosen], "params_input": {"reason": reason},
                                             "responded_at": datetime(2024, 6, 2, tzinfo=UTC),
                                             "responded_by_user": {"id": "alice", "name": "alice"}})

    assert respond("Approve", "short") == "asked again" and respond("Approve", None) == "asked again"
    assert len(asked) == 2
    assert respond("Approve", "the recall trade-off is fine")["chosen"] == "Approve"
    assert respond("Reject", None)["chosen"] == "Reject"  # a rejection needs no reason
    assert len(asked) == 2
