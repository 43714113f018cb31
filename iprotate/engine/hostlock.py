"""One daemon per host, on that host: checked before `iprotate run` changes anything.

The lock is a Linux abstract unix socket named after the host's address. Abstract sockets belong
to the network namespace (the lab's hosts, each in its own namespace, each get their own) and the
kernel releases them when the process dies, however it dies: no stale lock file to clean up. A
second daemon that finds the name taken connects to it and names the holder's PID.

A holder that is stopping says so to whoever connects (STOPPING), and a new daemon waits for it
to finish (at most `wait_stopping` seconds) rather than being refused: `kill` then `iprotate run`
used to leave the host with no daemon at all, the new one refused while the old one handed its
VIPs over.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable
from ipaddress import IPv4Address

from iprotate.cluster.model import Host
from iprotate.engine.control import peer_pid


class HostInUse(Exception):
    """Another daemon of this network namespace runs this host, or the host is not here."""


def _name(host: Host) -> bytes:
    return b"\0iprotate/" + str(host.address).encode()


STOPPING = b"stopping"
WAIT_STOPPING = 15.0  # seconds a new daemon waits for a stopping one (hand-over, hooks)


def _holder(host: Host) -> tuple[int | None, bool | None]:
    """(PID, stopping) of the daemon holding `host`'s lock here; PID None if free, 0 if
    unknown (it does not accept: frozen?); stopping None if it did not answer (frozen, or in
    its last instant, the lock about to go)."""
    give_up = time.monotonic() + 1.0
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.setblocking(False)
            try:
                s.connect(_name(host))
            except ConnectionRefusedError:
                return None, False
            except BlockingIOError:  # its backlog is full until the holder accepts
                if time.monotonic() > give_up:
                    return 0, False  # it does not accept (frozen?): taken, by whom unknown
                time.sleep(0.01)
                continue
            pid = peer_pid(s)
            s.settimeout(0.5)  # the holder says STOPPING, or closes, once its loop accepts
            try:
                said = s.recv(len(STOPPING))
            except OSError:
                return pid, None
            return pid, said == STOPPING


def holder_pid(host: Host) -> int | None:
    """The PID of the daemon holding `host`'s lock in this network namespace, None if free."""
    return _holder(host)[0]


def lock(host: Host, wait_stopping: float = WAIT_STOPPING) -> socket.socket:
    """Take `host`'s lock for this network namespace; keep the socket open while running.

    A holder that is stopping is waited for, up to `wait_stopping` seconds. HostInUse, with one
    line naming the holder's PID, if another daemon has it."""
    give_up = time.monotonic() + wait_stopping
    silent_until: float | None = None
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(_name(host))
            # Listening lets a second daemon connect and read our PID (SO_PEERCRED).
            s.listen(64)
            s.setblocking(False)
            return s
        except OSError:
            s.close()
        pid, stopping = _holder(host)
        if pid is None:
            continue  # released meanwhile: take it
        if stopping is None and silent_until is None:
            silent_until = time.monotonic() + 1.0  # its last instant? ask again, briefly
        waiting = stopping or (stopping is None and time.monotonic() < (silent_until or 0.0))
        if waiting and time.monotonic() < give_up:
            time.sleep(0.05)
            continue
        who = f"pid {pid}" if pid else "another process"
        still = " (still stopping)" if stopping else ""
        raise HostInUse(
            f"host {host.name} is already run by {who}{still} in this network namespace"
        )


def close_waiting(sock: socket.socket, stopping: bool = False) -> None:
    """Close the connections second daemons made to read our PID, so they never fill the
    backlog (a daemon restarted in a loop by its supervisor must still get the PID); while
    `stopping`, tell them first, so a new daemon waits for us instead of giving up."""
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        if stopping:
            with contextlib.suppress(OSError):
                conn.send(STOPPING)
        conn.close()


def check_local(host: Host, local: Iterable[IPv4Address]) -> None:
    """HostInUse if `host`'s address is not configured here: its adverts could not leave from
    it, and it would take the VIPs of a host that may well be alive elsewhere."""
    if host.address not in set(local):
        raise HostInUse(
            f"{host.name}'s address {host.address} is not on this machine: "
            "iprotate run --host must run on that host"
        )
