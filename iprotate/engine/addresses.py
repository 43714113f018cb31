"""Adding and removing VIPs on the takeover path: pre-encoded netlink requests on a plain socket.

pyroute2's async API spends about 0.25 ms of Python per request; with a few hundred VIPs taken
over at once that queues the last VIP a hundred milliseconds behind the first (bench/takeover.py).
Here each VIP's RTM_NEWADDR and RTM_DELADDR are packed by hand (the same bytes pyroute2's
`ifaddrmsg` encodes, checked in tests/test_addresses.py; pyroute2 took 0.1 ms a request, which
at 1,000 VIPs taken over at once put the last one 100 ms behind the first, bench/scale.py),
once per VIP, and a takeover costs one send and one ack read: the kernel handles the request
inside sendmsg, so the ack is waiting when send returns.

IPv6 VIPs are added without duplicate address detection (IFA_F_NODAD, as `ip addr add ... nodad`):
with it the address sits "tentative" for about a second (the kernel does not answer neighbour
solicitations for it, the VIP is dead) and, if the old holder still answers for it at that moment
(a split brain healing), ends "dadfailed", unusable until removed by hand. The flag goes both in
ifaddrmsg's 8-bit flags and in IFA_FLAGS (the 32-bit attribute newer kernels read first).
Even so, an IPv6 address is not in service when the ack comes back: the kernel inserts its local
route (what makes it accept packets for the address) from a worker afterwards, and only then sends
RTM_NEWADDR (measured in a namespace: the route was missing right after the ack in 129 of 300
adds, and came 0.1 ms (p50) to 3.5 ms (max) after it). IPv4 addresses are in service within the
request. The daemon therefore holds a fresh IPv6 VIP's announcement until then (engine.daemon).

Several IPv6 VIPs of one prefix (measured, tests/test_addresses.py): IPv6 has no primary and
secondary addresses, so nothing like IPv4's promote_secondaries is needed. Each address stands
alone; deleting one leaves the others, and the prefix route stays while any address of the
prefix is on the interface (the kernel drops it with the last one).
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv4Interface, IPv6Interface

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR

NETLINK_ROUTE = 0
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
IFA_F_NODAD = 0x02

Interface = IPv4Interface | IPv6Interface


_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_ATTR = struct.Struct("=HH")  # rtattr: length, type
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8


def encode(op: str, ifindex: int, address: Interface, seq: int = 1) -> bytes:
    """The netlink request that adds ("add") or removes ("del") `address` on `ifindex`:
    IFA_LOCAL and IFA_ADDRESS both the address, as `ip addr add` and pyroute2 send it; IPv6
    addresses are added without duplicate address detection (IFA_F_NODAD in both places)."""
    ip = address.ip.packed
    v6 = address.version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    nodad = v6 and op == "add"
    body = _IFADDRMSG.pack(
        family, address.network.prefixlen, IFA_F_NODAD if nodad else 0, 0, ifindex
    )
    body += _ATTR.pack(_ATTR.size + len(ip), IFA_LOCAL) + ip
    body += _ATTR.pack(_ATTR.size + len(ip), IFA_ADDRESS) + ip
    if nodad:
        body += _ATTR.pack(_ATTR.size + 4, IFA_FLAGS) + struct.pack("=I", IFA_F_NODAD)
    flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if op == "add" else 0)
    kind = RTM_NEWADDR if op == "add" else RTM_DELADDR
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


class AddressSetter:
    """Adds and removes addresses on one interface; "already there" and "not there" are fine."""

    def __init__(self, ifindex: int) -> None:
        self.ifindex = ifindex
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.settimeout(2.0)
        self.sock.bind((0, 0))
        self._cache: dict[tuple[str, Interface], bytes] = {}

    def add(self, address: Interface) -> bool:
        """Add `address`; False if it was already there."""
        return self._request("add", address, errno.EEXIST)

    def delete(self, address: Interface) -> bool:
        """Remove `address`; False if it was not there (or its interface is gone)."""
        return self._request("del", address, errno.EADDRNOTAVAIL, errno.ENODEV)

    def close(self) -> None:
        self.sock.close()

    def _request(self, op: str, address: Interface, *fine: int) -> bool:
        key = (op, address)
        data = self._cache.get(key)
        if data is None:
            data = self._cache[key] = encode(op, self.ifindex, address)
        self.sock.send(data)
        code = self._ack()
        if code != 0 and code not in fine:
            raise OSError(code, f"ip addr {op} {address}: {errno.errorcode.get(code, code)}")
        return code == 0

    def _ack(self) -> int:
        """The errno of the kernel's answer (0: done)."""
        while True:
            reply = self.sock.recv(65536)
            _, kind, _, _, _ = _HEADER.unpack_from(reply)
            if kind == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", reply, _HEADER.size)
                return -error
