"""Watching the advert and VIP interfaces through netlink: carrier, re-creation, addresses.

One `LinkWatcher` coroutine reads a plain netlink socket bound to RTMGRP_LINK and both families'
IFADDR groups and keeps, for each watched interface NAME, its ifindex and whether it is RUNNING.
It tells the daemon what changed by calling its `LinkEvents` methods; it decides nothing about CARP.

- An interface deleted and created again under the same name comes back with a new ifindex: the
  watcher reports the new index (the daemon rebuilds what holds the old one).
- A burst of events can overflow the socket's buffer (ENOBUFS: events were lost). The watcher then
  opens a fresh socket and resynchronises from a dump of links and addresses, as it does at start:
  what the lost events said, the dump says.
- Messages are parsed by hand (headers and a few attributes), and address events of other
  interfaces are skipped on their index alone: a storm of thousands of events on a spare interface
  costs microseconds each.
- IPv6 addresses carry states IPv4 ones do not: "tentative" (duplicate address detection running,
  about a second after an add without nodad: the kernel neither answers neighbour solicitations
  for it nor sends from it) and "dadfailed" (another node has it: dead until removed by hand).
  Such an address is reported as `address_unusable` and is absent from a dump's `present`: for
  the daemon it is not there (our own address6 cannot source adverts; a VIP in that state answers
  nobody and is removed, then added back without DAD if we are its master). The flags are read
  from IFA_FLAGS (32 bits) when the kernel sends it, else from ifaddrmsg's 8-bit field.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Protocol

log = logging.getLogger("iprotate")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
IFF_RUNNING = 0x40
# bytes; an overflow is survived anyway, this only makes it rarer: a takeover of 4,000 VIPs makes
# 4,000 address events at once, about 3 MiB (doubled by the kernel: 8 MiB), bench/scale.py.
RCVBUF = 4 << 20
SO_RCVBUFFORCE = 33

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")


@dataclass(frozen=True)
class LinkState:
    """What the kernel says about one watched name: its index (None: no such interface)."""

    index: int | None
    running: bool

    @property
    def up(self) -> bool:
        return self.index is not None and self.running


Address = IPv4Address | IPv6Address
Interface = IPv4Interface | IPv6Interface


class LinkEvents(Protocol):
    """What the watcher tells the daemon."""

    def link_changed(self, name: str, old: LinkState, new: LinkState) -> None:
        """A watched interface changed: carrier, or a new index (re-created), or gone."""

    def address_added(self, index: int, address: Interface) -> None:
        """An address is on interface `index`, usable (an event, or found by a dump)."""

    def address_unusable(self, index: int, address: IPv6Interface) -> None:
        """An IPv6 address is on interface `index` but tentative or dadfailed."""

    def address_removed(self, index: int, address: Interface) -> None:
        """An address left interface `index`."""

    def addresses_dumped(self, index: int, present: set[Address]) -> None:
        """A dump found exactly `present` on interface `index` (events may have been lost)."""


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    while start + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, start)
        if length < _RTATTR.size:
            return
        yield kind & 0x3FFF, data[start + _RTATTR.size : start + length]
        start += (length + 3) & ~3


def _request(kind: int, body: bytes, seq: int) -> bytes:
    return _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class LinkWatcher:
    """Watches interfaces by name; `await run()` forever (cancel it to stop)."""

    def __init__(self, names: list[str], events: LinkEvents) -> None:
        self.names = list(dict.fromkeys(names))
        self.events = events
        self.state: dict[str, LinkState] = {n: LinkState(None, False) for n in self.names}
        self.resyncs = 0  # how many times an overflow made us start again
        self._sock: socket.socket | None = None
        self._seq = 0
        self._dumping: int | None = None  # the request type of the dump in progress
        self._dump_links: set[str] = set()
        self._dump_intr = False  # the kernel says the dump in progress may be inconsistent
        self._dump_addrs: dict[int, set[Address]] = {}
        self.synced = asyncio.Event()  # set after the first complete dump

    async def run(self) -> None:
        while True:
            self._open()
            try:
                await self._read()
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    log.warning("netlink watcher: %s; reopening and resynchronising", e)
                else:
                    log.warning(
                        "netlink watcher: socket overflowed (ENOBUFS), events lost; "
                        "resynchronising from a fresh dump"
                    )
                self.resyncs += 1
            finally:
                self.close()
            await asyncio.sleep(0.01)  # a socket that keeps failing must not spin the loop

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # --- internals ---------------------------------------------------------------------------

    def _open(self) -> None:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            s.setblocking(False)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            s.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        except OSError:
            s.close()
            raise
        self._sock = s
        self._dump(RTM_GETLINK)

    def _dump(self, kind: int) -> None:
        assert self._sock is not None
        self._seq += 1
        self._dumping = kind
        self._dump_intr = False
        if kind == RTM_GETLINK:
            self._dump_links = set()
            body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        else:
            self._dump_addrs = {}
            body = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)  # both families
        self._sock.send(_request(kind, body, self._seq))

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            data = await loop.sock_recv(self._sock, 1 << 16)
            self._messages(data)

    def _messages(self, data: bytes) -> None:
        at = 0
        while at + _NLMSG.size <= len(data):
            length, kind, flags, seq, _ = _NLMSG.unpack_from(data, at)
            if length < _NLMSG.size:
                return
            body, end = at + _NLMSG.size, at + length
            dumped = self._dumping is not None and seq == self._seq
            if dumped and flags & NLM_F_DUMP_INTR:
                self._dump_intr = True
            if kind == NLMSG_DONE and dumped:
                self._dump_done()
            elif kind == NLMSG_ERROR and dumped:
                (code,) = struct.unpack_from("=i", data, body)
                raise OSError(-code, f"netlink dump failed: {errno.errorcode.get(-code, code)}")
            elif kind in (RTM_NEWLINK, RTM_DELLINK):
                self._link(kind, data, body, end, dumped)
            elif kind in (RTM_NEWADDR, RTM_DELADDR):
                self._addr(kind, data, body, end, dumped)
            at += (length + 3) & ~3

    def _dump_done(self) -> None:
        if self._dump_intr:  # changed while dumping: the events said what changed, but redo it
            assert self._dumping is not None
            self._dump(self._dumping)
            return
        if self._dumping == RTM_GETLINK:
            for name in self.names:
                if name not in self._dump_links:
                    self._set(name, LinkState(None, False))
            self._dump(RTM_GETADDR)
            return
        self._dumping = None
        for name in self.names:
            index = self.state[name].index
            if index is not None:
                self.events.addresses_dumped(index, self._dump_addrs.get(index, set()))
        self.synced.set()

    def _link(self, kind: int, data: bytes, body: int, end: int, dumped: bool) -> None:
        _, _, index, flags, _ = _IFINFO.unpack_from(data, body)
        name = None
        for t, v in _attrs(data, body + _IFINFO.size, end):
            if t == IFLA_IFNAME:
                name = v.split(b"\0", 1)[0].decode(errors="replace")
                break
        for watched, st in self.state.items():
            if st.index == index and name != watched:
                self._set(watched, LinkState(None, False))  # renamed away, or deleted
        if name not in self.state:
            return
        if dumped:
            self._dump_links.add(name)
        if kind == RTM_DELLINK:
            if self.state[name].index == index:
                self._set(name, LinkState(None, False))
            return
        self._set(name, LinkState(index, bool(flags & IFF_RUNNING)))

    def _addr(self, kind: int, data: bytes, body: int, end: int, dumped: bool) -> None:
        family, prefixlen, flags, _, index = _IFADDR.unpack_from(data, body)
        if family not in (socket.AF_INET, socket.AF_INET6):
            return
        if not any(s.index == index for s in self.state.values()):
            return
        v4 = family == socket.AF_INET
        size = 4 if v4 else 16
        packed: bytes | None = None
        for t, v in _attrs(data, body + _IFADDR.size, end):
            if len(v) < size and t in (IFA_LOCAL, IFA_ADDRESS):
                continue
            if t == IFA_LOCAL or (t == IFA_ADDRESS and packed is None):
                packed = bytes(v[:size])
            elif t == IFA_FLAGS and len(v) >= 4:
                (flags,) = struct.unpack_from("=I", v)
        if packed is None or prefixlen > size * 8:
            return
        # Built from the packed bytes: from an address object, ipaddress goes through str()
        # and parses it back (a takeover of 4,000 VIPs brings 4,000 events, bench/scale.py).
        address: Interface = (
            IPv4Interface((packed, prefixlen)) if v4 else IPv6Interface((packed, prefixlen))
        )
        ip: Address = address.ip
        usable = ip.version == 4 or not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
        if dumped and usable:
            self._dump_addrs.setdefault(index, set()).add(ip)
        if kind != RTM_NEWADDR:
            self.events.address_removed(index, address)
        elif usable:
            self.events.address_added(index, address)
        else:
            assert isinstance(address, IPv6Interface)
            self.events.address_unusable(index, address)

    def _set(self, name: str, new: LinkState) -> None:
        old = self.state[name]
        if new != old:
            self.state[name] = new
            self.events.link_changed(name, old, new)
