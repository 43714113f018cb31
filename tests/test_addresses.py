"""The takeover path's netlink requests, for real, in a namespace of their own."""

from __future__ import annotations

import errno
import sys
import time
from ipaddress import IPv4Interface, IPv6Interface

import pytest

from iprotate.engine.addresses import encode
from iprotate.lab.netns import Segment

pytestmark = pytest.mark.netns

SCRIPT = """
import sys
from ipaddress import IPv4Interface, IPv6Interface
from iprotate.engine.addresses import AddressSetter
import socket
s = AddressSetter(socket.if_nametoindex("eth1"))
a = IPv4Interface("203.0.113.10/24")
print(s.add(a), s.add(a), s.delete(a), s.delete(a))
bad = AddressSetter(999999)
try:
    bad.add(a)
except OSError as e:
    print("error", e.errno)
"""


def test_add_and_delete_are_idempotent_and_errors_are_raised() -> None:
    with Segment() as seg:
        seg.add("alpha", 1)
        out = seg.run("alpha", sys.executable, "-c", SCRIPT)
        first, second = out.splitlines()
        assert first == "True False True False"
        assert second == f"error {errno.ENODEV}"
        assert seg.addresses("alpha") == ["198.51.100.1/24"]


def test_encoded_requests() -> None:
    data = encode("add", 7, IPv4Interface("203.0.113.10/24"))
    assert len(data) == 40 and data[4:6] == (20).to_bytes(2, "little")  # RTM_NEWADDR
    assert data[16:24] == bytes([2, 24, 0, 0]) + (7).to_bytes(4, "little")  # AF_INET /24 dev 7
    assert encode("del", 7, IPv4Interface("203.0.113.10/24"))[4:6] == (21).to_bytes(2, "little")


SCRIPT6 = """
import socket, sys
from ipaddress import IPv6Interface
from iprotate.engine.addresses import AddressSetter
s = AddressSetter(socket.if_nametoindex("eth1"))
op, *addrs = sys.argv[1:]
print(*[getattr(s, op)(IPv6Interface(a)) for a in addrs])
"""


def _v6(seg: Segment, what: str) -> str:
    return seg.run("alpha", "ip", "-6", "-o", what, "show", "dev", "eth1")


def test_ipv6_vips_skip_dad_and_stand_alone() -> None:
    vips = [f"2001:db8:113::{i}/64" for i in (10, 11, 12)]
    with Segment() as seg:
        seg.add("alpha", 1)
        seg.add("bravo", 2)
        out = seg.run("alpha", sys.executable, "-c", SCRIPT6, "add", *vips, vips[0])
        assert out.split() == ["True", "True", "True", "False"]
        # Usable at once: never tentative (duplicate address detection would hold it ~1 s).
        lines = [ln for ln in _v6(seg, "addr").splitlines() if "2001:db8:113::" in ln]
        assert len(lines) == 3 and not any("tentative" in ln for ln in lines), lines
        # A VIP held by a neighbour too (a healing split brain) does not end "dadfailed".
        seg.run("bravo", "ip", "addr", "add", vips[1], "dev", "eth1", "nodad")
        seg.run("alpha", sys.executable, "-c", SCRIPT6, "delete", vips[1])
        seg.run("alpha", sys.executable, "-c", SCRIPT6, "add", vips[1])
        time.sleep(1.5)  # past the time DAD would take
        vip = [ln for ln in _v6(seg, "addr").splitlines() if vips[1] in ln]
        assert len(vip) == 1 and "dadfailed" not in vip[0] and "tentative" not in vip[0], vip
        # No primary/secondary in IPv6: deleting the first VIP of the prefix keeps the others,
        # and the prefix route stays while any of them is there.
        out = seg.run("alpha", sys.executable, "-c", SCRIPT6, "delete", vips[0], vips[0])
        assert out.split() == ["True", "False"]
        assert sorted(seg.addresses("alpha", family=6)) == sorted(
            ["2001:db8::1/64", vips[1], vips[2]]
        )
        kernel = [r for r in _v6(seg, "route").splitlines() if "proto kernel" in r]
        assert any(r.startswith("2001:db8:113::/64 ") for r in kernel), kernel
        seg.run("alpha", sys.executable, "-c", SCRIPT6, "delete", vips[1], vips[2])
        assert seg.addresses("alpha", family=6) == ["2001:db8::1/64"]
        # The lab's own on-link route for the VIP prefix is all that is left of it.
        routes = [r for r in _v6(seg, "route").splitlines() if "2001:db8:113::" in r]
        assert routes == [r for r in routes if "proto kernel" not in r], routes
        assert seg.addresses("alpha") == ["198.51.100.1/24"]


def test_encoded_ipv6_request_asks_for_nodad() -> None:
    data = encode("add", 7, IPv6Interface("2001:db8:113::10/64"))
    assert data[16:18] == bytes([10, 64]) and data[18] & 0x02  # AF_INET6 /64, IFA_F_NODAD
    assert b"\x08\x00\x08\x00\x02\x00\x00\x00" in data  # IFA_FLAGS (8) = NODAD
    assert not encode("del", 7, IPv6Interface("2001:db8:113::10/64"))[18] & 0x02


@pytest.mark.parametrize("op", ["add", "del"])
@pytest.mark.parametrize("address", ["203.0.113.10/24", "198.18.3.250/32", "203.0.113.0/0"])
def test_requests_are_the_bytes_pyroute2_encodes(op: str, address: str) -> None:
    """The hand-packed requests are byte for byte what pyroute2's message class makes."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    a = IPv4Interface(address)
    msg = ifaddrmsg()
    msg["family"] = 2
    msg["prefixlen"] = a.network.prefixlen
    msg["index"] = 7
    msg["attrs"] = [("IFA_LOCAL", str(a.ip)), ("IFA_ADDRESS", str(a.ip))]
    msg["header"]["type"] = RTM_NEWADDR if op == "add" else RTM_DELADDR
    flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if op == "add" else 0)
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = 5
    msg.encode()
    assert encode(op, 7, a, seq=5) == bytes(msg.data)
