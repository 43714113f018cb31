"""Unsolicited neighbour advertisements (iprotate.engine.unsolicited_na): the frame checked by
scapy's independent decoder, and a real client's neighbour cache moving to the new holder."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from labtools import WIRE_TOOL, wait_for

from iprotate.engine.unsolicited_na import na_frame
from iprotate.lab.netns import Segment

VIP = IPv6Address("2001:db8:113::10")
MAC = bytes.fromhex("020000000001")


def test_frame_as_scapy_reads_it() -> None:
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
    from scapy.layers.l2 import Ether

    raw = na_frame(MAC, VIP)
    f = Ether(raw)
    assert f.dst == "33:33:00:00:00:01" and f.src == "02:00:00:00:00:01" and f.type == 0x86DD
    assert f[IPv6].src == str(VIP) and f[IPv6].dst == "ff02::1"
    assert f[IPv6].hlim == 255 and f[IPv6].nh == 58 and f[IPv6].plen == 32
    na = f[ICMPv6ND_NA]
    assert (na.type, na.code, na.R, na.S, na.O) == (136, 0, 0, 0, 1)
    assert na.tgt == str(VIP)
    assert f[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:01"
    # scapy recomputes the checksum when the field is cleared: it must find ours.
    again = Ether(raw)
    del again[ICMPv6ND_NA].cksum
    assert Ether(bytes(again))[ICMPv6ND_NA].cksum == na.cksum
    assert len(raw) == 86
    assert Ether(na_frame(MAC, VIP, router=True))[ICMPv6ND_NA].R == 1


SEND = """
import sys
from ipaddress import IPv6Address
from pathlib import Path
from iprotate.engine.unsolicited_na import NaSender
s = NaSender("eth1")
s.send(IPv6Address(sys.argv[1]))
print(s.mac.hex(":"))
"""


def _client_mac(seg: Segment) -> str | None:
    out = seg.run("client", "ip", "-6", "neigh", "show", str(VIP), "dev", "eth1")
    m = re.search(r"lladdr (\S+)", out)
    return m.group(1) if m else None


@pytest.mark.netns
def test_the_client_cache_moves_to_the_sender() -> None:
    with Segment() as seg:
        seg.add("alpha", 1)
        seg.add("bravo", 2)
        seg.add("client", 200)
        seg.run("bravo", "ip", "addr", "add", f"{VIP}/64", "dev", "eth1", "nodad")
        seg.run("client", "ping", "-6", "-c", "1", "-W", "1", str(VIP))
        assert _client_mac(seg) == seg.members["bravo"].mac
        # The VIP moves; the client's entry stays REACHABLE (on bravo) until told otherwise.
        seg.run("bravo", "ip", "addr", "del", f"{VIP}/64", "dev", "eth1")
        seg.run("alpha", "ip", "addr", "add", f"{VIP}/64", "dev", "eth1", "nodad")
        assert _client_mac(seg) == seg.members["bravo"].mac
        sent_from = seg.run("alpha", sys.executable, "-c", SEND, str(VIP)).strip()
        assert sent_from == seg.members["alpha"].mac
        wait_for(lambda: _client_mac(seg) == seg.members["alpha"].mac, 1.0)
        # And the client reaches the VIP there at once.
        seg.run("client", "ping", "-6", "-c", "1", "-W", "1", str(VIP))


MAC_CHANGE = """
import subprocess, sys
from ipaddress import IPv4Address, IPv6Address
from iprotate.engine.garp import GarpSender
from iprotate.engine.unsolicited_na import NaSender
na, garp = NaSender("eth1"), GarpSender("eth1")
subprocess.run(["ip", "link", "set", "eth1", "address", sys.argv[1]], check=True)
na.send(IPv6Address("2001:db8:113::10"))
garp.send(IPv4Address("203.0.113.10"))
"""


@pytest.mark.netns
def test_nas_and_garps_carry_the_mac_the_interface_has_now() -> None:
    """The VIP interface's MAC changed while the daemon runs (a bond whose MAC follows its
    active slave, fail_over_mac=active; an operator): the senders kept the MAC they were made
    with, so every takeover announced a MAC nobody has, and clients sent the VIP's traffic there
    until their neighbour unreachability detection gave up (seconds)."""
    new = "02:00:00:00:00:99"
    with Segment() as seg:
        seg.add("alpha", 1)
        seg.add("bravo", 2)
        watch = [
            seg.spawn("bravo", [sys.executable, WIRE_TOOL, kind, "eth1", "-", "2"],
                      stdout=subprocess.PIPE)
            for kind in ("na", "garp")
        ]  # fmt: skip
        time.sleep(0.5)
        seg.run("alpha", sys.executable, "-c", MAC_CHANGE, new)
        seen = [p.communicate(timeout=10)[0].decode().split() for p in watch]
    (_, target, na_mac), (_, vip, garp_mac) = seen
    assert (target, na_mac) == ("2001:db8:113::10", new)
    assert (vip, garp_mac) == ("203.0.113.10", new)


def test_the_router_flag_is_read_once_a_second_not_for_every_na(tmp_path: Path) -> None:
    """Reading net.ipv6.conf.IF.forwarding for every NA cost 34 us, eight times the frame: a
    takeover of thousands of IPv6 VIPs held its last NAs back by a tenth of a second. One read
    serves a second's NAs; a change is followed after that."""
    from iprotate.engine.unsolicited_na import ROUTER_FLAG_TTL, RouterFlag

    (tmp_path / "eth1").mkdir()
    setting = tmp_path / "eth1" / "forwarding"
    setting.write_text("0\n")
    now = [100.0]
    flag = RouterFlag("eth1", tmp_path, clock=lambda: now[0])
    assert flag() is False
    setting.write_text("1\n")
    now[0] += ROUTER_FLAG_TTL / 2
    assert flag() is False  # a takeover's NAs share the read
    now[0] += ROUTER_FLAG_TTL
    assert flag() is True
    setting.unlink()
    now[0] += ROUTER_FLAG_TTL
    assert flag() is False  # unknown: no router flag
