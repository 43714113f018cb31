"""The IPv6 CARP socket: one raw AF_INET6 socket (next header 112) per interface, joined to every
IPv6 group the plan uses and shared by every IPv6 VIP; engine.wire's twin.

As the BSD kernels speak CARP over IPv6 (carp6_output/carp6_input), measured between namespaces
(tests/test_wire6.py):
- Sending: the kernel builds the IPv6 header; we hand it the 36 CARP bytes only. Hop limit 255
  for multicast (IPV6_MULTICAST_HOPS: the default is 1, which every receiver drops) and unicast
  (IPV6_UNICAST_HOPS). The source is the host's `address6`, chosen per packet with IPV6_PKTINFO
  (address + the advert interface's index) rather than bind(): bind() fails while the address is
  still tentative (a fresh boot's duplicate address detection) and, for a link-local address,
  needs its scope; with PKTINFO a send from an address that is not (yet) usable fails alone
  (EINVAL while tentative, measured) and the next one goes out when it is. The daemon does not
  even try: its address6 tentative, dadfailed or gone stands the IPv6 VIPs aside. The kernel
  does not checksum a raw socket's payload (IPV6_CHECKSUM is off for protocols other than
  ICMPv6): the CARP checksum is ours, over the CARP header alone.
- Receiving: the kernel strips the IPv6 header; recvmsg gives the 36+ CARP bytes, the source
  (the address tuple), and, asked with IPV6_RECVHOPLIMIT and IPV6_RECVPKTINFO, the hop limit and
  the destination (the group, or our unicast address) in ancillary data. The receive checks need
  all three (hop limit 255, the VIP's group, the sender is a host).
- One socket reads every group joined on the interface (IPV6_JOIN_GROUP with the ifindex), as
  for IPv4: the receive path tells groups apart by the destination. SO_BINDTODEVICE: adverts of
  another segment are not ours. IPV6_MULTICAST_LOOP 0: our own adverts do not come back.

The kernel source filter (engine.source_filter) reads the IPv4 header at offset 0. A raw IPv6
socket's filter runs on the payload (offset 0 is the CARP header, the IPv6 header already pulled),
but classic BPF reaches the network header through the negative offset SKF_NET_OFF: the same
program, reading the 16-byte source at SKF_NET_OFF + 8 in four words, filters IPv6 adverts
(source_filter.program6; measured in tests/test_wire6.py).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address

from iprotate.engine import source_filter
from iprotate.engine.wire import RECV_SIZE, grow_buffers, receive_buffer_size

CARP_PROTO = 112
HOP_LIMIT = 255
# Not all of these are in every Python's socket module.
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_PKTINFO = struct.Struct("=16sI")  # struct in6_pktinfo: address, ifindex
_ANC_SIZE = socket.CMSG_SPACE(_PKTINFO.size) + socket.CMSG_SPACE(4)


@dataclass(frozen=True)
class Received6:
    """One IPv6 CARP packet as the kernel hands it over: no IPv6 header, its facts beside."""

    carp: bytes
    src: IPv6Address
    dst: IPv6Address | None  # None: the kernel gave no destination (never seen)
    hop_limit: int | None  # None: no hop limit given (never seen); the node drops it


class CarpSocket6:
    """Receives every IPv6 CARP packet on `interface`; sends adverts from `src` to any joined
    group (or unicast address)."""

    def __init__(
        self,
        interface: str,
        ifindex: int,
        src: IPv6Address,
        sources: Iterable[IPv6Address],
        vips: int = 0,
    ) -> None:
        """`vips`: how many IPv6 VIPs the segment carries (the receive buffer grows with them,
        as engine.wire's: a fixed 1 MiB held 2,521 of a burst of 4,000 IPv6 adverts, measured in
        tests/test_wire6.py, and the survivor took the tail's VIPs from a live master)."""
        self.interface = interface
        self.ifindex = ifindex
        self.src = src
        self.groups: set[IPv6Address] = set()
        self._pktinfo = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _PKTINFO.pack(src.packed, ifindex))]
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, CARP_PROTO)
        try:
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, HOP_LIMIT)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, HOP_LIMIT)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            grow_buffers(s, receive_buffer_size(vips))
            # Before any group is joined: nothing unfiltered is queued.
            source_filter.attach6(s, sources)
        except OSError:
            s.close()
            raise
        self.sock = s

    def set_sources(self, sources: Iterable[IPv6Address]) -> None:
        """The cluster's hosts changed (a reload): filter on the new set."""
        source_filter.attach6(self.sock, sources)

    def grow(self, vips: int) -> None:
        """A reload changed how many IPv6 VIPs the segment carries: size the buffer for them."""
        grow_buffers(self.sock, receive_buffer_size(vips))

    def receive_buffer(self) -> int:
        """The socket's receive buffer in bytes, as the kernel reports it (twice what was set)."""
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def _mreq(self, group: IPv6Address) -> bytes:
        return struct.pack("=16sI", group.packed, self.ifindex)

    def join(self, group: IPv6Address) -> None:
        if group not in self.groups:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, self._mreq(group))
            self.groups.add(group)

    def leave(self, group: IPv6Address) -> None:
        if group in self.groups:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, self._mreq(group))
            self.groups.discard(group)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, carp: bytes, group: IPv6Address) -> None:
        # The scope id matters for link-local destinations (ff02::/16 is link-local in scope).
        self.sock.sendmsg([carp], self._pktinfo, 0, (str(group), 0, 0, self.ifindex))

    def recv(self) -> Received6 | None:
        """One packet, or None when nothing is waiting."""
        try:
            data, anc, _, addr = self.sock.recvmsg(RECV_SIZE, _ANC_SIZE)
        except BlockingIOError:
            return None
        dst: IPv6Address | None = None
        hops: int | None = None
        for level, kind, value in anc:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == IPV6_PKTINFO and len(value) >= _PKTINFO.size:
                dst = IPv6Address(_PKTINFO.unpack_from(value)[0])
            elif kind == IPV6_HOPLIMIT and len(value) >= 4:
                (hops,) = struct.unpack_from("=i", value)
        # The source as the kernel gives it: "fe80::1%eth1" for a link-local one.
        src = IPv6Address(addr[0].split("%", 1)[0])
        return Received6(data, src, dst, hops)

    def close(self) -> None:
        self.sock.close()
