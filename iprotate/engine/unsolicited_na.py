"""Unsolicited neighbour advertisements: gratuitous ARP's IPv6 twin (RFC 4861 7.2.6).

A new holder of an IPv6 VIP sends one to all nodes (ff02::1), so every neighbour cache that
holds an entry for the VIP moves to our MAC at once, without the client re-resolving. Sent when
and as often as the gratuitous ARPs of IPv4 VIPs (the machine's SendGarp effect).

The frame, 86 bytes, built by hand and sent through an AF_PACKET socket (microseconds, as
engine.garp; no address state is needed, so it works while the kernel still settles the VIP):
- Ethernet: to 33:33:00:00:00:01 (ff02::1's multicast MAC), from the NIC's own MAC, 0x86dd;
- IPv6: hop limit 255 (a receiver drops any other, RFC 4861 7.1.2), from the VIP itself (an
  address of the sending interface, as Linux's own unsolicited NAs do), to ff02::1;
- ICMPv6 type 136 code 0, flags: Override (the entry is replaced, not just marked stale by a
  NA without it), never Solicited (to a multicast destination it must be 0), Router only when
  the host forwards IPv6 on that interface (net.ipv6.conf.IF.forwarding = 1: a router that
  says it is not one makes its neighbours drop it from their default router lists);
- target = the VIP, one option: target link-layer address = our MAC.

Measured in namespaces (tests/test_unsolicited_na.py): a Linux client whose neighbour entry for
the VIP points at the old holder takes our MAC from one such frame (state STALE, then it
verifies by unicast probe to our MAC); a client with no entry ignores it (accept_untracked_na
is 0 by default), as for gratuitous ARP with arp_accept 0.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path

ETH_P_IPV6 = 0x86DD
ALL_NODES = IPv6Address("ff02::1")
ALL_NODES_MAC = bytes.fromhex("333300000001")
ICMPV6 = 58
NA_TYPE = 136
FLAG_ROUTER, FLAG_SOLICITED, FLAG_OVERRIDE = 0x80, 0x40, 0x20
HOP_LIMIT = 255
OPT_TARGET_LLADDR = 2
# How long the forwarding setting read for the router flag is reused. Read for every NA it cost
# 34 us, 8 times the frame itself: a takeover of 4,000 IPv6 VIPs held its last NA back 135 ms.
ROUTER_FLAG_TTL = 1.0


def checksum(data: bytes) -> int:
    """RFC 1071 ones'-complement sum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def na_frame(mac: bytes, vip: IPv6Address, router: bool = False) -> bytes:
    """The Ethernet frame of an unsolicited NA for `vip` from `mac`."""
    flags = FLAG_OVERRIDE | (FLAG_ROUTER if router else 0)
    option = struct.pack("!BB", OPT_TARGET_LLADDR, 1) + mac
    body = struct.pack("!BBHB3x", NA_TYPE, 0, 0, flags) + vip.packed + option
    pseudo = vip.packed + ALL_NODES.packed + struct.pack("!I3xB", len(body), ICMPV6)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, HOP_LIMIT)
    ip6 += vip.packed + ALL_NODES.packed
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def forwarding(interface: str, proc: Path = Path("/proc/sys/net/ipv6/conf")) -> bool:
    """Whether the host routes IPv6 on `interface` (the NA's router flag); False if unknown."""
    try:
        return (proc / interface / "forwarding").read_text().strip() == "1"
    except OSError:
        return False


class RouterFlag:
    """`forwarding(interface)`, read again at most every `ttl` seconds: an operator turning
    forwarding on or off is followed within a second, a takeover's NAs share one read."""

    def __init__(
        self,
        interface: str,
        proc: Path = Path("/proc/sys/net/ipv6/conf"),
        ttl: float = ROUTER_FLAG_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interface, self.proc, self.ttl, self.clock = interface, proc, ttl, clock
        self._read_at: float | None = None
        self._value = False

    def __call__(self) -> bool:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.ttl:
            self._value = forwarding(self.interface, self.proc)
            self._read_at = now
        return self._value


class NaSender:
    """An AF_PACKET socket bound to one interface, sending unsolicited NAs."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.router = RouterFlag(interface)
        # Protocol 0: the socket receives nothing (it only sends; bound to ETH_P_IPV6 it would
        # queue a copy of every IPv6 frame of the interface that nobody reads).
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.bind((interface, 0))
        except OSError:
            self.sock.close()
            raise

    @property
    def mac(self) -> bytes:
        """The interface's MAC now, not when the socket was made: it may change under a running
        daemon (a bond following its active slave, an operator), and an NA with the old one
        sends every client's traffic for the VIP to a MAC nobody has. One getsockname (the
        kernel reads the device's address), microseconds."""
        return bytes(self.sock.getsockname()[4][:6])

    def send(self, vip: IPv6Address) -> None:
        # Read again within a second: an operator may turn forwarding on or off at any time.
        frame = na_frame(self.mac, vip, self.router())
        try:
            self.sock.send(frame)
        except OSError as e:
            if e.errno != errno.ENETDOWN:
                raise
            # As engine.garp: an admin down leaves ENETDOWN pending on the socket; once more.
            self.sock.send(frame)

    def close(self) -> None:
        self.sock.close()
