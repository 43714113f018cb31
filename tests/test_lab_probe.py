"""The lab's client probe (iprotate.lab.probe) for both families: who answers ARP for an IPv4
VIP and neighbour solicitations for an IPv6 one, two answers and none alike."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv6Address

import pytest

from iprotate.lab.netns import Segment
from iprotate.lab.probe import parse_advert, solicitation


def test_solicitation_as_scapy_reads_it() -> None:
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
    from scapy.layers.l2 import Ether

    mac = bytes.fromhex("020000000002")
    raw = solicitation(mac, IPv6Address("2001:db8::200"), IPv6Address("2001:db8:113::10"))
    f = Ether(raw)
    assert f.dst == "33:33:ff:00:00:10" and f[IPv6].dst == "ff02::1:ff00:10"
    assert f[IPv6].hlim == 255 and f[ICMPv6ND_NS].tgt == "2001:db8:113::10"
    assert f[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:02"
    cksum = f[ICMPv6ND_NS].cksum
    del f[ICMPv6ND_NS].cksum
    assert Ether(bytes(f))[ICMPv6ND_NS].cksum == cksum
    assert parse_advert(raw) is None  # a solicitation is no answer


@pytest.mark.netns
def test_both_families_two_holders_and_none() -> None:
    vips = ["203.0.113.10", "2001:db8:113::10", "2001:db8:113::11"]
    with Segment() as seg:
        seg.add("alpha", 1)
        seg.add("bravo", 2)
        seg.add("client", 200)
        for n in ("alpha", "bravo"):
            seg.run(n, "ip", "addr", "add", "2001:db8:113::10/64", "dev", "eth1", "nodad")
        seg.run("bravo", "ip", "addr", "add", "203.0.113.10/24", "dev", "eth1")
        argv = [sys.executable, "-m", "iprotate.lab.probe", "--interface", "eth1"]
        argv += ["--src", "198.51.100.200", "--src6", "2001:db8::200", "--period", "0.3", *vips]
        p = seg.spawn("client", argv, stdout=subprocess.PIPE)
        assert p.stdout is not None
        rounds = [json.loads(p.stdout.readline()) for _ in range(2)]
        a, b = seg.members["alpha"].mac, seg.members["bravo"].mac
    assert rounds[-1]["macs"] == {vips[0]: [b], vips[1]: sorted([a, b]), vips[2]: []}
