"""One daemon per host, on that host: checked before `iprotate run` changes anything.

The lock is a Linux abstract unix socket named after the host's address. Abstract sockets belong
to the network namespace (the lab's hosts, each in its own namespace, each get their own) and the
kernel releases them when the process dies, however it dies: no stale lock file to clean up. A
second daemon that finds the name taken connects to it and names the holder's PID.
"""

from __future__ import annotations

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


def holder_pid(host: Host) -> int | None:
    """The PID of the daemon holding `host`'s lock in this network namespace, None if free."""
    give_up = time.monotonic() + 1.0
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.setblocking(False)
            try:
                s.connect(_name(host))
            except ConnectionRefusedError:
                return None
            except BlockingIOError:  # its backlog is full until the holder accepts
                if time.monotonic() > give_up:
                    return 0  # it does not accept (frozen?): taken, by whom unknown
                time.sleep(0.01)
                continue
            return peer_pid(s)


def lock(host: Host) -> socket.socket:
    """Take `host`'s lock for this network namespace; keep the socket open while running.

    HostInUse, with one line naming the holder's PID, if another daemon has it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(_name(host))
        # Listening lets a second daemon connect and read our PID (SO_PEERCRED).
        s.listen(64)
        s.setblocking(False)
    except OSError:
        s.close()
        pid = holder_pid(host)
        who = f"pid {pid}" if pid else "another process"
        raise HostInUse(
            f"host {host.name} is already run by {who} in this network namespace"
        ) from None
    return s


def close_waiting(sock: socket.socket) -> None:
    """Close the connections second daemons made to read our PID, so they never fill the
    backlog (a daemon restarted in a loop by its supervisor must still get the PID)."""
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.close()


def check_local(host: Host, local: Iterable[IPv4Address]) -> None:
    """HostInUse if `host`'s address is not configured here: its adverts could not leave from
    it, and it would take the VIPs of a host that may well be alive elsewhere."""
    if host.address not in set(local):
        raise HostInUse(
            f"{host.name}'s address {host.address} is not on this machine: "
            "iprotate run --host must run on that host"
        )
