"""`iprotate run`: the asyncio shell around a `Node`.

It owns the sockets, the netlink handles and the clock, and decides nothing: packets, timers, link
events and signals go to the node, and the effects it returns are carried out at once, in order,
before the next event (so an address is always added before its gratuitous ARP, and a takeover's
effects never interleave with another event's). Every effect is a non-blocking send or a netlink
request answered within microseconds (iprotate.engine.addresses); hook scripts run in the
background. One wait, for the kernel and not for CARP: a freshly added IPv6 VIP is not in service
when the netlink ack comes (engine.addresses), so that VIP's later effects (its NA, its first
advert) are held, in order, until the kernel reports it (IN_SERVICE_WAIT at most); other VIPs'
effects go on meanwhile. Released before that, its held NA is dropped (it would pull the clients
back from the new master).

IPv6 VIPs have a socket of their own (engine.wire6) and are announced by unsolicited neighbour
advertisements (engine.unsolicited_na) where IPv4 ones get gratuitous ARPs. Our address6 is
watched as our address is: gone, tentative or dadfailed, the IPv6 VIPs stand aside.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)
from pathlib import Path
from typing import Any, Literal

from pyroute2 import AsyncIPRoute

from iprotate.carp import codec
from iprotate.carp.machine import (
    DEMOTE_SECONDS,
    AddAddress,
    DelAddress,
    SendAdvert,
    SendGarp,
    State,
    Transition,
)
from iprotate.carp.node import Effect, Node
from iprotate.carp.status import build_status
from iprotate.cluster.loader import load_cluster
from iprotate.cluster.model import Check, ClusterError, IPAddress, IPInterface
from iprotate.engine import drained_state, hostlock
from iprotate.engine.addresses import AddressSetter
from iprotate.engine.checks import CheckRunner, RunResult, local_problems
from iprotate.engine.control import BadRequest, bind_server, drain_answer, drain_target
from iprotate.engine.garp import GarpSender
from iprotate.engine.hooks import HookRunner, hook_for
from iprotate.engine.links import IFA_F_DADFAILED, IFA_F_TENTATIVE, LinkState, LinkWatcher
from iprotate.engine.metrics import serve as serve_metrics
from iprotate.engine.sdnotify import Notifier, keep_watchdog
from iprotate.engine.signals import EarlySignals, SignalRules, install_for_daemon
from iprotate.engine.unsolicited_na import NaSender
from iprotate.engine.wire import CarpSocket
from iprotate.engine.wire6 import CarpSocket6
from iprotate.plan.model import Plan, VipPlan
from iprotate.plan.planner import make_plan

log = logging.getLogger("iprotate")

IFF_RUNNING = 0x40
STOP_HANDOVER = 0.5  # seconds a stopping host waits for the next ones to take its VIPs
DRIFT_LOG_EVERY = 60.0  # seconds between two log lines about the same drifting peer
# Packets read from the CARP socket per wake-up before the event loop gets its turn back. Under a
# flood the socket never empties: reading until it does would hold off every timer, our own
# adverts included, for as long as the flood lasts (bench/flood.py: backups took over VIPs whose
# master was alive but mute). The loop wakes us again at once while packets wait.
READ_BATCH = 64
# The longest a freshly added IPv6 VIP's next effects (its NA, its first advert) wait for the
# kernel to report the address in service (see Daemon._emit). Measured in a namespace: the local
# route follows the netlink ack by 0.1 ms (p50) to 3.5 ms (max of 200, a loaded 2-core machine).
IN_SERVICE_WAIT = 0.05
# Effects in one batch above which the state-change log lines wait for the batch's end (_emit).
LOG_AFTER_BATCH = 64


class StartError(Exception):
    """The daemon cannot start (missing interface, no permission): a clear message, exit 1."""


class DaemonFailed(Exception):
    """A background task failed; the daemon stopped cleanly and must exit non-zero (so that its
    supervisor restarts it)."""


@dataclass(frozen=True)
class RunOptions:
    """How the engine runs; the defaults are `[run]` in the cluster file's defaults."""

    hold_down: float = 0.0
    stagger: float = 0.0
    garp_refresh: float = 0.0
    control_socket: str | None = None  # None: no control socket
    control_group: str | None = None
    state_dir: str | None = None  # where the drained state survives restarts; None: nowhere
    metrics: str | None = None  # listen address of the Prometheus exporter
    hook_timeout: float = 10.0
    cluster_file: str | None = None  # re-read on SIGHUP / reload
    ignore_ifstate: bool = False  # ucarp's -S: serve even without carrier on the advert link


