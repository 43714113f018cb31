"""Signals that reach `iprotate run` before its event loop takes them over.

Why: importing the engine and starting up takes half a second and more on a loaded machine, and
until `signals.install` runs, SIGHUP and SIGUSR1 keep their default action (the daemon dies: a
`kill -HUP` right after a start stopped it) and SIGINT raises KeyboardInterrupt (a traceback).
`hold_early`, called from the first line of the command line for `run`, records them instead;
`signals.install` acts on what was recorded. Only the standard library's `signal` here, so that
holding them costs nothing before the imports it protects.
"""

from __future__ import annotations

import signal
from types import FrameType

# The signal rules' sets (engine.signals uses them; they live here, in the module the command line
# imports first). What `signals.install` handles is recorded here until it runs; SILENT ones are
# ignored at once.
STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
LOGGED = (
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGPWR,
    signal.SIGXCPU,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGSTKFLT,
    signal.SIGTSTP,
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
)
SILENT = (signal.SIGPIPE, signal.SIGTTIN, signal.SIGTTOU, signal.SIGXFSZ)
_RECORDED = (*STOP, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, *LOGGED)
MAX_RECORDED = 64  # a storm during start-up: the first ones say enough


class EarlySignals:
    """Signals received before `signals.install`, in order of arrival."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def record(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler: it may run between any two bytecodes, so it only appends.
        if len(self.received) < MAX_RECORDED:
            self.received.append(signum)

    def take(self) -> list[int]:
        """What was recorded, once."""
        got, self.received = self.received, []
        return got

    def ignore_all(self) -> None:
        """On the way out, once the engine has stopped: ignore them all. The interpreter's
        finalization puts back the default action of every signal with a Python handler, and a
        SIGHUP in that last tenth of a second killed a daemon that had stopped cleanly (exit -1
        instead of 0); it leaves ignored ones alone."""
        for s in _RECORDED:
            signal.signal(s, signal.SIG_IGN)


def hold_early() -> EarlySignals:
    """Record, rather than obey, every signal `signals.install` will handle, until it runs."""
    early = EarlySignals()
    for s in _RECORDED:
        signal.signal(s, early.record)
    for s in SILENT:
        signal.signal(s, signal.SIG_IGN)
    return early
