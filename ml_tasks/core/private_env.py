"""Credentials handed to a process on its standard input instead of its environment.

A container's environment is part of its configuration: anyone who may inspect the container
(``docker inspect``, the Docker API behind a socket proxy, a monitoring agent) reads it. So the
deployed trainer gets no secret in its environment: the Airflow worker attaches to the
container's stdin and writes one JSON object of the credentials, and the trainer, told so by
``REFIT_PRIVATE_ENV_STDIN=1``, reads that line before anything else and puts the values in its
own process environment, where MLflow's and boto3's clients look for them.

Only the names in :data:`ACCEPTED` are taken, so the channel cannot change where the process
writes (the tracking URI, the artifact root), only who it is.

>>> import io
>>> env = {}
>>> read_private_environment(io.StringIO('{"MLFLOW_TRACKING_PASSWORD": "s3cret"}\\n'), env)
['MLFLOW_TRACKING_PASSWORD']
>>> env["MLFLOW_TRACKING_PASSWORD"]
's3cret'
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from typing import TextIO

#: Set (to 1) in the environment of a process whose credentials arrive on stdin.
FLAG = "REFIT_PRIVATE_ENV_STDIN"
#: What the channel may set: logins to the tracking server and the object store.
ACCEPTED = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class PrivateEnvironmentError(ValueError):
    """The first line on stdin was not the JSON object of credentials that the flag promised."""


def encode(secrets: dict[str, str]) -> bytes:
    """The line a launcher writes: the accepted names only, as one JSON object."""
    _refuse_unknown(secrets)
    return (json.dumps(secrets) + "\n").encode()


def _refuse_unknown(secrets: dict[str, str]) -> None:
    unknown = sorted(set(secrets) - set(ACCEPTED))
    if unknown:
        raise PrivateEnvironmentError(f"{FLAG}: {', '.join(unknown)} cannot be passed privately; "
                                      f"accepted: {', '.join(ACCEPTED)}")


def read_private_environment(stream: TextIO, env: MutableMapping[str, str] | None = None) -> list[str]:
    """Read the credentials line from ``stream`` into ``env`` (default ``os.environ``); the names set."""
    env = os.environ if env is None else env
    line = stream.readline()
    try:
        secrets = json.loads(line)
    except json.JSONDecodeError:
        secrets = None
    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        raise PrivateEnvironmentError(f"{FLAG}=1, but the first line on stdin is not a JSON object of strings "
                                      f"({len(line)} characters read)")
    _refuse_unknown(secrets)
    env.update(secrets)
    return sorted(secrets)


def from_stdin_if_flagged(stream: TextIO, env: MutableMapping[str, str] | None = None) -> list[str]:
    """:func:`read_private_environment` when the flag is set in ``env``; otherwise nothing."""
    env = os.environ if env is None else env
    if env.get(FLAG) != "1":
        return []
    return read_private_environment(stream, env)