class Daemon:
    """One host's engine. `await Daemon(plan, host).run()` returns when it has stopped cleanly."""

    def __init__(
        self,
        plan: Plan,
        host: str,
        options: RunOptions | None = None,
        early_signals: EarlySignals | None = None,
    ) -> None:
        """`early_signals`: what `signals.hold_early` recorded before the loop ran."""
        self.early_signals = early_signals
        self.plan = plan
        self.host = plan.cluster.host(host)
        self.options = options or RunOptions()
        self.node = Node.build(
            plan,
            host,
            wall_offset=_wall_offset(),
            hold_down=self.options.hold_down,
            stagger=self.options.stagger,
            garp_refresh=self.options.garp_refresh,
            ignore_ifstate=self.options.ignore_ifstate,
        )
        self.socket: CarpSocket | None = None
        self.socket6: CarpSocket6 | None = None  # only with IPv6 VIPs in the plan
        self.garp: GarpSender | None = None
        self.na: NaSender | None = None
        # IPv6 VIPs just added, not yet in service: their effects since, held in order.
        self._held: dict[IPv6Address, tuple[list[Effect], asyncio.TimerHandle]] = {}
        self.hooks = HookRunner(timeout=self.options.hook_timeout, logger=log)
        self.checks = CheckRunner(self._check_result, log)
        self._last_resort: set[tuple[IPv4Address, int]] = set()
        self.notifier = Notifier()
        self.addresses: AddressSetter | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._vip_index = 0
        self._adv_index = 0
        self._takeover_started: dict[tuple[IPAddress, int], float] = {}
        self._encoders: dict[int, tuple[VipPlan, codec.AdvertEncoder]] = {}  # by id(VipPlan)
        self._digest_mac: codec.KeyedMac | None = None
        self._drain_all = False
        self._reloading = False
        self._strangers_logged = -DRIFT_LOG_EVERY
        self._drift_logged: dict[tuple[tuple[IPAddress, int], IPAddress], float] = {}
        self._links_up = {False: True, True: True}  # (vip link?) -> up, as the node was told
        self._failed: str | None = None
        # Whether our own address was ever seen on the advert interface: only then does its
        # absence there mean it was removed (it may live on another interface). Not so for
        # address6: it is an address of the advert interface (cluster file), and IPv6 adverts
        # leave from it there or not at all (the kernel refuses it as their source otherwise:
        # with IPv6 off on the interface, the host made itself master of every IPv6 VIP it
        # could neither add nor advertise). Absent from the start, the IPv6 VIPs stand aside.
        self._source_seen = {4: False, 6: True}  # per family: our address, our address6
        # IPv6 VIPs need both: address6 usable on the advert interface, and IPv6 on on the VIP
        # interface (off, every add fails with EACCES while the adverts still leave: the VIP
        # would be dead while its master advertises it). The node hears the two together.
        self._address6_usable = True
        self._vip6_off = False
        self._planned: tuple[Plan | None, set[IPInterface], set[IPAddress]] = (None, set(), set())
        self._deferred_logs: list[tuple[Any, ...]] | None = None  # see _emit_all

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # Before any change to the system: one daemon per host (per network namespace), and a
        # control socket nobody else is using; refused, we touch nothing.
        try:
            lock = hostlock.lock(self.host)
        except hostlock.HostInUse as e:
            raise StartError(str(e)) from None
        loop.add_reader(
            lock.fileno(), lambda: hostlock.close_waiting(lock, self._stopping.is_set())
        )
        ipr = AsyncIPRoute()
        watch = LinkWatcher([self.host.interface, self.host.vip_interface], self)
        control = None
        exporter = None
        tasks: list[asyncio.Task[None]] = []
        signal_rules: SignalRules | None = None
        try:
            control = await bind_server(
                self.options.control_socket, self._control, self.options.control_group, StartError
            )
            if self.options.metrics:
                try:
                    exporter = serve_metrics(
                        self.options.metrics, lambda: self.node, loop.time, lambda: self.hooks
                    )
                except (ValueError, OSError) as e:  # a bad address, a port in use
                    raise StartError(f"metrics on {self.options.metrics!r}: {e}") from None
            self._adv_index, running = await self._link(ipr, self.host.interface)
            self._vip_index, _ = await self._link(ipr, self.host.vip_interface)
            self.addresses = AddressSetter(self._vip_index)
            promote_secondaries(self.host.vip_interface)
            await self._cleanup(ipr)
            self._join_groups()
            if control is not None:
                await control.serve()
            tasks = [
                self._background(watch.run(), "link watcher"),
                self._background(keep_watchdog(self.notifier), "watchdog"),
                self._background(self._drift_reminders(), "drift reminders"),
            ]
            signal_rules = install_for_daemon(
                loop,
                self._stopping,
                self.reload,
                self._log_status,
                self._demote,
                self.early_signals,
            )
            log.info(
                "%s: taking part in %d VIPs on %s (VIPs on %s), %d owned",
                self.host.name,
                len(self.node.machines),
                self.host.interface,
                self.host.vip_interface,
                sum(1 for v in self.plan.vips if v.owner == self.host.name),
            )
            now = loop.time()
            self._emit(self.node.start(now))
            self._restore_drained(now)
            if not running:
                self._links_up[False] = False
                self._emit(self.node.link(False, now))
            # Checks run beside the CARP timers, never on their path (iprotate.engine.checks).
            self.checks.update(self.plan.checks_for(self.host.name))
            self.notifier.ready(f"{len(self.node.machines)} VIPs")
            await self._stopping.wait()
            self.notifier.stopping()
            await self.checks.close()
            await self._hand_over()
            self._emit(self.node.stop(loop.time()))
            await self.hooks.drain(self.options.hook_timeout)
            if self._failed is not None:
                raise DaemonFailed(self._failed)
        finally:
            await self.checks.close()  # an exec check still running is killed with its group
            for t in tasks:
                t.cancel()
            if signal_rules is not None:
                signal_rules.remove()
            if self._timer:
                self._timer.cancel()
            for _, handle in self._held.values():
                handle.cancel()
            for sock in (self.socket, self.socket6):
                if sock is not None:
                    loop.remove_reader(sock.fileno())
                    sock.close()
            if self.garp:
                self.garp.close()
            if self.na:
                self.na.close()
            if self.addresses is not None:
                self.addresses.close()
            if control is not None:
                await control.close()
            if exporter is not None:
                exporter.close()
            ipr.close()
            watch.close()
            loop.remove_reader(lock.fileno())
            lock.close()

    def _background(self, coro: Any, what: str) -> asyncio.Task[None]:
        """A task that may not end silently: if it fails, the daemon logs it, stops cleanly
        (handing its VIPs over) and exits non-zero, so the supervisor restarts it."""
        task = asyncio.create_task(coro, name=what)

        def done(t: asyncio.Task[None]) -> None:
            if t.cancelled():
                return
            err = t.exception()
            if err is None:
                return  # finished its work (the watchdog has none without systemd)
            log.error("error: %s failed: %r; stopping", what, err, exc_info=err)
            self._failed = f"{what} failed: {err!r}"
            self._stopping.set()

        task.add_done_callback(done)
        return task

    def stop(self) -> None:
        """Ask a running daemon to stop (as SIGTERM does)."""
        self._stopping.set()

    async def _hand_over(self) -> None:
        """Make-before-break on the way out: offer every VIP we hold (a drain, not remembered)
        and wait, briefly, for the next hosts to answer as master before letting go."""
        loop = asyncio.get_running_loop()
        held = sum(1 for m in self.node.machines.values() if m.state is State.MASTER)
        log.info("%s: stopping: handing over %d VIPs", self.host.name, held)
        self._emit(self.node.drain(loop.time()))
        give_up = loop.time() + STOP_HANDOVER
        while loop.time() < give_up and any(
            m.state is State.MASTER for m in self.node.machines.values()
        ):
            await asyncio.sleep(0.01)

    def _demote(self) -> None:
        """SIGUSR2, ucarp's demote: hand every VIP over, stand aside for a while, carry on."""
        if self._stopping.is_set():
            return
        now = asyncio.get_running_loop().time()
        held = sum(1 for m in self.node.machines.values() if m.state is State.MASTER)
        log.info("SIGUSR2: demoting %d VIPs for %g s", held, DEMOTE_SECONDS)
        self._emit(self.node.demote(now, DEMOTE_SECONDS))

    async def reload(self) -> dict[str, Any]:
        """Re-read the cluster file and apply its plan; a file that does not validate is refused
        and the running plan stays."""
        path = self.options.cluster_file
        if path is None:
            return {"ok": False, "error": "no cluster file to reload"}
        if self._stopping.is_set():
            return {"ok": False, "error": "stopping: no reload"}
        if self._reloading:
            return {"ok": False, "error": "a reload is already running"}
        self._reloading = True
        self.notifier.reloading()
        try:
            # In a thread: a big or hostile file takes seconds to check and plan, and adverts
            # must go on meanwhile (the loader bounds what a file may ask for).
            plan = await asyncio.to_thread(_load_plan, path)
            new = plan.cluster.host(self.host.name)
            # A new address6 (a cluster going dual-stack, or back): where it stands on the
            # advert interface, read before anything changes, while no other reload can start.
            source6: bool | None = None
            if new.address6 != self.host.address6 and new.address6 is not None:
                source6 = await self._address6_state(new.address6)
            host_vips = frozenset(v.ip for v in plan.for_host(self.host.name))
            problems = await local_problems(plan.cluster, self.host.name, host_vips)
        except Exception as e:  # whatever went wrong, the running plan stays
            if isinstance(e, KeyError):
                msg = f"host {self.host.name} is not in the new file"
            elif isinstance(e, ClusterError):
                msg = str(e)
            else:
                msg = f"{type(e).__name__}: {e}"
            log.error("reload refused, the running plan stays: %s", msg)
            self.notifier.ready("reload refused")
            return {"ok": False, "error": f"reload refused: {msg}"}
        finally:
            self._reloading = False
        if self._stopping.is_set():
            # A stop came while the file was read: the VIPs are being handed over or already
            # released, and a new plan would start machines (and report READY) on the way out.
            log.info("reload dropped: stopping")
            return {"ok": False, "error": "stopping: no reload"}
        if plan.cluster.bgp is not None:
            # The file now asks for BGP mode: CARP would go on, ignoring [bgp] (and with the
            # password BGP mode lets the file drop): refused, as BGP mode refuses the reverse.
            log.error("reload refused: the file has a [bgp] table (BGP mode); restart instead")
            self.notifier.ready("reload refused")
            return {"ok": False, "error": "reload refused: [bgp] (BGP mode) needs a restart"}
        if (new.address, new.interface, new.vip_interface) != (
            self.host.address,
            self.host.interface,
            self.host.vip_interface,
        ):
            log.error("reload refused: this host's address or interfaces changed; restart instead")
            self.notifier.ready("reload refused")
            return {"ok": False, "error": "this host's address or interfaces changed: restart"}
        before = {k: (v.address, v.order, v.advskew) for k, v in self.node.vips.items()}
        address6_changed = new.address6 != self.host.address6
        self.plan = plan
        self.host = new
        self._encoders = {}  # the password may have changed, and the plan objects have
        now = asyncio.get_running_loop().time()
        self._emit(self.node.reload(plan, now))
        if address6_changed:
            # The IPv6 socket sends from the old address6 (IPV6_PKTINFO): made again below. As
            # at start, an address6 absent from the advert interface, tentative or dadfailed
            # there, stands the IPv6 VIPs aside until it is usable.
            self._close_socket6()
            log.info("%s: address6 now %s", self.host.name, new.address6)
        self.checks.update(plan.checks_for(self.host.name))
        self._last_resort &= set(self.node.machines)
        for line in problems:
            log.warning("%s: %s", path, line)  # such a check is down until it can run
        self._join_groups()
        if address6_changed and new.address6 is not None:
            if not source6:
                why = "absent from" if source6 is None else "tentative or dadfailed on"
                log.warning("%s: %s %s: no IPv6 advert can leave from it; the IPv6 VIPs stand "
                            "aside until it is usable", new.address6, why,
                            new.interface)  # fmt: skip
            self._address6_usable = bool(source6)
            self._feed_source6(now)
        self._check_vip6()
        if self._drain_all:
            self._emit(self.node.drain(now))
        after = {k: (v.address, v.order, v.advskew) for k, v in self.node.vips.items()}
        changed = sum(1 for k in after if k in before and after[k] != before[k])
        added, removed = len(after.keys() - before.keys()), len(before.keys() - after.keys())
        log.info(
            "reloaded %s: %d VIPs added, %d removed, %d changed", path, added, removed, changed
        )
        self.notifier.ready(f"{len(self.node.machines)} VIPs")
        return {"ok": True, "added": added, "removed": removed, "changed": changed}

    async def _link(self, ipr: AsyncIPRoute, name: str) -> tuple[int, bool]:
        index = await _ifindex(ipr, name, self.host.name)
        links = await _collect(ipr.link("get", index=index))
        return index, bool(links[0]["flags"] & IFF_RUNNING)

    async def _cleanup(self, ipr: AsyncIPRoute) -> None:
        """Remove every planned VIP a previous run (killed, so it could not) left on our NIC."""
        for ip in await remove_vips(self.plan, self.host.name, ipr):
            log.warning("%s: removed %s, left by an earlier run", self.host.name, ip)

    def _join_groups(self) -> None:
        """Join every group in the plan (so status sees the masters of VIPs we take no part in
        too) and leave the ones no longer planned."""
        if self.socket is None:
            self.socket = CarpSocket(
                self.host.interface,
                self._adv_index,
                self.host.address,
                self._sources(),
                vips=len(self.plan.vips),
            )
            asyncio.get_running_loop().add_reader(self.socket.fileno(), self._on_readable)
        else:
            self.socket.set_sources(self._sources())
        groups = {v.group for v in self.plan.vips if v.group.version == 4}
        for group in sorted(groups - self.socket.groups):
            self.socket.join(group)
        for group in sorted(self.socket.groups - groups):
            self.socket.leave(group)
        if self.garp is None:
            self.garp = GarpSender(self.host.vip_interface)
        self._join_groups6()

    def _join_groups6(self) -> None:
        """The IPv6 twin: a socket only while the plan has IPv6 VIPs (and we an address6 to
        send from; the loader refuses a file where a native host lacks it)."""
        groups6 = {v.group for v in self.plan.vips if isinstance(v.group, IPv6Address)}
        src6 = self.host.address6
        if not groups6 or src6 is None:
            self._close_socket6()  # a reload removed the last IPv6 VIP (or our address6)
            return
        vips6 = sum(1 for v in self.plan.vips if v.group.version == 6)
        if self.socket6 is None:
            self.socket6 = CarpSocket6(
                self.host.interface, self._adv_index, src6, self._sources6(), vips=vips6
            )
            asyncio.get_running_loop().add_reader(self.socket6.fileno(), self._on_readable6)
        else:
            self.socket6.set_sources(self._sources6())
            self.socket6.grow(vips6)
        for group in sorted(groups6 - self.socket6.groups):
            self.socket6.join(group)
        for group in sorted(self.socket6.groups - groups6):
            self.socket6.leave(group)
        if self.na is None:
            self.na = NaSender(self.host.vip_interface)

    def _sources(self) -> list[IPv4Address]:
        """Whose adverts the kernel lets through: every other host of the cluster file.

        Not our own address: the socket never loops our adverts back (IP_MULTICAST_LOOP 0), so a
        packet under it is always someone else's, which the node ignores anyway; a flood of them
        now stops in the kernel (but for the filter's sample) instead of costing a decode each.
        A cluster of one host has no one else: the filter keeps our address (it needs one)."""
        me = self.host.address
        return [h.address for h in self.plan.cluster.hosts if h.address != me] or [me]

    def _close_socket6(self) -> None:
        if self.socket6 is not None:
            asyncio.get_running_loop().remove_reader(self.socket6.fileno())
            self.socket6.close()
            self.socket6 = None

    async def _address6_state(self, ip: IPv6Address) -> bool | None:
        """`ip` on the advert interface: usable (True), tentative or dadfailed (False), absent
        (None). Asked from a dump, as the link watcher reads its events."""
        ipr = AsyncIPRoute()
        try:
            for m in await _collect(ipr.addr("dump", index=self._adv_index, family=10)):
                if ip_address(m.get_attr("IFA_ADDRESS")) == ip:
                    flags = m.get_attr("IFA_FLAGS") or m["flags"]
                    return not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
            return None
        finally:
            ipr.close()

    def _sources6(self) -> list[IPv6Address]:
        """`_sources` for IPv6: every other host's address6."""
        me = self.host.address6
        assert me is not None
        others = [h.address6 for h in self.plan.cluster.hosts if h.address6 not in (None, me)]
        return [a for a in others if a is not None] or [me]

    # --- events in ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self.socket is not None
        now = asyncio.get_running_loop().time()
        drift = self.node.counters["drift"]
        strangers = self.node.counters["drop_not_a_host"]
        for _ in range(READ_BATCH):
            if (data := self.socket.recv()) is None:
                break
            # Each packet's effects are carried out before the next packet; the timer is armed
            # once for the batch (a backup restarts a timer with every advert: re-arming after
            # each one was a tenth of the receive path at 1,000 VIPs, bench/scale.py).
            self._emit(self.node.packet(now, data), arm=False)
        self._arm_timer()
        if self.node.counters["drift"] != drift:
            self._log_drift(now)
        if self.node.counters["drop_not_a_host"] != strangers:
            self._log_strangers(now)

    def _on_readable6(self) -> None:
        """As `_on_readable`, for the IPv6 socket: the kernel gives the CARP bytes with their
        source, destination and hop limit beside (no IPv6 header); the node checks them all."""
        if self.socket6 is None:
            return
        now = asyncio.get_running_loop().time()
        drift = self.node.counters["drift"]
        strangers = self.node.counters["drop_not_a_host"]
        for _ in range(READ_BATCH):
            if (r := self.socket6.recv()) is None:
                break
            if r.dst is None or r.hop_limit is None:  # never seen: the kernel always gives both
                self.node.counters["drop_no_pktinfo"] += 1
                continue
            self._emit(self.node.packet6(now, r.carp, r.src, r.dst, r.hop_limit))
        if self.node.counters["drift"] != drift:
            self._log_drift(now)
        if self.node.counters["drop_not_a_host"] != strangers:
            self._log_strangers(now)

    def _log_strangers(self, now: float) -> None:
        """Adverts from addresses that are no host: one line a minute at most, for all senders
        together (a flood from ever new spoofed sources must not flood the log)."""
        if now - self._strangers_logged < DRIFT_LOG_EVERY:
            return
        self._strangers_logged = now
        recent = ", ".join(str(a) for a in reversed(self.node.strangers))
        log.warning(
            "dropping adverts from addresses that are no host of the cluster file: %d sampled so "
            "far (the kernel passes 1 in 64), lately from %s",
            self.node.counters["drop_not_a_host"],
            recent,
        )

    def _log_drift(self, now: float) -> None:
        """Name every drifting peer, at most once a minute each (a peer that keeps sending bad
        adverts every second must not flood the log)."""
        for (key, src), d in self.node.drift.items():
            last = self._drift_logged.get((key, src))
            stale = now - d.last > DRIFT_LOG_EVERY
            if stale or (last is not None and now - last < DRIFT_LOG_EVERY):
                continue
            self._drift_logged[(key, src)] = now
            v = self.node.vips[key]
            log.warning(
                "%s vhid %d: drift: %s %s (%d adverts so far)",
                v.address, v.vhid, src, d.detail, d.count,
            )  # fmt: skip

    async def _drift_reminders(self) -> None:
        while True:
            await asyncio.sleep(DRIFT_LOG_EVERY / 6)
            self._log_drift(asyncio.get_running_loop().time())
            self._check_vip6()  # IPv6 turned on without an address event (addrgenmode none)

    def _on_timer(self) -> None:
        self._timer = None
        self._emit(self.node.timers(asyncio.get_running_loop().time()))

    # --- link watcher events (iprotate.engine.links.LinkEvents) ------------------------------

    def link_changed(self, name: str, old: LinkState, new: LinkState) -> None:
        """Feed the node what happened to the advert and/or VIP interface called `name`."""
        now = asyncio.get_running_loop().time()
        # VIPs on the advert interface: one link, and ignore_ifstate covers it (as ucarp's -S).
        same = self.host.vip_interface == self.host.interface
        for vip in (False, True):
            if name != (self.host.vip_interface if vip else self.host.interface):
                continue
            index = self._vip_index if vip else self._adv_index
            role = "VIP link" if vip else "link"
            if new.index is not None and new.index != index:
                # Deleted and created again: what held the old index is deaf and mute. Down (the
                # hold-down applies when it comes back), then rebuilt on the new index.
                if not (vip and same):
                    log.warning("%s: re-created (index %d -> %d): rebuilding", name, index,
                                new.index)  # fmt: skip
                if not (vip and same):
                    self._feed_link(vip, False, f"{name}: {role} down (re-created)", now)
                self._rebuild(vip, new.index)
            if not (vip and same):
                self._feed_link(vip, new.up, f"{name}: {role} {'up' if new.up else 'down'}", now)

    def _feed_link(self, vip: bool, up: bool, line: str, now: float) -> None:
        if self._links_up[vip] == up:
            return
        self._links_up[vip] = up
        log.info("%s", line)
        self._emit(self.node.link(up, now, vip))

    def _rebuild(self, vip: bool, index: int) -> None:
        """Sockets and requests for an interface's new index (it was re-created)."""
        try:
            if vip:
                self._vip_index = index
                if self.addresses is not None:
                    self.addresses.close()
                self.addresses = AddressSetter(index)
                if self.garp is not None:
                    self.garp.close()
                    self.garp = None
                if self.na is not None:
                    self.na.close()
                    self.na = None
                promote_secondaries(self.host.vip_interface)
            else:
                self._adv_index = index
                for sock in (self.socket, self.socket6):
                    if sock is not None:
                        asyncio.get_running_loop().remove_reader(sock.fileno())
                        sock.close()
                self.socket = self.socket6 = None
            self._join_groups()
        except OSError as e:
            self.node.counters["errors"] += 1
            log.error("cannot rebuild on the new %s (index %d): %s", "VIP link" if vip else "link",
                      index, e)  # fmt: skip

    def _feed_source(self, present: bool, now: float, version: int = 4) -> None:
        """Our own address (`version` 6: our address6) on the advert interface or not: without
        it no advert of that family can leave (the machines then cannot serve; carp.machine,
        "Own address"). An address6 that is tentative or dadfailed counts as not there: the
        kernel refuses it as a source (EINVAL) until duplicate address detection passes."""
        if present:
            self._source_seen[version] = True
        elif not self._source_seen[version]:
            return  # never seen there (the address lives on another interface): not our rule
        up = self._address6_usable if version == 6 else self.node.source_up
        if up == present:
            return
        where = self.host.interface
        me = self.host.address6 if version == 6 else self.host.address
        if present:
            log.info("%s: back on %s: taking part again", me, where)
        else:
            log.warning("%s: removed from %s (or unusable): no advert can leave from it; its "
                        "VIPs stand aside until it is back", me, where)  # fmt: skip
        if version == 6:
            self._address6_usable = present
            self._feed_source6(now)
        else:
            self._emit(self.node.source(present, now, version))

    def _feed_source6(self, now: float) -> None:
        """Tell the node whether IPv6 VIPs can be served here: address6 usable and IPv6 on on
        the VIP interface."""
        up = self._address6_usable and not self._vip6_off
        if self.node.source6_up != up:
            self._emit(self.node.source(up, now, 6))

    def _check_vip6(self) -> None:
        """Whether IPv6 is off on the VIP interface (disable_ipv6): read after a dump, every
        event of a link-local address there (turning IPv6 off or on removes or adds it; not for
        every VIP's event: a read costs tens of microseconds, a takeover brings thousands) and
        every few seconds. Off, the IPv6 VIPs stand aside; on again, they take part."""
        off = ipv6_off(self.host.vip_interface)
        if off == self._vip6_off or self._stopping.is_set():
            return
        self._vip6_off = off
        if any(v.ip.version == 6 for v in self.plan.vips):
            where = self.host.vip_interface
            if off:
                log.warning("IPv6 is off on %s (disable_ipv6): no IPv6 VIP can be added there; "
                            "the IPv6 VIPs stand aside until it is on", where)  # fmt: skip
            else:
                log.info("IPv6 is on again on %s: the IPv6 VIPs take part again", where)
        self._feed_source6(asyncio.get_running_loop().time())

    def _is_source6(self, index: int, ip: IPAddress) -> bool:
        return index == self._adv_index and ip == self.host.address6

    def address_added(self, index: int, address: IPInterface) -> None:
        """A planned VIP on our VIP interface while we are not its master, or a copy of it
        with another prefix while we are: remove it (an IPv6 copy was the VIP itself: the
        machine then adds ours back)."""
        if index == self._adv_index and address.ip == self.host.address:
            self._feed_source(True, asyncio.get_running_loop().time())
        if self._is_source6(index, address.ip):
            self._feed_source(True, asyncio.get_running_loop().time(), 6)
        if index == self._vip_index and self._held and address.ip in self._held:
            self._in_service(address.ip)  # type: ignore[arg-type]
        if index == self._vip_index and address.ip.is_link_local:
            self._check_vip6()  # IPv6 turned on or off there (a VIP's event reads nothing)
        if index != self._vip_index or self.addresses is None:
            return
        now = asyncio.get_running_loop().time()
        copy_removed = False
        for e in self.node.address_present(now, address.ip, address.network.prefixlen):
            m = self.node.machines.get((e.vip.group, e.vip.vhid))
            why = "present while " + (m.state.value if m is not None else "taking no part in it")
            why += " (two hosts would answer ARP)"
            if m is not None and m.state is State.MASTER:
                why = "another prefix than ours (a hand-over would leave it behind)"
            try:
                removed = self.addresses.delete(address)  # as found: its prefix may differ
            except OSError as err:
                log.error("%s vhid %d: cannot remove it: %s", e.vip.address, e.vip.vhid, err)
                continue
            if removed:  # not our own delete racing the event
                copy_removed = True
                self.node.counters["addresses_removed_stray"] += 1
                log.warning(
                    "%s vhid %d: removed %s, %s", e.vip.address, e.vip.vhid, address, why,
                )  # fmt: skip
        if copy_removed and address.version == 6:
            # The kernel keeps one copy of an IPv6 address, whatever its prefix: ours was
            # replaced (removed, and the copy added before we could add ours back: our add found
            # it there), so the copy just removed was the VIP itself. Where we are its master
            # the machine adds it back; elsewhere nothing happens.
            self._address_gone(address.ip)

    def address_unusable(self, index: int, address: IPv6Interface) -> None:
        """An IPv6 address that is tentative or dadfailed: it answers nobody. A planned VIP in
        that state (added by hand without nodad, or a DAD lost to another holder) is removed; if
        we are its master, the machine adds it back at once, without DAD. Our own address6 in
        that state cannot source adverts: our IPv6 VIPs stand aside until it is usable."""
        if self._is_source6(index, address.ip):
            # It is on the advert interface, only not usable yet (a fresh boot's DAD): our rule.
            self._source_seen[6] = True
            self._feed_source(False, asyncio.get_running_loop().time(), 6)
        if index == self._vip_index and address.ip.is_link_local:
            self._check_vip6()  # IPv6 turned on there: its link-local address, tentative
        if index != self._vip_index or self.addresses is None:
            return
        if address.ip not in self._planned_ips():
            return
        try:
            removed = self.addresses.delete(address)
        except OSError as err:
            log.error("%s: cannot remove it (tentative or dadfailed): %s", address, err)
            return
        if removed:
            self.node.counters["addresses_removed_unusable"] += 1
            log.warning("%s: tentative or dadfailed on %s: removed", address,
                        self.host.vip_interface)  # fmt: skip
        self._address_gone(address.ip)

    def address_removed(self, index: int, address: IPInterface) -> None:
        if index == self._adv_index and address.ip == self.host.address:
            self._feed_source(False, asyncio.get_running_loop().time())
        if self._is_source6(index, address.ip):
            self._feed_source(False, asyncio.get_running_loop().time(), 6)
        if index == self._vip_index and address.ip.is_link_local:
            self._check_vip6()  # IPv6 turned off there: its link-local address goes first
        # A copy of a VIP with another prefix going (we removed it, see address_added) leaves
        # the planned one in place: nothing to add back.
        if index == self._vip_index and address in self._planned_addresses():
            self._address_gone(address.ip)

    def _planned_addresses(self) -> set[IPInterface]:
        """Every planned VIP with its prefix (kept per plan: looked up for every address event)."""
        if self._planned[0] is not self.plan:
            self._planned = (self.plan, {v.address for v in self.plan.vips}, set())
            self._planned[2].update(v.ip for v in self.plan.vips)
        return self._planned[1]

    def _planned_ips(self) -> set[IPAddress]:
        """Every planned VIP's address alone (kept with `_planned_addresses`)."""
        self._planned_addresses()
        return self._planned[2]

    def addresses_dumped(self, index: int, present: set[IPAddress]) -> None:
        """After a (re)synchronisation: a VIP we are master of and that is missing was removed
        while we could not hear it."""
        if index == self._adv_index:
            now = asyncio.get_running_loop().time()
            self._feed_source(self.host.address in present, now)
            if self.host.address6 is not None:
                self._feed_source(self.host.address6 in present, now, 6)
        if index != self._vip_index:
            return
        self._check_vip6()
        # Whether a missing address matters (we are its master) is the machine's call.
        for key in list(self.node.machines):
            ip = self.node.vips[key].ip
            if ip not in present:
                self._address_gone(ip)

    def _address_gone(self, ip: IPAddress) -> None:
        effects = self.node.address_gone(asyncio.get_running_loop().time(), ip)
        if effects:
            self.node.counters["addresses_restored"] += 1
            where = self.host.vip_interface
            log.warning("%s: removed from %s behind our back; added it back", ip, where)
        self._emit(effects)

    def _check_result(self, check: Check, result: RunResult) -> None:
        """A run of a health check ended: the node counts it and moves the VIPs if it must."""
        if self._stopping.is_set():
            return
        now = asyncio.get_running_loop().time()
        change, effects = self.node.check_result(
            now, check.name, result.ok, result.detail, result.seconds
        )
        if change is not None:
            # Exactly one line per transition, in the one format (issue 10).
            level = logging.INFO if change.new == "up" else logging.WARNING
            log.log(level, "%s", change.line(self.host.name))
        self._emit(effects)

    def _note_last_resort(self, effects: list[Effect]) -> None:
        """Say it when a sick host keeps serving a VIP because no healthy host took it (and when
        that ends). Only the VIPs these effects touch are looked at: a master's every advert is
        an effect, so a change is seen within an interval, at no cost per event for the rest."""
        if not self._last_resort and not any(not st.up for st in self.node.health.values()):
            return
        for key in {(e.vip.group, e.vip.vhid) for e in effects}:
            m = self.node.machines.get(key)
            now_lr = m is not None and m.last_resort
            if now_lr == (key in self._last_resort):
                continue
            v = self.node.vips.get(key)
            if now_lr and v is not None:
                self._last_resort.add(key)
                down = ", ".join(self.node.checks_down(v.ip))
                log.warning(
                    "%s vhid %d: check %s down on %s, but no healthy host takes it: serving it "
                    "here (last resort)", v.address, v.vhid, down, self.host.name,
                )  # fmt: skip
            else:
                self._last_resort.discard(key)
                if v is not None:
                    log.info("%s vhid %d: no longer served here as the last resort", v.address,
                             v.vhid)  # fmt: skip

    def _emit(self, effects: list[Effect], arm: bool = True) -> None:
        """Carry out `effects` in order; then (with `arm`) wake up again at the node's next
        deadline."""
        if effects:
            self._emit_all(effects)
            self._note_last_resort(effects)
        if arm:
            self._arm_timer()

    def _emit_all(self, effects: list[Effect]) -> None:
        """In a large batch (a takeover of hundreds of VIPs at once) the state-change lines are
        written after the batch's effects: a log line costs about 14 us, and written in between
        they held the last of 4,000 addresses back by 50 ms (bench/scale.py). The lines and their
        order are the same.

        Adverts that follow each other in `effects` (a grid point's adverts: carp.machine
        "Phase") are encoded first and then sent back to back, before the next effect of
        another kind: the order of effects is kept, only the sendto calls come together. Sent
        one by one between the encodings, each advert found the receiving side asleep again and
        paid for waking it (bench/scale.py)."""
        defer = len(effects) > LOG_AFTER_BATCH and self._deferred_logs is None
        if defer:
            self._deferred_logs = []
        held_any = self._held  # empty but for fresh IPv6 VIPs: no address hashed per effect
        adverts: list[tuple[VipPlan, bytes]] = []
        for e in effects:
            held = held_any.get(e.vip.ip) if held_any else None  # type: ignore[call-overload]
            if held is not None and not isinstance(e.action, DelAddress):
                held[0].append(e)  # after the ones already waiting, in order
                continue
            a = e.action
            advert = type(a) is SendAdvert
            if adverts and not advert:
                # Outside the try below: a failed advert must not cost this effect (an address
                # left behind); _send_adverts logs and counts each failure itself.
                sending, adverts = adverts, []
                self._send_adverts(sending)
            try:
                if advert:
                    # Encoded by the node with its counter (carp.node); b"": encoded here.
                    adverts.append((e.vip, e.carp or self._encode(e)))
                    continue
                if held is not None:  # released before it is in service: whatever waits first
                    self._in_service(e.vip.ip, released=True)  # type: ignore[arg-type]
                self._apply(e)
            except OSError as err:  # the NIC vanished, the socket broke: log, keep going
                self.node.counters["errors"] += 1
                log.error("%s vhid %d: %s failed: %s", e.vip.address, e.vip.vhid, e.action, err)
            except Exception:  # a bug must not stop every other VIP's adverts
                self.node.counters["errors"] += 1
                log.exception("%s vhid %d: %s failed", e.vip.address, e.vip.vhid, e.action)
        if adverts:
            self._send_adverts(adverts)
        if defer:
            lines, self._deferred_logs = self._deferred_logs, None
            for args in lines or ():
                log.info(*args)

    def _encode(self, e: Effect) -> bytes:
        """The CARP bytes of the SendAdvert `e`. Each VIP's encoder is found by its plan
        object's identity (kept and compared: a reused id never finds another's); a reload
        starts them again."""
        a, v = e.action, e.vip
        assert isinstance(a, SendAdvert)
        known = self._encoders.get(id(v))
        if known is None or known[0] is not v:
            password = self.plan.cluster.password
            if self._digest_mac is None or self._digest_mac.key != password:
                self._digest_mac = codec.KeyedMac(password, "sha1")  # shared by the encoders
            enc = codec.AdvertEncoder(v.vhid, v.ip, password, self._digest_mac)
            known = self._encoders[id(v)] = (v, enc)
        return known[1].encode(a.advbase, a.advskew, a.counter)

    def _send_adverts(self, adverts: list[tuple[VipPlan, bytes]]) -> None:
        """Send encoded adverts back to back, each to its VIP's group; a failed one is logged
        and counted, and the others still go."""
        sent = missing = 0
        for v, carp in adverts:
            group = v.group
            sock: Any = self.socket6 if isinstance(group, IPv6Address) else self.socket
            if sock is None:  # its link's rebuild failed (logged there): one line a batch below
                missing += 1
                continue
            try:
                sock.send(carp, group)
            except OSError as err:
                self.node.counters["errors"] += 1
                log.error("%s vhid %d: sending an advert failed: %s", v.address, v.vhid, err)
                continue
            except Exception:  # a bug (a socket gone, say) costs this advert, not the batch's
                self.node.counters["errors"] += 1
                log.exception("%s vhid %d: sending an advert failed", v.address, v.vhid)
                continue
            sent += 1
            # Only right after a takeover (the key's hash is not free, adverts go out every T).
            started = (
                self._takeover_started.pop((group, v.vhid), None)
                if self._takeover_started
                else None
            )
            if started is not None:
                self.node.takeover_seconds[(group, v.vhid)] = time.perf_counter() - started
        self.node.counters["adverts_sent"] += sent
        if missing:
            self.node.counters["errors"] += missing
            log.error("%d adverts not sent: no CARP socket for their family (see the link's "
                      "rebuild above)", missing)  # fmt: skip

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

    def _apply(self, e: Effect) -> None:
        a = e.action
        v = e.vip
        if isinstance(a, SendAdvert):
            self._send_adverts([(v, e.carp or self._encode(e))])
        elif isinstance(a, AddAddress):
            assert self.addresses is not None
            if self.addresses.add(v.address):
                if isinstance(v.ip, IPv6Address):
                    # A nodad IPv6 address is put in service (its local route) by a kernel
                    # worker after the add returns, not within it as IPv4's: an NA sent at once
                    # moves the clients here, and the first advert makes the old holder let go,
                    # while packets to the VIP are still dropped here. So this VIP's next effects
                    # wait for the kernel's RTM_NEWADDR (sent as the route goes in, see
                    # address_added), or IN_SERVICE_WAIT; other VIPs' effects do not wait.
                    loop = asyncio.get_running_loop()
                    timer = loop.call_later(IN_SERVICE_WAIT, self._in_service, v.ip)
                    self._held[v.ip] = ([], timer)
                self._hook(v, "up")
        elif isinstance(a, DelAddress):
            assert self.addresses is not None
            if self.addresses.delete(v.address):
                self._hook(v, "down")
        elif isinstance(a, SendGarp):  # a gratuitous ARP, or for IPv6 an unsolicited NA
            if isinstance(v.ip, IPv6Address):
                assert self.na is not None
                self.na.send(v.ip)
            else:
                assert self.garp is not None
                self.garp.send(v.ip)
        elif isinstance(a, Transition):
            if a.new is State.MASTER:
                self._takeover_started[(v.group, v.vhid)] = time.perf_counter()
            line = ("%s vhid %d: %s -> %s: %s", v.address, v.vhid, a.old.value, a.new.value, a.why)
            if self._deferred_logs is not None:
                self._deferred_logs.append(line)
            else:
                log.info(*line)

    def _in_service(self, ip: IPv6Address, released: bool = False) -> None:
        """A fresh IPv6 VIP is in service (or we waited long enough): its held effects go. If
        it is being `released` instead, its held NAs do not: a better master's NA went out
        before the advert that made us let go, and ours after it would pull every client to a
        host without the VIP until their neighbour unreachability detection gave up on it."""
        held = self._held.pop(ip, None)
        if held is None:
            return
        effects, timer = held
        timer.cancel()
        if released:
            effects = [e for e in effects if not isinstance(e.action, SendGarp)]
        self._emit(effects)

    def _hook(self, v: VipPlan, event: Literal["up", "down"]) -> None:
        hook = hook_for(
            self.plan.cluster, v, event, self.host.vip_interface, self.node.checks_down(v.ip)
        )
        if hook is not None:
            self.hooks.run(hook)

    # --- control -----------------------------------------------------------------------------

    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": build_status(self.node, loop.time())}
        if cmd in ("drain", "undrain"):
            try:
                ip = drain_target(req, self._stopping.is_set())
            except BadRequest as e:
                return {"ok": False, "error": str(e)}
            if ip is not None and all(v.ip != ip for v in self.node.vips.values()):
                return {"ok": False, "error": f"{ip} is not a VIP of this cluster"}
            if ip is not None and all(self.node.vips[k].ip != ip for k in self.node.machines):
                return {"ok": False, "error": f"{self.host.name} takes no part in {ip}"}
            now = loop.time()
            if cmd == "drain":
                self._drain_all = self._drain_all or ip is None
                self._emit(self.node.drain(now, ip))
            else:
                self._drain_all = False  # what stays drained is the per-VIP list
                self._emit(self.node.undrain(now, ip))
            log.info("%s %s", cmd, ip or "every VIP")
            drained = [str(v.address) for v in self.node.drained()]
            return drain_answer(drained, self._save_drained())
        if cmd == "reload":
            return await self.reload()
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _state_file(self) -> Path | None:
        return drained_state.path_for(self.options.state_dir, self.host.name)

    def _save_drained(self) -> str | None:
        """Save the drained state; what went wrong, if it could not be saved."""
        state = drained_state.Drained(self._drain_all, tuple(v.ip for v in self.node.drained()))
        return drained_state.save_or_error(self._state_file(), state)

    def _restore_drained(self, now: float) -> None:
        """A host drained for maintenance stays drained across restarts until undrained. A file
        that cannot be used is logged and ignored: the host takes part normally."""
        state = drained_state.load_or_log(self._state_file())
        if state is None:
            return
        self._drain_all = state.all
        known = {v.ip for v in self.node.vips.values()}
        for ip in drained_state.to_drain(
            state, known.__contains__, "is no longer a VIP of the plan"
        ):
            self._emit(self.node.drain(now, ip))

    def _log_status(self) -> None:
        """SIGUSR1: one line per VIP and one with the counters (drops by reason among them)."""
        now = asyncio.get_running_loop().time()
        for key, m in self.node.machines.items():
            v = self.node.vips[key]
            log.info(
                "status %s vhid %d: %s for %.1f s, %d transitions",
                v.address, v.vhid, m.state.value, now - m.since, m.transitions,
            )  # fmt: skip
        for name, st in self.node.health.items():
            log.info(
                "status check %s on %s: %s for %.1f s, %d runs, %d failed: %s",
                name, self.host.name, st.state, now - st.since, st.runs, st.failures, st.detail,
            )  # fmt: skip
        counts = " ".join(f"{k}={n}" for k, n in sorted(self.node.counters.items()))
        log.info("status counters: %s", counts or "none")


