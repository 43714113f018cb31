"""The CARP socket: one raw IPv4 socket per interface, joined to every group the plan uses and
shared by every VIP.

A raw socket receives every CARP packet that reaches the host, whatever group it joined, so one
socket per group would hand each advert to every one of them (measured: the survivor's CPU grows
with each extra group). One socket per interface reads each advert once; the receive path tells
groups apart by the destination address.

As measured in CARP.md: join with the interface's index (joining without one fails in a namespace
with no default route), never bind() to the unicast source (the socket would receive nothing),
multicast TTL 255 (ucarp drops anything else), TOS 0x10 like ucarp, and let the kernel build the
IP header; send the 36 CARP bytes to (group, 0).

A kernel filter (engine.source_filter) passes the cluster's hosts and only a sample of anyone else,
so a flood from addresses that are no host costs no Python time.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address

from iprotate.carp.codec import CARP_PROTO
from iprotate.engine import source_filter

IPTOS_LOWDELAY = 0x10
RECV_SIZE = 2048


class CarpSocket:
    """Receives every CARP packet on `interface`; sends adverts from `src` to any joined group."""

    def __init__(
        self, interface: str, ifindex: int, src: IPv4Address, sources: Iterable[IPv4Address]
    ) -> None:
        self.interface = interface
        self.groups: set[IPv4Address] = set()
        self._mreqn = lambda group: struct.pack("=4s4si", group.packed, src.packed, ifindex)
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, CARP_PROTO)
        try:
            s.setblocking(False)
            # Only packets that arrive on this interface: adverts of another segment are not ours.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            s.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, self._mreqn(IPv4Address("0.0.0.0"))
            )
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, IPTOS_LOWDELAY)
            # Before any group is joined: nothing unfiltered is queued.
            source_filter.attach(s, sources)
        except OSError:
            s.close()
            raise
        self.sock = s

    def set_sources(self, sources: Iterable[IPv4Address]) -> None:
        """The cluster's hosts changed (a reload): filter on the new set."""
        source_filter.attach(self.sock, sources)

    def join(self, group: IPv4Address) -> None:
        if group not in self.groups:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, self._mreqn(group))
            self.groups.add(group)

    def leave(self, group: IPv4Address) -> None:
        if group in self.groups:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, self._mreqn(group))
            self.groups.discard(group)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, carp: bytes, group: IPv4Address) -> None:
        self.sock.sendto(carp, (str(group), 0))

    def recv(self) -> bytes | None:
        """One packet (IP header included), or None when nothing is waiting."""
        try:
            return self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return None

    def close(self) -> None:
        self.sock.close()
