"""systemd's notify protocol (sd_notify(3)), without the systemd Python package.

A service started with ``Type=notify`` finds a datagram socket in ``NOTIFY_SOCKET`` (a path, or an
abstract name written ``@name``) and sends newline-separated ``KEY=VALUE`` assignments to it:
``READY=1`` once it serves, ``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` at least every
``WATCHDOG_USEC`` microseconds when ``WatchdogSec=`` is set, ``STOPPING=1`` and ``RELOADING=1``.

Outside systemd (``NOTIFY_SOCKET`` unset) every method is a no-op, so the daemon calls them
unconditionally. A failed send is logged at debug and never raised: telling systemd is best effort,
and the VIPs must not go down because the journal or PID 1 is having a bad day.

Typical use in the daemon::

    notifier = Notifier()
    ...  # sockets joined, machines started
    notifier.ready(f"{n} VIPs")
    interval = notifier.watchdog_interval()
    if interval:
        ...  # call notifier.watchdog() every interval / 2 from the event loop
    ...  # SIGHUP
    notifier.reloading(); reload(); notifier.ready("reloaded")
    ...  # SIGTERM
    notifier.stopping()
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("iprotate")


class Notifier:
    """Talks to the service manager named by ``NOTIFY_SOCKET`` in `env` (default `os.environ`).

    The environment is read once, here; `pid` (default our own) is what ``WATCHDOG_PID`` must name
    for the watchdog to be ours."""

    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if env is None else env
        self._env = dict(env)
        self._pid = os.getpid() if pid is None else pid
        self.address: str | None = _socket_address(env.get("NOTIFY_SOCKET", ""))

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to tell."""
        return self.address is not None

    # --- messages ----------------------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram. True if it was sent."""
        if self.address is None:
            return False
        data = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(data, self.address)
        except OSError as e:
            log.debug("sd_notify %r to %r failed: %s", assignments, self.address, e)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Startup (or a reload) is complete: systemd's start job, or the reload, finishes."""
        if status:
            return self.notify("READY=1", _status(status))
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """A one-line status for ``systemctl status``."""
        return self.notify(_status(text))

    def watchdog(self) -> bool:
        """Keep-alive: systemd kills and restarts us if these stop for ``WatchdogSec=``."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """We are shutting down (handing the VIPs over); no more READY expected."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """A reload starts; send `ready()` when it is done.

        systemd >= 253 needs MONOTONIC_USEC (CLOCK_MONOTONIC, as time.monotonic reads on Linux) to
        tell this reload from an earlier one; older versions ignore the extra field."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    # --- watchdog ----------------------------------------------------------------------------

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds, or None if there is no watchdog for us.

        Ping with `watchdog()` at least twice per timeout (sd_watchdog_enabled(3) advises half of
        it): a ping late by one event-loop hiccup must not get us killed."""
        if self.address is None:
            return None
        usec = self._env.get("WATCHDOG_USEC", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        pid = self._env.get("WATCHDOG_PID")
        # Set for a process that forked us, the watchdog is the parent's, not ours.
        if pid is not None and (not pid.isdigit() or int(pid) != self._pid):
            return None
        return int(usec) / 1_000_000


async def keep_watchdog(notifier: Notifier) -> None:
    """Ping systemd's watchdog (WatchdogSec=) at half its timeout, from the loop, so a hung loop
    is killed; returns at once where there is no watchdog for us."""
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval / 2)


def _status(text: str) -> str:
    # A newline would end the assignment and start another one (READY=1, say) in the datagram.
    return "STATUS=" + " ".join(text.splitlines())


def _socket_address(value: str) -> str | None:
    """NOTIFY_SOCKET as a socket address: a path, or an abstract name (``@name`` -> NUL + name)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value:
        # vsock:CID:PORT (systemd >= 253, for VMs) and anything else: not for a host daemon.
        log.debug("NOTIFY_SOCKET=%r is not a unix socket address; not notifying", value)
    return None