async def _collect(call: Any) -> list[Any]:
    """pyroute2's async calls answer with a list or an async iterator, depending on the call."""
    result = await call
    if hasattr(result, "__aiter__"):
        return [m async for m in result]
    return list(result)


def promote_secondaries(interface: str) -> None:
    """VIPs of one subnet are secondaries of the first one added; unless the kernel promotes
    secondaries, removing that one (handing it back) silently removes all the others with it."""
    conf = Path("/proc/sys/net/ipv4/conf")
    try:
        if (conf / "all" / "promote_secondaries").read_text().strip() == "1":
            return
        path = conf / interface / "promote_secondaries"
        if path.read_text().strip() != "1":
            path.write_text("1\n")
            log.info("%s: promote_secondaries set to 1", interface)
    except OSError as e:
        log.error(
            "%s: cannot set promote_secondaries (%s): releasing one VIP may remove the others of "
            "its subnet; set net.ipv4.conf.all.promote_secondaries=1",
            interface,
            e,
        )


def ipv6_off(interface: str, conf: Path = Path("/proc/sys/net/ipv6/conf")) -> bool:
    """Whether IPv6 is off on `interface` (disable_ipv6 = 1), or in the whole kernel (no
    IPv6 settings at all). An interface whose settings are gone (deleted) is not off: its link
    is down, which stands its VIPs aside anyway."""
    if not conf.is_dir():
        return True
    try:
        return (conf / interface / "disable_ipv6").read_text().strip() == "1"
    except OSError:
        return False


