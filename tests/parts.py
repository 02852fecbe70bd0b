"""``make test``'s parts, run in order, each timed: ``python -m tests.parts unit e2e stack``.

* ``unit``: everything that needs no Airflow run and no Docker Engine (``make test-quick``);
* ``e2e``: the real DAGs on local processes (``tests/e2e``), and every other ``e2e``-marked test;
* ``stack``: the compose stack on a real Docker Engine (``tests/stack``).

``PYTEST_ARGS`` (environment, shell-quoted) goes to every part's pytest, e.g. ``PYTEST_ARGS=-x``.
pytest's exit code 5 (no test selected) counts as passed: a part narrowed to nothing is not a
failure, and the driver says so.

Why a driver rather than a loop in the Makefile: a cold build of the stack's images
(``docker/local/build.sh``) takes about twenty minutes here, most of it pip installs, layer
writes and downloads, while the unit and e2e parts keep about one core busy. When ``stack`` is
among the parts, the driver starts a Docker Engine (only when none answers) and the build in the
background before the first part, so the build overlaps them; the stack part's own call to
``build.sh`` then waits on the build's lock and finds every image cached. The engine is stopped
at the end only if the driver started it, whatever the outcome; a failed part stops the build.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from tests.stack.stack import BUILD_SCRIPT, REPO_ROOT, docker_engine

PARTS: dict[str, list[str]] = {
    # On every core (pytest-xdist): the unit tests make their own databases, ports and folders, and
    # a module's tests stay on one worker (loadscope), so module fixtures are built once.
    "unit": ["-m", "not e2e and not stack", "--ignore=tests/e2e", "--ignore=tests/stack", "-n", "auto",
             "--dist", "loadscope"],
    # Every e2e-marked test, wherever it sits (tests/registry's clean-virtualenv load, tests/scoring's
    # shadow loop), not only tests/e2e; the stack has its own part.
    "e2e": ["-m", "e2e", "--ignore=tests/stack"],
    "stack": ["-m", "stack", "-v", "tests/stack"],
}
NO_TESTS_COLLECTED = 5
BUILD_TIMEOUT_S = 3600


def say(line: str) -> None:
    print(f"== {line}", flush=True)


class BackgroundBuild:
    """``docker/local/build.sh`` in its own process group, its output in ``log_path``."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.started = time.monotonic()
        with log_path.open("w") as log:
            self.process = subprocess.Popen(["bash", str(BUILD_SCRIPT)], cwd=REPO_ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self) -> bool:
        """Wait for it; True when it succeeded (its time printed), False with its log's tail."""
        try:
            code = self.process.wait(max(1.0, BUILD_TIMEOUT_S - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.stop()
            code = -1
        elapsed = time.monotonic() - self.started
        if code == 0:
            say(f"images (docker/local/build.sh, in the background) built in {elapsed:.0f}s (log: {self.log_path})")
            return True
        say(f"images: docker/local/build.sh FAILED (exit {code}) after {elapsed:.0f}s; its log's end:")
        print(self.log_path.read_text()[-6000:], flush=True)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def run_part(part: str, extra_args: list[str]) -> bool:
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", *PARTS[part], *extra_args]
    say(f"{part} tests: {shlex.join(command[1:])}")
    code = subprocess.run(command, cwd=REPO_ROOT).returncode
    elapsed = time.monotonic() - started
    if code == NO_TESTS_COLLECTED:
        say(f"{part} tests: none selected ({elapsed:.0f}s)")
    elif code != 0:
        say(f"{part} tests FAILED after {elapsed:.0f}s")
        return False
    else:
        say(f"{part} tests passed in {elapsed:.0f}s")
    return True


def main(parts: list[str]) -> int:
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        print(f"tests.parts: unknown part(s) {unknown or parts} (expected some of {', '.join(PARTS)})",
              file=sys.stderr)
        return 2
    extra_args = shlex.split(os.environ.get("PYTEST_ARGS", ""))
    started = time.monotonic()
    with ExitStack() as cleanup:
        build = None
        if "stack" in parts:
            logs = Path(tempfile.mkdtemp(prefix="refit-test-parts-"))
            engine_started = cleanup.enter_context(docker_engine(logs))
            say(f"Docker Engine {'started (stopped at the end)' if engine_started else 'already running'}; "
                f"building the stack's images in the background (log: {logs / 'build.log'})")
            build = BackgroundBuild(logs / "build.log")
            cleanup.callback(build.stop)
        for part in parts:
            if part == "stack" and build is not None and not build.wait():
                return 1
            if not run_part(part, extra_args):
                return 1
    say(f"all tests passed in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
