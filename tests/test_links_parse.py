"""The link watcher's bookkeeping, fed hand-made netlink messages: no socket, no namespace."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

from iprotate.engine import links
from iprotate.engine.links import LinkState, LinkWatcher


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def link_changed(self, name: str, old: LinkState, new: LinkState) -> None:
        self.events.append(("link", name, new.index, new.running))

    def address_added(self, index: int, address: IPv4Interface) -> None:
        self.events.append(("add", index, str(address)))

    def address_unusable(self, index: int, address: IPv6Interface) -> None:
        self.events.append(("unusable", index, str(address)))

    def address_removed(self, index: int, address: IPv4Interface) -> None:
        self.events.append(("del", index, str(address)))

    def addresses_dumped(self, index: int, present: set[IPv4Address]) -> None:
        self.events.append(("dump", index, sorted(str(a) for a in present)))


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def _msg(kind: int, body: bytes, seq: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def link(kind: int, index: int, name: str, running: bool, seq: int = 0) -> bytes:
    flags = 0x1 | (links.IFF_RUNNING if running else 0)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0)
    return _msg(kind, body + _attr(links.IFLA_IFNAME, name.encode() + b"\0"), seq)


def addr(kind: int, index: int, address: str, seq: int = 0) -> bytes:
    a = IPv4Interface(address)
    body = struct.pack("=BBBBi", socket.AF_INET, a.network.prefixlen, 0, 0, index)
    return _msg(kind, body + _attr(links.IFA_LOCAL, a.ip.packed), seq)


def addr6(
    kind: int, index: int, address: str, flags: int = 0, ifa_flags: int | None = None
) -> bytes:
    """An IPv6 address message; `ifa_flags`: an IFA_FLAGS attribute too (it wins)."""
    a = IPv6Interface(address)
    body = struct.pack("=BBBBi", socket.AF_INET6, a.network.prefixlen, flags & 0xFF, 0, index)
    body += _attr(links.IFA_ADDRESS, a.ip.packed)
    if ifa_flags is not None:
        body += _attr(links.IFA_FLAGS, struct.pack("=I", ifa_flags))
    return _msg(kind, body)


def watcher() -> tuple[LinkWatcher, Recorder]:
    r = Recorder()
    return LinkWatcher(["eth1", "eth2"], r), r


def test_carrier_recreation_rename_and_deletion() -> None:
    w, r = watcher()
    w._messages(link(links.RTM_NEWLINK, 2, "eth1", True) + link(links.RTM_NEWLINK, 7, "lo", True))
    w._messages(link(links.RTM_NEWLINK, 2, "eth1", True))  # no change: no event
    w._messages(link(links.RTM_NEWLINK, 2, "eth1", False))
    w._messages(link(links.RTM_DELLINK, 2, "eth1", False))
    w._messages(link(links.RTM_NEWLINK, 9, "eth1", True))  # created again: a new index
    w._messages(link(links.RTM_NEWLINK, 9, "old1", True))  # renamed away
    assert r.events == [
        ("link", "eth1", 2, True),
        ("link", "eth1", 2, False),
        ("link", "eth1", None, False),
        ("link", "eth1", 9, True),
        ("link", "eth1", None, False),
    ]


def test_addresses_of_other_interfaces_are_skipped() -> None:
    w, r = watcher()
    w._messages(link(links.RTM_NEWLINK, 3, "eth2", True))
    r.events.clear()
    storm = b"".join(addr(links.RTM_NEWADDR, 8, f"198.51.100.{i}/32") for i in range(100))
    w._messages(storm + addr(links.RTM_NEWADDR, 3, "203.0.113.12/24"))
    w._messages(addr(links.RTM_DELADDR, 3, "203.0.113.12/24"))
    assert r.events == [("add", 3, "203.0.113.12/24"), ("del", 3, "203.0.113.12/24")]


def test_a_dump_reports_missing_links_and_the_addresses_found() -> None:
    w, r = watcher()
    w.state["eth2"] = LinkState(3, True)  # known from before an overflow
    sent: list[bytes] = []
    w._sock = type("S", (), {"send": lambda self, data: sent.append(data)})()  # type: ignore[assignment]
    w._dump(links.RTM_GETLINK)
    seq = w._seq
    w._messages(link(links.RTM_NEWLINK, 2, "eth1", True, seq) + _msg(links.NLMSG_DONE, b"", seq))
    assert ("link", "eth2", None, False) in r.events  # gone while we were not listening
    seq = w._seq
    assert len(sent) == 2  # the address dump follows the link dump
    w._messages(
        addr(links.RTM_NEWADDR, 2, "203.0.113.10/24", seq) + _msg(links.NLMSG_DONE, b"", seq)
    )
    assert r.events[-1] == ("dump", 2, ["203.0.113.10"])
    assert w.synced.is_set()


def test_ipv6_addresses_and_their_dad_states() -> None:
    w, r = watcher()
    w._messages(link(links.RTM_NEWLINK, 2, "eth1", True))
    r.events.clear()
    vip = "2001:db8:113::10/64"
    w._messages(addr6(links.RTM_NEWADDR, 2, vip))
    w._messages(addr6(links.RTM_NEWADDR, 2, vip, links.IFA_F_TENTATIVE))
    w._messages(addr6(links.RTM_NEWADDR, 2, vip, 0, links.IFA_F_DADFAILED | 0x100))
    # IFA_FLAGS, when present, is what counts (the 8-bit field says tentative here).
    w._messages(addr6(links.RTM_NEWADDR, 2, vip, links.IFA_F_TENTATIVE, 0x80))
    w._messages(addr6(links.RTM_DELADDR, 2, vip, links.IFA_F_DADFAILED))
    w._messages(addr6(links.RTM_NEWADDR, 5, vip))  # another interface: skipped
    assert r.events == [
        ("add", 2, vip),
        ("unusable", 2, vip),
        ("unusable", 2, vip),
        ("add", 2, vip),
        ("del", 2, vip),
    ]


def test_a_dump_leaves_unusable_ipv6_addresses_out() -> None:
    w, r = watcher()
    w.state["eth1"] = LinkState(2, True)
    w._sock = type("S", (), {"send": lambda self, data: None})()  # type: ignore[assignment]
    w._dump(links.RTM_GETADDR)
    seq = w._seq
    msgs = [
        addr(links.RTM_NEWADDR, 2, "198.51.100.1/24", seq),
        addr6(links.RTM_NEWADDR, 2, "2001:db8::1/64"),
        addr6(links.RTM_NEWADDR, 2, "2001:db8:113::10/64", links.IFA_F_DADFAILED),
    ]
    # addr6 builds sequence 0: give the dump's sequence to the last two as well.
    msgs = [m[:8] + struct.pack("=I", seq) + m[12:] for m in msgs]
    w._messages(b"".join(msgs) + _msg(links.NLMSG_DONE, b"", seq))
    assert r.events[-1] == ("dump", 2, ["198.51.100.1", "2001:db8::1"])
