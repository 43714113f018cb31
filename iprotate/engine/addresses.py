"""Adding and removing VIPs on the takeover path: pre-encoded netlink requests on a plain socket.

pyroute2's async API spends about 0.25 ms of Python per request; with a few hundred VIPs taken
over at once that queues the last VIP a hundred milliseconds behind the first (bench/takeover.py).
Here each VIP's RTM_NEWADDR and RTM_DELADDR are packed by hand (the same bytes pyroute2's
`ifaddrmsg` encodes, checked in tests/test_addresses.py; pyroute2 took 0.1 ms a request, which
at 1,000 VIPs taken over at once put the last one 100 ms behind the first, bench/scale.py),
once per VIP, and a takeover costs one send and one ack read: the kernel handles the request
inside sendmsg, so the ack is waiting when send returns.
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv4Interface

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR

NETLINK_ROUTE = 0
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port


_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_ATTR = struct.Struct("=HH")  # rtattr: length, type
IFA_ADDRESS, IFA_LOCAL = 1, 2


def encode(op: str, ifindex: int, address: IPv4Interface, seq: int = 1) -> bytes:
    """The netlink request that adds ("add") or removes ("del") `address` on `ifindex`:
    IFA_LOCAL and IFA_ADDRESS both the address, as `ip addr add` and pyroute2 send it."""
    ip = address.ip.packed
    body = _IFADDRMSG.pack(socket.AF_INET, address.network.prefixlen, 0, 0, ifindex)
    body += _ATTR.pack(_ATTR.size + len(ip), IFA_LOCAL) + ip
    body += _ATTR.pack(_ATTR.size + len(ip), IFA_ADDRESS) + ip
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
        self._cache: dict[tuple[str, IPv4Interface], bytes] = {}

    def add(self, address: IPv4Interface) -> bool:
        """Add `address`; False if it was already there."""
        return self._request("add", address, errno.EEXIST)

    def delete(self, address: IPv4Interface) -> bool:
        """Remove `address`; False if it was not there (or its interface is gone)."""
        return self._request("del", address, errno.EADDRNOTAVAIL, errno.ENODEV)

    def close(self) -> None:
        self.sock.close()

    def _request(self, op: str, address: IPv4Interface, *fine: int) -> bool:
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
