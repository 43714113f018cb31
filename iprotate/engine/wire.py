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
so a flood from addresses that are no host costs no Python time; a larger receive buffer than the
kernel's default absorbs the moments the daemon is not scheduled during a flood that does pass.
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
# The receive buffer asked for. The kernel's default (rmem_default, about 208 KiB) holds only a
# few hundred packets (each costs its truesize, several hundred bytes): under a flood that passes
# the filter, a daemon descheduled for a few milliseconds finds it full and the kernel drops real
# adverts with the junk (bench/flood.py, 30,000 packets/s: a tenth of all packets lost, against
# a few percent with this). The kernel doubles it: about 2 MiB, a few thousand packets, under
# 0.1 s of such a flood; an advert queued behind them waits that long at most. A flood above
# what the daemon can judge fills any buffer: then only the delay grows, so it stays moderate.
RECV_BUFFER = 1 << 20
# ... and at least this much per VIP on the segment: every master's adverts leave in one burst per
# interval when its VIPs were taken together (all of them, at start-up), so a burst holds up to
# one packet per VIP. 2 MiB held about 2,700 of them: a survivor of a 4,000-VIP segment that was
# descheduled for a moment lost the tail of each burst, the same VIPs every second, and took them
# over while their master was alive (bench/scale.py). 1 KiB per VIP (doubled by the kernel) holds
# a whole burst with room to spare: 8 MiB at 4,000 VIPs.
RECV_BUFFER_PER_VIP = 1 << 10
# ... and at most this (16,000 VIPs' worth): a cluster file with tens of thousands of VIPs must not
# let a flood pin a hundred MiB of kernel memory behind one socket.
RECV_BUFFER_MAX = 16 << 20


def receive_buffer_size(vips: int) -> int:
    """The receive buffer asked for a segment of `vips` VIPs (the kernel doubles it)."""
    return min(RECV_BUFFER_MAX, max(RECV_BUFFER, vips * RECV_BUFFER_PER_VIP))


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


# Group destinations remembered by object (see CarpSocket.send): more than a cluster has
# groups, so only reloads ever fill it; then it starts again.
MAX_DESTINATIONS = 1024


class CarpSocket:
    """Receives every CARP packet on `interface`; sends adverts from `src` to any joined group."""

    def __init__(
        self,
        interface: str,
        ifindex: int,
        src: IPv4Address,
        sources: Iterable[IPv4Address],
        vips: int = 0,
    ) -> None:
        """`vips`: how many VIPs the segment carries (the receive buffer grows with them)."""
        self.interface = interface
        self.groups: set[IPv4Address] = set()
        # Each group's destination as sendto wants it, made once: str() of an address per
        # advert was a visible part of a master's send path at 1,000 VIPs (bench/scale.py).
        # Found by the group object's identity (the plan's objects, the same for every advert;
        # the object is kept and compared, so a reused id never finds another's): an
        # IPv4Address hashes as hash(hex(int)) on every lookup.
        self._dest: dict[int, tuple[IPv4Address, tuple[str, int]]] = {}
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
            grow_buffers(s, receive_buffer_size(vips))
            # Before any group is joined: nothing unfiltered is queued.
            source_filter.attach(s, sources)
        except OSError:
            s.close()
            raise
        self.sock = s

    def receive_buffer(self) -> int:
        """The socket's receive buffer in bytes, as the kernel reports it (twice what was set)."""
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

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
        known = self._dest.get(id(group))
        if known is None or known[0] is not group:
            if len(self._dest) >= MAX_DESTINATIONS:  # each reload brings new objects
                self._dest.clear()
            known = self._dest[id(group)] = (group, (str(group), 0))
        self.sock.sendto(carp, known[1])

    def recv(self) -> bytes | None:
        """One packet (IP header included), or None when nothing is waiting."""
        try:
            return self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return None

    def close(self) -> None:
        self.sock.close()


def grow_buffers(s: socket.socket, size: int = RECV_BUFFER) -> None:
    """`size`, past net.core.rmem_max when allowed (CAP_NET_ADMIN, which the daemon has to set
    addresses anyway); else as much as rmem_max allows. The send buffer too: a master sends the
    adverts of a grid point back to back (engine.daemon._emit_all), a few hundred packets, and
    the default (wmem_default, about 208 KiB of truesize: some 270 packets) refused the tail of
    a large one with EAGAIN until the NIC's queue drained."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, plain, size)
