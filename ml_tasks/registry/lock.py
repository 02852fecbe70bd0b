"""One registry writer per model at a time, across processes and, with PostgreSQL, across hosts.

Registration, manual promotion and rollback read the registry's state, then write versions and
move aliases. Two of them at once (a scheduled and a manual run of one interval, the CLI beside
Airflow, the registry DAG racing a retrain) could each find no version for a run key and both
create one. :func:`model_lock` makes them take turns:

* with ``REFIT_LOCK_URL`` (a PostgreSQL database every worker reaches; the deployed stack uses
  Airflow's), a session-level advisory lock: it serialises writers on any host, and the server
  releases it when the holder's connection dies, so a killed writer never leaves it taken;
* otherwise a ``flock`` on ``$REFIT_HOME/locks/<model>.lock``: the processes of one host (the
  embedded mode). The kernel releases it when the holder dies.

A writer waits up to ``REFIT_LOCK_TIMEOUT_S`` (600 s) and then fails with a message that names
the holder (host, process, since when), so an operator can tell a slow writer from a stuck one.
The writers still re-check the registry once they hold the lock: the lock makes duplicates
unlikely, the re-check makes them impossible to keep (:mod:`ml_tasks.registry.versions`).

Written here because no library in the lock does both: Airflow pools only order Airflow
tasks (not the CLI), and a file lock alone cannot serialise hosts.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ml_tasks.core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: First key of every Refit advisory lock ("REFI"), so they never collide with another
#: application's advisory locks on a shared database; the second key is the model's.
_NAMESPACE = 0x52454649
_POLL_SECONDS = 0.2


class RegistryLockTimeout(RuntimeError):  # noqa: N818 (reads as what happened, like TimeoutError)
    """Another writer held the model's registry lock for longer than the wait allowed."""


def holder_description() -> str:
    """Who is asking: host, process and the time it started waiting (what a waiting writer reports)."""
    return f"host {socket.gethostname()} pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"


@contextmanager
def model_lock(settings: Settings, model: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the registry lock of ``model`` (a registry name) for the block.

    Raises :class:`RegistryLockTimeout` naming the holder when another writer keeps it for more
    than ``timeout_s`` seconds (default: the settings').
    """
    wait = settings.lock_timeout_s if timeout_s is None else timeout_s
    if settings.lock_url:
        with _advisory_lock(settings.lock_url, model, wait):
            yield
    else:
        with file_lock(settings.home / "locks" / f"{_safe_name(model)}.lock", model, wait):
            yield


def _safe_name(model: str) -> str:
    # Registry names may hold characters a file name should not; the hash keeps them apart.
    plain = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return f"{plain}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


@contextmanager
def file_lock(path: Path, what: str, timeout_s: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block; the holder's description is kept in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        _acquire_flock(handle, path, what, timeout_s)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(holder_description())
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)



def _acquire_flock(handle: IO[str], path: Path, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = path.read_text().strip() or "an unknown process"
                raise RegistryLockTimeout(
                    f"{what}: the registry lock {path} is held by {holder}; waited {timeout_s:g} s "
                    "(REFIT_LOCK_TIMEOUT_S). Another registration, promotion or rollback of this model is "
                    "running: wait for it, or stop that process if it is stuck") from None
            time.sleep(_POLL_SECONDS)


def _advisory_key(model: str) -> int:
    """The model's half of the advisory lock key: a signed 32-bit hash of its registry name."""
    return int.from_bytes(hashlib.sha256(model.encode()).digest()[:4], "big", signed=True)


@contextmanager
def _advisory_lock(url: str, model: str, timeout_s: float) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    key = _advisory_key(model)
    # The holder's description travels as the session's application_name, where a waiting
    # writer (or an operator, in pg_stat_activity) can read it.
    engine = create_engine(url, poolclass=NullPool,
                           connect_args={"application_name": f"refit-lock {model} {holder_description()}"[:63]})
    try:
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            deadline = time.monotonic() + timeout_s
            lock = text("SELECT pg_try_advisory_lock(:namespace, :key)")
            while not connection.execute(lock, {"namespace": _NAMESPACE, "key": key}).scalar():
                if time.monotonic() >= deadline:
                    raise RegistryLockTimeout(
                        f"{model}: the registry lock (PostgreSQL advisory lock {_NAMESPACE}/{key} at REFIT_LOCK_URL) "
                        f"is held by {_advisory_holder(connection, key)}; waited {timeout_s:g} s "
                        "(REFIT_LOCK_TIMEOUT_S). Another registration, promotion or rollback of this model is "
                        "running: wait for it, or end that session if it is stuck")
                time.sleep(_POLL_SECONDS)
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"),
                                   {"namespace": _NAMESPACE, "key": key})
    finally:
        engine.dispose()


def _advisory_holder(connection: Connection, key: int) -> str:
    from sqlalchemy import text

    # pg_locks shows the two keys as unsigned 32-bit object ids.
    row = connection.execute(text(
        "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :namespace AND l.objid = :key"),
        {"namespace": _NAMESPACE & 0xFFFFFFFF, "key": key & 0xFFFFFFFF}).first()
    if row is None:
        return "a session that has just ended"
    return f"{row.application_name or 'an unnamed session'} (server pid {row.pid}, client {row.client_addr})"
