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