async def _ifindex(ipr: AsyncIPRoute, name: str, host: str) -> int:
    found = await ipr.link_lookup(ifname=name)
    if not found:
        raise StartError(f"interface {name!r} not found on this host ({host})")
    return int(found[0])


async def remove_vips(plan: Plan, host: str, ipr: AsyncIPRoute | None = None) -> list[str]:
    """Delete every planned VIP present on `host`'s VIP interface; the ones removed."""
    own = ipr is None
    ipr = ipr or AsyncIPRoute()
    try:
        index = await _ifindex(ipr, plan.cluster.host(host).vip_interface, host)
        planned = {v.ip: v for v in plan.vips}
        present: list[IPInterface] = [
            ip_interface(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
            for family in (2, 10)  # AF_INET, AF_INET6
            for m in await _collect(ipr.addr("dump", index=index, family=family))
        ]
        setter = AddressSetter(index)
        try:
            return [
                str(planned[a.ip].address) for a in present if a.ip in planned and setter.delete(a)
            ]
        finally:
            setter.close()
    finally:
        if own:
            ipr.close()


def _load_plan(path: str) -> Plan:
    return make_plan(load_cluster(path))


def _wall_offset() -> float:
    """What turns the loop's monotonic clock into wall-clock seconds (the floor of the counters
    the node seals: carp.native_auth)."""
    return time.time() - time.monotonic()  # asyncio's loop.time() is time.monotonic()


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
