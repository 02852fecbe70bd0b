"""The trainer operator: runs ``python -m ml_tasks train`` for one candidate.

In embedded mode the command runs as a local subprocess of the worker, with the worker's
environment (REFIT_HOME, MLflow URI). The command writes its result manifest to the artifact
store and prints it as its last line, which becomes the task's XCom: the same contract a
trainer container will follow in deployed mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence

from airflow.sdk import BaseOperator


class TrainerError(RuntimeError):
    """The trainer command failed; the message carries its exit code and last output lines."""


def trainer_command(plan: dict, split_uri: str, candidate: str, python: str = sys.executable) -> list[str]:
    """The command line of the trainer for one candidate (the same inside a container)."""
    return [python, "-m", "ml_tasks", "train", "--plan", f"{plan['run_prefix']}/plan.json",
            "--split", split_uri, "--candidate", candidate]


class TrainerOperator(BaseOperator):
    """Train one candidate of a planned run in a separate process.

    Parameters
    ----------
    plan : the run plan manifest (usually the plan task's XCom).
    split : the split manifest (its ``uri`` is handed to the trainer).
    candidate : candidate name from the spec; mapped over with ``.expand(candidate=...)``.
    """

    template_fields: Sequence[str] = ("plan", "split", "candidate")
    ui_color = "#f3e5f5"

    def __init__(self, *, plan, split, candidate, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.split = split
        self.candidate = candidate

    def execute(self, context) -> dict:
        command = trainer_command(self.plan, self.split["uri"], self.candidate)
        self.log.info("Running trainer: %s", " ".join(command))
        env = {**os.environ, "MLFLOW_CONFIGURE_LOGGING": "false"}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            self.log.info("trainer: %s", line)
        code = process.wait()
        if code != 0:
            tail = "\n".join(lines[-15:])
            raise TrainerError(f"trainer for candidate {self.candidate!r} exited with code {code}:\n{tail}")
        return json.loads(lines[-1])
