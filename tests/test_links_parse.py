"""The link watcher's bookkeeping, fed hand-made netlink messages: no socket, no namespace."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Interface

from iprotate.engine import links
from iprotate.engine.links import LinkState, LinkWatcher


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def link_changed(self, name: str, old: LinkState, new: LinkState) -> None:
        self.events.append(("link", name, new.index, new.running))

    def address_added(self, index: int, address: IPv4Interface) -> None:
        self.events.append(("add", index, str(address)))

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
