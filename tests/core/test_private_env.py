"""Credentials reach a process on stdin, and only the logins may arrive that way."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from ml_tasks.core.private_env import FLAG, PrivateEnvironmentError, encode, read_private_environment


def test_the_flagged_cli_reads_its_logins_from_stdin_before_anything_else(refit_home):
    secret = "pa55-w0rd-never-in-the-environment"
    env = {**os.environ, FLAG: "1"}
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    # `status` reaches MLflow's store; what matters here is that the CLI consumed the line and
    # went on with the login in its own environment, which `spec-reference` cannot fail on.
    done = subprocess.run([sys.executable, "-c",
                           "import os, sys; from ml_tasks.cli import main; rc = main(['spec-reference']);"
                           "print(os.environ.get('MLFLOW_TRACKING_PASSWORD'), file=sys.stderr); sys.exit(rc)"],
                          input=encode({"MLFLOW_TRACKING_PASSWORD": secret}), capture_output=True, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr.decode().strip().splitlines()[-1] == secret


def test_a_flagged_cli_without_the_line_stops_naming_the_flag(refit_home):
    done = subprocess.run([sys.executable, "-m", "ml_tasks", "spec-reference"], input=b"not json\n",
                          capture_output=True, env={**os.environ, FLAG: "1"})
    assert done.returncode == 1
    assert f"error: PrivateEnvironmentError: {FLAG}=1, but the first line on stdin is not a JSON object" in \
        done.stderr.decode()


@pytest.mark.parametrize("payload", [{"MLFLOW_TRACKING_URI": "http://attacker"}, {"PATH": "/tmp"}])
def test_only_logins_may_be_passed_privately(payload):
    with pytest.raises(PrivateEnvironmentError, match="cannot be"):
        read_private_environment(io.StringIO(json.dumps(payload) + "\n"), {})
    with pytest.raises(PrivateEnvironmentError, match="cannot be passed privately"):
        encode(payload)
