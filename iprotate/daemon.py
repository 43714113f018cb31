"""`iprotate run`: the asyncio shell around a `Node`.

It owns the sockets, the netlink handles and the clock, and decides nothing: packets, timers, link
events and signals go to the node, and the effects it returns are carried out in order by a single
executor task (so an address is always added before its gratuitous ARP, and a takeover's effects
are never interleaved with another event's).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pyroute2 import AsyncIPRoute, NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK

from iprotate import codec
from iprotate.carp import AddAddress, DelAddress, Dropped, SendAdvert, SendGarp, Transition
from iprotate.garp import GarpSender
from iprotate.node import Effect, Node
from iprotate.plan import Plan, VipPlan
from iprotate.wire import CarpSocket

log = logging.getLogger("iprotate")

IFF_RUNNING = 0x40


class StartError(Exception):
    """The daemon cannot start (missing interface, no permission): a clear message, exit 1."""


@dataclass(frozen=True)
class RunOptions:
    hold_down: float = 0.0
    stagger: float = 0.0
    garp_refresh: float = 0.0


class Daemon:
    """One host's engine. `await Daemon(plan, host).run()` returns when it has stopped cleanly."""

    def __init__(self, plan: Plan, host: str, options: RunOptions | None = None) -> None:
        self.plan = plan
        self.host = plan.cluster.host(host)
        self.options = options or RunOptions()
        self.node = Node.build(
            plan,
            host,
            counter_seed=time.time_ns() // 1000,
            hold_down=self.options.hold_down,
            stagger=self.options.stagger,
            garp_refresh=self.options.garp_refresh,
        )
        self.sockets: dict[IPv4Address, CarpSocket] = {}
        self.garp: GarpSender | None = None
        self._effects: asyncio.Queue[list[Effect] | None] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._vip_index = 0
        self._adv_index = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ipr = AsyncIPRoute()
        watch = AsyncIPRoute()
        try:
            await watch.bind(groups=RTMGRP_LINK)
            self._adv_index, running = await self._link(ipr, self.host.interface)
            self._vip_index, _ = await self._link(ipr, self.host.vip_interface)
            await self._cleanup(ipr)
            self._open_sockets()
            executor = asyncio.create_task(self._execute(ipr))
            watcher = asyncio.create_task(self._watch_links(watch))
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
            loop.add_signal_handler(signal.SIGUSR1, self._log_status)
            log.info(
                "%s: taking part in %d VIPs on %s (VIPs on %s), %d owned",
                self.host.name,
                len(self.node.machines),
                self.host.interface,
                self.host.vip_interface,
                sum(1 for v in self.plan.vips if v.owner == self.host.name),
            )
            self._emit(self.node.start(loop.time()))
            if not running:
                self._emit(self.node.link(False, loop.time()))
            await self._stopping.wait()
            log.info("%s: stopping: handing over every VIP", self.host.name)
            self._emit(self.node.stop(loop.time()))
            self._effects.put_nowait(None)
            await executor
            watcher.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            if self._timer:
                self._timer.cancel()
            for s in self.sockets.values():
                loop.remove_reader(s.fileno())
                s.close()
            if self.garp:
                self.garp.close()
            ipr.close()
            watch.close()

    def stop(self) -> None:
        """Ask a running daemon to stop (as SIGTERM does)."""
        self._stopping.set()

    async def _link(self, ipr: AsyncIPRoute, name: str) -> tuple[int, bool]:
        found = await ipr.link_lookup(ifname=name)
        if not found:
            raise StartError(f"interface {name!r} not found on this host ({self.host.name})")
        links = await _collect(ipr.link("get", index=found[0]))
        return found[0], bool(links[0]["flags"] & IFF_RUNNING)

    async def _cleanup(self, ipr: AsyncIPRoute) -> None:
        """Remove every planned VIP a previous run (killed, so it could not) left on our NIC."""
        planned = {v.ip: v for v in self.plan.vips}
        present = await _collect(ipr.addr("dump", index=self._vip_index, family=2))
        for m in present:
            ip = IPv4Address(m.get_attr("IFA_ADDRESS"))
            if ip in planned:
                log.warning("%s: removing %s left by an earlier run", self.host.name, ip)
                await self._addr(ipr, "del", planned[ip])

    def _open_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        # Every group in the plan, so status sees the masters of VIPs we take no part in too.
        for group in sorted({v.group for v in self.plan.vips}):
            s = CarpSocket(self.host.interface, self._adv_index, self.host.address, group)
            self.sockets[group] = s
            loop.add_reader(s.fileno(), self._on_readable, s)
        self.garp = GarpSender(self.host.vip_interface)

    # --- events in ---------------------------------------------------------------------------

    def _on_readable(self, s: CarpSocket) -> None:
        now = asyncio.get_running_loop().time()
        while (data := s.recv()) is not None:
            self._emit(self.node.packet(now, s.group, data))

    def _on_timer(self) -> None:
        self._timer = None
        self._emit(self.node.timers(asyncio.get_running_loop().time()))

    async def _watch_links(self, watch: AsyncIPRoute) -> None:
        running: bool | None = None
        while True:
            async for msg in watch.get():
                if msg.get("event") != "RTM_NEWLINK" or msg["index"] != self._adv_index:
                    continue
                up = bool(msg["flags"] & IFF_RUNNING)
                if up != running:
                    running = up
                    log.info("%s: link %s", self.host.interface, "up" if up else "down")
                    self._emit(self.node.link(up, asyncio.get_running_loop().time()))

    def _emit(self, effects: list[Effect]) -> None:
        if effects:
            self._effects.put_nowait(effects)
        self._arm_timer()

    def _arm_timer(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = self.node.deadline
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None and not self._stopping.is_set():
            self._timer = loop.call_at(deadline, self._on_timer)

    # --- effects out -------------------------------------------------------------------------

    async def _execute(self, ipr: AsyncIPRoute) -> None:
        while (batch := await self._effects.get()) is not None:
            for e in batch:
                try:
                    await self._apply(ipr, e)
                except OSError as err:  # the NIC vanished, the socket broke: log, keep going
                    self.node.counters["errors"] += 1
                    log.error("%s vhid %d: %s failed: %s", e.vip.address, e.vip.vhid, e.action, err)

    async def _apply(self, ipr: AsyncIPRoute, e: Effect) -> None:
        a = e.action
        v = e.vip
        if isinstance(a, SendAdvert):
            carp = codec.encode_advert(
                vhid=v.vhid,
                advbase=a.advbase,
                advskew=a.advskew,
                counter=a.counter,
                vip=v.ip,
                password=self.plan.cluster.password,
            )
            self.sockets[v.group].send(carp)
            self.node.counters["adverts_sent"] += 1
        elif isinstance(a, AddAddress):
            await self._addr(ipr, "add", v)
        elif isinstance(a, DelAddress):
            await self._addr(ipr, "del", v)
        elif isinstance(a, SendGarp):
            assert self.garp is not None
            self.garp.send(v.ip)
        elif isinstance(a, Transition):
            log.info("%s vhid %d: %s -> %s: %s", v.address, v.vhid, a.old.value, a.new.value, a.why)
        elif isinstance(a, Dropped):
            log.debug("%s vhid %d: dropped an advert: %s", v.address, v.vhid, a.reason)

    async def _addr(self, ipr: AsyncIPRoute, op: str, v: VipPlan) -> None:
        try:
            await ipr.addr(
                op, index=self._vip_index, address=str(v.ip), prefixlen=v.address.network.prefixlen
            )
        except NetlinkError as err:
            if (op, err.code) not in (("add", errno.EEXIST), ("del", errno.EADDRNOTAVAIL)):
                raise OSError(err.code, f"ip addr {op} {v.address}: {err}") from None

    def _log_status(self) -> None:
        """SIGUSR1: one line per VIP and one with the counters (drops by reason among them)."""
        now = asyncio.get_running_loop().time()
        for key, m in self.node.machines.items():
            v = self.node.vips[key]
            log.info(
                "status %s vhid %d: %s for %.1f s, %d transitions",
                v.address, v.vhid, m.state.value, now - m.since, m.transitions,
            )  # fmt: skip
        counts = " ".join(f"{k}={n}" for k, n in sorted(self.node.counters.items()))
        log.info("status counters: %s", counts or "none")


async def _collect(call: Any) -> list[Any]:
    """pyroute2's async calls answer with a list or an async iterator, depending on the call."""
    result = await call
    if hasattr(result, "__aiter__"):
        return [m async for m in result]
    return list(result)


def find_host(plan: Plan, local: Iterable[IPv4Address]) -> str:
    """The one host of the plan whose address is local; StartError if none or several."""
    mine = set(local)
    names = [h.name for h in plan.cluster.hosts if h.address in mine]
    if len(names) == 1:
        return names[0]
    if not names:
        raise StartError(
            "no host of the cluster file has an address on this machine; give --host NAME "
            f"(hosts: {', '.join(h.name + '=' + str(h.address) for h in plan.cluster.hosts)})"
        )
    raise StartError(f"several hosts have an address here ({', '.join(names)}); give --host NAME")
