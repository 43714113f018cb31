"""What each signal does to `iprotate run`: every signal a user may send has a rule here.

- SIGTERM, SIGINT, SIGQUIT: a clean stop (hand every VIP over, release them, exit 0). SIGQUIT
  would dump core by default; whoever sends it wants the process gone, and gone cleanly.
- SIGHUP: reload the cluster file. SIGUSR1: log the status. SIGUSR2: demote, as ucarp does.
- Signals whose default action kills or freezes the process but that mean nothing to iprotate
  (SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGXCPU, SIGTRAP, SIGSYS, SIGSTKFLT, SIGTSTP,
  SIGRTMIN..SIGRTMAX): logged and ignored. A killed engine leaves its addresses on the wire while
  the backups take them, and a frozen one (SIGTSTP, Ctrl-Z) keeps them with nobody advertising:
  either way a VIP on two hosts.
- SIGPIPE, SIGTTIN, SIGTTOU, SIGXFSZ: ignored without a word. They come from writing (to a closed
  pipe, to the terminal from the background, past the file size limit), so logging them would
  write, and raise them again; the write fails or goes ahead instead.
- SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT keep their default: a real crash. SIGKILL and SIGSTOP
  cannot be caught: the restart cleanup and systemd's ExecStopPost handle those.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("iprotate")

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


def signal_name(signum: int) -> str:
    """SIGUSR2, or SIGRTMIN+3 for the real-time signals that have no name of their own."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


@dataclass
class SignalRules:
    """The handlers installed on a running loop; `remove` puts everything back."""

    loop: asyncio.AbstractEventLoop
    handled: list[int] = field(default_factory=list)
    previous: dict[int, Any] = field(default_factory=dict)

    def remove(self) -> None:
        for s in self.handled:
            self.loop.remove_signal_handler(s)
        for s, h in self.previous.items():
            signal.signal(s, h)
        self.handled.clear()
        self.previous.clear()


def install(
    loop: asyncio.AbstractEventLoop,
    *,
    stop: Callable[[], object],
    reload: Callable[[], object],
    status: Callable[[], object],
    demote: Callable[[], object],
) -> SignalRules:
    """Give every signal a user may send its rule (see the module docstring)."""
    rules = SignalRules(loop)

    def on(signum: int, callback: Callable[..., object], *args: object) -> None:
        loop.add_signal_handler(signum, callback, *args)
        rules.handled.append(signum)

    for s in STOP:
        on(s, _then, s, stop)
    on(signal.SIGHUP, reload)
    on(signal.SIGUSR1, status)
    on(signal.SIGUSR2, demote)
    for s in LOGGED:
        on(s, _ignored, s)
    for s in SILENT:
        rules.previous[s] = signal.signal(s, signal.SIG_IGN)
    return rules


def _then(signum: int, action: Callable[[], object]) -> None:
    log.info("%s: stopping", signal_name(signum))
    action()


def _ignored(signum: int) -> None:
    log.warning(
        "%s ignored: iprotate run stops on SIGTERM, SIGINT or SIGQUIT (SIGUSR2 demotes)",
        signal_name(signum),
    )
