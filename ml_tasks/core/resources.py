"""How many CPU threads a trainer process may use, and making its libraries keep to that.

A trainer shares its machine: with mapped train and backtest tasks, several trainers run on one
Airflow worker, and a trainer container may be limited to part of its host by a CPU quota.
OpenMP (LightGBM, torch) and BLAS (numpy, scikit-learn) size their thread pools from the host's
core count, not from the affinity mask or the container's quota, and threads beyond the cores
a process really gets make every step slower (oversubscription). So the budget is, in order:

1. ``REFIT_TRAINER_THREADS`` (set from the spec's ``trainer.cpus`` by the trainer operators),
2. else the CPUs this process may run on: its affinity mask, capped by the cgroup v2 ``cpu.max``
   quotas of its cgroup and the cgroups above it (``200000 100000`` is 2 CPUs).

This module imports nothing heavy: :func:`limit_thread_pools` must run before numpy, torch or
LightGBM are imported, since most of them read their settings once, at import.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

THREADS_SETTING = "REFIT_TRAINER_THREADS"
#: The variables the thread pools of OpenMP, OpenBLAS, MKL and numexpr read at start-up.
POOL_SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS")
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """The tightest cgroup v2 CPU quota over this process's cgroup and its parents, in whole CPUs
    (rounded up); None when there is none (no cgroup v2, or ``max`` all the way up).

    A container usually sees its own cgroup as the root (``cpu.max`` there); a process in a
    sub-cgroup (systemd ``CPUQuota``, a Docker host without a private cgroup namespace) has its
    path in ``/proc/self/cgroup`` (``0::/path``), and every level above it may cap it too.
    """
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    relative = next((line.split("::", 1)[1].strip() for line in lines if line.startswith("0::")), "/")
    folder, limits = cgroup_root / relative.lstrip("/"), []
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and int(period) > 0:
                limits.append(math.ceil(int(quota) / int(period)))
        except (OSError, ValueError):
            pass  # no file at this level (or not cgroup v2), or a value this code does not know
        if folder == cgroup_root or cgroup_root not in folder.parents:
            break
        folder = folder.parent
    return min(limits) if limits else None


def available_cpus(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root, self_cgroup)
    return max(min(cpus, limit) if limit else cpus, 1)


def trainer_threads(env: Mapping[str, str] | None = None, **cgroup: Path) -> int:
    """The thread budget of a trainer process: ``REFIT_TRAINER_THREADS``, else :func:`available_cpus`
    (``cgroup`` passes its paths, for tests)."""
    env = os.environ if env is None else env
    raw = (env.get(THREADS_SETTING) or "").strip()
    if not raw:
        return available_cpus(**cgroup)
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_SETTING}={raw!r}: expected a positive number of threads")
    return threads


def thread_environment(threads: int | None) -> dict[str, str]:
    """The environment that hands a trainer process a thread budget (nothing without one)."""
    return {THREADS_SETTING: str(threads)} if threads else {}


def limit_thread_pools(env: MutableMapping[str, str] | None = None, **cgroup: Path) -> int:
    """Size the OpenMP/BLAS pools to :func:`trainer_threads`; returns the budget.

    An explicit ``REFIT_TRAINER_THREADS`` overrides pool sizes inherited from the parent (an
    Airflow worker, or a CLI process that sized its own pools); without one, a pool size already
    set is kept. Call it before numpy, torch or LightGBM are imported.
    """
    env = os.environ if env is None else env
    threads = trainer_threads(env, **cgroup)
    explicit = bool((env.get(THREADS_SETTING) or "").strip())
    for name in POOL_SETTINGS:
        if explicit:
            env[name] = str(threads)
        else:
            env.setdefault(name, str(threads))
    return threads
