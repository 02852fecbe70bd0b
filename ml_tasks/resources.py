"""How many CPU threads a trainer process may use, and making its libraries keep to that.

A trainer shares its machine: with mapped train and backtest tasks, several trainers run on one
Airflow worker, and a trainer container may be limited to part of its host by a CPU quota.
OpenMP (LightGBM, torch) and BLAS (numpy, scikit-learn) size their thread pools from the host's
core count, not from the affinity mask or the container's quota, and threads beyond the cores
a process really gets make every step slower (oversubscription). So the budget is, in order:

1. ``REFIT_TRAINER_THREADS`` (set from the spec's ``trainer.cpus`` by the trainer operators),
2. else the CPUs this process may run on: its affinity mask, capped by a cgroup v2 ``cpu.max``
   quota (``200000 100000`` is 2 CPUs).

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
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return max(cpus, 1)
    if quota != "max" and int(period) > 0:
        cpus = min(cpus, math.ceil(int(quota) / int(period)))
    return max(cpus, 1)


def trainer_threads(env: Mapping[str, str] | None = None, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The thread budget of a trainer process: ``REFIT_TRAINER_THREADS``, else :func:`available_cpus`."""
    env = os.environ if env is None else env
    raw = (env.get(THREADS_SETTING) or "").strip()
    if not raw:
        return available_cpus(cpu_max)
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_SETTING}={raw!r}: expected a positive number of threads")
    return threads


def limit_thread_pools(env: MutableMapping[str, str] | None = None, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Size the OpenMP/BLAS pools to :func:`trainer_threads` (a variable already set is kept).

    Call it before numpy, torch or LightGBM are imported; returns the budget.
    """
    env = os.environ if env is None else env
    threads = trainer_threads(env, cpu_max)
    for name in POOL_SETTINGS:
        env.setdefault(name, str(threads))
    return threads
