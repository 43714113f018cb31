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
- Before the loop runs (imports, the plan, netlink, the start-up cleanup: half a second and
  more on a loaded machine) `early_signals.hold_early` records the signals instead: a SIGHUP or
  SIGUSR1 there used to kill the daemon (their default action) and a SIGINT to end it with a
  traceback. `install` then acts on them: a stop signal stops the daemon as soon as it runs (it
  holds no VIP yet), a SIGHUP reloads, a SIGUSR1 logs the status, the others are logged and
  ignored.
- SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT keep their default: a real crash. SIGKILL and SIGSTOP
  cannot be caught: the restart cleanup and systemd's ExecStopPost handle those.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from iprotate.engine.early_signals import LOGGED, SILENT, STOP, EarlySignals

log = logging.getLogger("iprotate")


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
        """Put back the handlers found at `install`. The loop's own removal leaves the default
        action, and the daemon still has work to do after it (hooks, closing sockets): a SIGHUP
        or a second SIGTERM then killed it (exit -1 instead of 0). Under `iprotate run` what was
        there is early_signals' recorder, so such a late signal is harmlessly recorded."""
        # Between the loop's removal and ours a signal would meet the default action: blocked
        # meanwhile (in this thread; the window is one call wide for any other).
        old = signal.pthread_sigmask(signal.SIG_BLOCK, set(self.previous))
        try:
            for s in self.handled:
                self.loop.remove_signal_handler(s)
                signal.signal(s, self.previous.pop(s))
            for s, h in self.previous.items():
                signal.signal(s, h)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.handled.clear()
        self.previous.clear()


def install(
    loop: asyncio.AbstractEventLoop,
    *,
    stop: Callable[[], object],
    reload: Callable[[], object],
    status: Callable[[], object],
    demote: Callable[[], object],
    early: EarlySignals | None = None,
) -> SignalRules:
    """Give every signal a user may send its rule (see the module docstring); then act on those
    `early` recorded before the loop ran."""
    rules = SignalRules(loop)

    def on(signum: int, callback: Callable[..., object], *args: object) -> None:
        before = signal.getsignal(signum)
        rules.previous[signum] = signal.SIG_DFL if before is None else before
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
    if early is not None:
        _replay(early, stop=stop, reload=reload, status=status)
    return rules


def install_for_daemon(
    loop: asyncio.AbstractEventLoop,
    stopping: asyncio.Event,
    reload: Callable[[], Awaitable[object]],
    status: Callable[[], object],
    demote: Callable[[], object],
    early: EarlySignals | None,
) -> SignalRules:
    """`install` as both daemons (CARP and BGP mode) use it: a stop signal sets `stopping`, which
    the daemon's run awaits; SIGHUP starts `reload` as a task of its own (it awaits, a signal
    handler may not)."""
    return install(
        loop,
        stop=stopping.set,
        reload=lambda: asyncio.ensure_future(reload()),
        status=status,
        demote=demote,
        early=early,
    )


def _replay(
    early: EarlySignals,
    *,
    stop: Callable[[], object],
    reload: Callable[[], object],
    status: Callable[[], object],
) -> None:
    """What arrived during the start-up, once: a stop wins over everything else."""
    got = early.take()
    stops = [s for s in got if s in STOP]
    if stops:
        log.info("%s during start-up: stopping", signal_name(stops[0]))
        stop()
        return
    if signal.SIGHUP in got:
        log.info("SIGHUP during start-up: reloading")
        reload()
    if signal.SIGUSR1 in got:
        status()
    for s in dict.fromkeys(x for x in got if x not in (signal.SIGHUP, signal.SIGUSR1)):
        log.warning("%s during start-up ignored (nothing to demote yet)", signal_name(s))


def _then(signum: int, action: Callable[[], object]) -> None:
    log.info("%s: stopping", signal_name(signum))
    action()


def _ignored(signum: int) -> None:
    log.warning(
        "%s ignored: iprotate run stops on SIGTERM, SIGINT or SIGQUIT (SIGUSR2 demotes)",
        signal_name(signum),
    )
