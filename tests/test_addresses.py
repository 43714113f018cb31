"""The takeover path's netlink requests, for real, in a namespace of their own."""

from __future__ import annotations

import errno
import sys
from ipaddress import IPv4Interface

import pytest

from iprotate.engine.addresses import encode
from iprotate.lab.netns import Segment

pytestmark = pytest.mark.netns

SCRIPT = """
import sys
from ipaddress import IPv4Interface
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
