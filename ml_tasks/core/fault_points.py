"""Named points where a test may kill this process, to prove that a step recovers from a crash.

A step that must converge whatever was interrupted (registration moving aliases, for one) calls
:func:`reached` between its writes. With ``REFIT_KILL_AT`` set to that point's name the process
kills itself there with SIGKILL: no handler, no ``finally``, exactly what an out-of-memory kill
or a lost host does. The fault-injection tests start real processes with it, and
``bench/bench_cold_start.py`` times a trainer up to the point where it reads its inputs
(``train.inputs``, ``backtest.inputs``); unset (always, in production) a point costs one
environment look-up.
"""

from __future__ import annotations

import os
import signal

KILL_AT = "REFIT_KILL_AT"


def reached(point: str) -> None:
    """Die here, at once and uncatchably, when ``REFIT_KILL_AT`` names ``point``."""
    if os.environ.get(KILL_AT) == point:
        os.kill(os.getpid(), signal.SIGKILL)
