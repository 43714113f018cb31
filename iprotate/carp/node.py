"""Everything one host runs, as a pure object: its CARP machines and the receive path.

A `Node` owns one state machine per VIP the host takes part in, routes received packets to them
(decode, sender, group and vhid lookup, digest, the iprotate peers' authentication and freshness
(carp.native_auth), then the machine), seals the counters of the adverts it sends, keeps the
counters `status` and metrics read, and remembers the master heard for every vhid on the segment,
including VIPs this host takes no part in. It also holds the state of this host's health checks
(carp.health, fed by the daemon with each run's result) and makes a VIP sick on its machine while
any check it depends on is not up (the machine's "Sick" rule), healed after the hold-down. Like
the machines it has no socket and no clock: the daemon feeds it bytes and `now` and carries out
the `Effect`s it returns.

IPv6 VIPs (issue 11) go through the same receive path: `packet` takes what the IPv4 CARP socket
reads (the whole packet), `packet6` what the IPv6 one reads (the CARP bytes, with the source,
destination and hop limit from recvfrom and ancillary data). Both then make the same checks: our
own source dropped (either of our addresses), the sender a host of the file (its `address` or
`address6`), the group, the vhid, the digest, the iprotate peers' sender, priority and
freshness (native_auth keys its marks by source address, so IPv6 sources have their own), the
plan's priorities (drift). A machine of an IPv6 VIP has our `address6` as its source; the
effects carry the VipPlan, whose address family tells the shell which socket, which way to add
the address (nodad) and which announcement (see machine.SendGarp).

Speed (issue 12: 1,000 VIPs a host at under 2 % of a core, bench/scale.py): the checks above run
in full once per (sender, VIP) pair; the pair (`_Pair`) then holds what they found, and the next
adverts of that pair are found by one lookup of their raw bytes and go straight to `_accept`
(digest, tag and freshness, Seen, drift, machine), which every advert passes. The timer heap
holds one `_Slot` per machine. Pairs hold only facts of the plan: a reload drops them, and
renews the slots.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple, TypeVar

from iprotate.carp import codec
from iprotate.carp.health import CheckState, HealthChange
from iprotate.carp.machine import (
    Action,
    CarpMachine,
    DelAddress,
    MachineConfig,
    SendAdvert,
    State,
    Transition,
)
from iprotate.carp.native_auth import Marks, NativeAuth, Verdict, derive_key, tag_head
from iprotate.cluster.model import IPAddress
from iprotate.plan.model import Plan, VipPlan
from iprotate.plan.timing import FAREWELL_ADVBASE, FAREWELL_ADVSKEW, SICK_ADVSKEW, interval

_new_tuple = tuple.__new__  # a named tuple without its Python-level __new__ (see Effect)
# Two masters' adverts must overlap this long at least (sub-second intervals can be a few ms).
OVERLAP_FLOOR = 0.05
Key = tuple[IPAddress, int]  # (group, vhid): how VIPs are told apart on the wire
# Senders that are no host of the cluster file, remembered for status: the most recent ones only.
MAX_STRANGERS = 16
# Fail-back is staggered so that it does not storm: VIPs are taken back one after the other,
# `stagger` seconds apart, not all at once (N addresses, N gratuitous ARPs and N demotions on
# the peer in one burst, and every client's ARP cache rewritten at the same instant). But a
# fixed gap grows with N: 0.1 s a VIP is 200 s for 2,000 VIPs, long minutes in which the
# returning owner's share stays on the survivor. So the whole fail-back fits in this window:
# the gap is `stagger`, or window / N when N VIPs at `stagger` would take longer. The pace
# then scales with N (4,000 VIPs: one every 2.5 ms, 400 a second, which the peer demotes at a
# few percent of a core: bench/scale.py) and is still a pace, never one burst.
STAGGER_WINDOW = 10.0
# Masters' adverts fall on one point of the interval per this many VIPs of the node (machine
# "Phase"): 1 to 250 VIPs advertise together, 1,000 in 4 bursts, 4,000 in 16. A takeover of one
# burst's VIPs takes about 50 ms here (bench/scale.py); fewer, larger bursts cost less CPU.
VIPS_PER_SLOT = 250
_T = TypeVar("_T")
Step = Callable[[CarpMachine, int, int], list[Action]]  # machine, place in the stagger, of how many


class _Address(IPv4Address):
    """An IPv4Address that computes its hash once.

    ipaddress hashes an address as hash(hex(int(address))) on every call, and compares two in
    Python: with dicts keyed by (group, vhid) and (peer, (group, vhid)), that was a fifth of the
    receive path at 1,000 VIPs (bench/scale.py, cProfile). The node keeps one of these per host
    and group address and keys its own dicts with them, and maps each received packet's raw
    addresses to them: a lookup then costs a stored hash and an identity test. Equal to, and
    hashing like, the IPv4Address of the same value, so it mixes with the plan's objects
    anywhere (only slower there)."""

    __slots__ = ("_hash",)

    def __init__(self, address: IPv4Address) -> None:
        super().__init__(address.packed)
        self._hash = IPv4Address.__hash__(self)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"IPv4Address({str(self)!r})"


def machine_configs(
    plan: Plan, host: str, garp_refresh: float = 0.0, ignore_ifstate: bool = False
) -> dict[Key, MachineConfig]:
    """The CARP configuration of every VIP `host` takes part in, with the plan's priorities."""
    c = plan.cluster
    me = c.host(host)
    return {
        (v.group, v.vhid): MachineConfig(
            vip=v.ip,
            vhid=v.vhid,
            src=_source(me.source_for(v.ip), host, v),
            advbase=c.advbase,
            advskew=v.advskew_of(host),
            dead_ratio=c.dead_ratio,
            preempt=v.preempt_of(host),
            garp_refresh=garp_refresh,
            ignore_ifstate=ignore_ifstate,
        )
        for v in plan.vips
        if host in v.order
    }


def _source(src: IPAddress | None, host: str, v: VipPlan) -> IPAddress:
    if src is None:  # the loader and the planner never let it come to this
        raise ValueError(f"{host} takes part in {v.address} but has no address6")
    return src


class Effect(NamedTuple):
    """An action of one VIP's machine, for the daemon to carry out. A named tuple, not a
    dataclass: one is made per advert sent, and `tuple.__new__` makes it in a third of a frozen
    dataclass's time (bench/scale.py)."""

    vip: VipPlan
    action: Action
    # A SendAdvert's 36 CARP bytes, encoded by the node with its counter; b"": none (another
    # action, or a password no advert may carry: the shell's encoding says why it fails).
    carp: bytes = b""


@dataclass(slots=True)
class Seen:
    """The last advert heard for a vhid: who sends it, with which priority, when."""

    src: IPAddress
    advbase: int
    advskew: int
    at: float
    first: float = 0.0  # when this source began advertising without a pause (a master's streak)


@dataclass
class Stranger:
    """A sender that is no host of the cluster file (its adverts are dropped)."""

    count: int
    last: float


@dataclass
class Drift:
    """A peer whose adverts disagree with the plan (other priorities, or failing the digest)."""

    detail: str
    first: float
    last: float
    count: int = 1


class _Slot:
    """One machine's place in the node's timer heap, and what sealing its adverts takes.

    The heap holds slots, not keys: a master's every advert and a backup's every D take a heap
    entry, and finding the machine, its queued time and its seal by a key hashed an address
    object five times per advert (bench/scale.py). A slot whose machine is replaced or removed
    is dead: `queued` None, its heap entries skipped."""

    __slots__ = ("key", "machine", "queued", "seal", "vip")

    def __init__(self, key: Key, machine: CarpMachine, vip: VipPlan) -> None:
        self.key, self.machine = key, machine
        self.vip = vip  # the plan's, renewed by a reload (Node._index_hosts)
        self.queued: float | None = None  # when its one live heap entry is due
        # Made on its first advert, dropped on a reload: its marks, the tag's fixed bytes from
        # our source, the VIP's bytes (carp.native_auth.NativeAuth.seal), and its encoder
        # (None: the password is no CARP password; the shell encodes, and says why it fails).
        # The keyed hash states stay the password's, one for every VIP: copies of per-VIP
        # states after their fixed bytes were slower at 4,000 VIPs (their memory, not the
        # hashing, bench/scale.py).
        self.seal: tuple[Marks, bytes, bytes, codec.AdvertEncoder | None] | None = None


class _Pair:
    """A sender and a VIP of ours: what the receive path needs for each advert of that pair.

    Made on the pair's first advert that passes the routing checks (the sender a host of the
    file and not us, the group and vhid a planned VIP, an iprotate sender or one in the VIP's
    order) and found from then on with one lookup by the packet's raw bytes (`Node._pairs`),
    instead of those checks and a dozen lookups keyed by address objects (bench/scale.py). A
    pair holds only facts of the plan, so every plan change drops them all. Bounded by hosts
    of the file times VIPs."""

    __slots__ = (
        "allowed", "head", "key", "marks", "planned", "prefix", "seen", "slot", "src", "vip_packed",
    )  # fmt: skip

    def __init__(
        self,
        key: Key,
        src: IPAddress,
        vip: VipPlan,
        prefix: bytes,
        planned: int | None,
        slot: _Slot | None,
        marks: Marks | None,
    ) -> None:
        self.key, self.src, self.prefix = key, src, prefix
        self.planned = planned  # the sender's advskew in the plan for this VIP (None: no part)
        self.slot = slot  # None: a VIP we only watch
        self.marks = marks  # an iprotate sender's (authenticated, fresh seqs); None: ucarp's
        self.head = tag_head(src, key)
        self.vip_packed = vip.ip.packed
        # The skews that are no drift with the plan's advbase (see _check_priorities).
        self.allowed = () if planned is None else (planned, FAREWELL_ADVSKEW, SICK_ADVSKEW)
        self.seen: Seen | None = None


@dataclass
class Node:
    """One host's share of the plan. Build with `Node.build`."""

    plan: Plan
    host: str
    machines: dict[Key, CarpMachine]
    vips: dict[Key, VipPlan]
    hold_down: float = 0.0
    stagger: float = 0.0
    garp_refresh: float = 0.0
    wall_offset: float = 0.0  # add to `now` for wall-clock seconds (the counters' floor)
    ignore_ifstate: bool = False
    links_up: dict[bool, bool] = field(default_factory=lambda: {False: True, True: True})
    source_up: bool = True  # our own address is on the advert interface
    source6_up: bool = True  # our own address6 is there, and usable (not tentative/dadfailed)
    counters: Counter[str] = field(default_factory=Counter)
    seen: dict[Key, dict[IPAddress, Seen]] = field(default_factory=dict)
    drift: dict[tuple[Key, IPAddress], Drift] = field(default_factory=dict)
    takeover_seconds: dict[Key, float] = field(default_factory=dict)  # filled in by the daemon
    strangers: dict[IPAddress, Stranger] = field(default_factory=dict)
    auth: NativeAuth = field(init=False)
    started: float | None = None  # when `start` ran: status judges silence only after a while
    # Adverts from hosts of the cluster for vhids our plan does not have (a different cluster
    # file there): (source, group, vhid) -> when last heard. Only hosts of the file are kept,
    # so forged sources cannot grow it.
    unplanned: dict[tuple[IPAddress, IPAddress, int], float] = field(default_factory=dict)
    # This host's health checks by name (the plan's checks that run here), and their states.
    health: dict[str, CheckState] = field(default_factory=dict)
    # The timers: a heap of times, and the slots due at each time in the order queued, at most
    # one live entry per machine, the slot's `queued` its time. A master's adverts fall on a
    # few grid points ("Phase" in carp.machine): hundreds of machines share each time, so one
    # heap entry per time, not per machine (a heap entry per advert walked ~10 cold tuples
    # a second per VIP: bench/scale.py). A backup's deadline moves later with every advert it
    # hears: that entry is left where it is and, when it comes due, put back at the machine's
    # new deadline (one push per D, not per advert). A deadline that moves earlier gets a new
    # entry and the older one is skipped.
    _timers: list[float] = field(default_factory=list)
    _due: dict[float, list[_Slot]] = field(default_factory=dict)
    _slots: dict[Key, _Slot] = field(default_factory=dict)
    _host_at: dict[IPAddress, str] = field(default_factory=dict)
    _address: IPv4Address = field(default=IPv4Address(0))
    _address6: IPv6Address | None = None
    _own: frozenset[IPAddress] = frozenset()
    _groups: set[IPAddress] = field(default_factory=set)
    _native: frozenset[IPAddress] = frozenset()
    _keys_of: dict[IPAddress, tuple[Key, ...]] = field(default_factory=dict)
    _canon: dict[bytes, _Address] = field(default_factory=dict)  # packed IPv4 -> the node's own
    _routes: dict[Key, tuple[VipPlan, bytes, dict[IPAddress, int]]] = field(default_factory=dict)
    # (sender, VIP) pairs heard: IPv4 ones keyed by the packet's bytes 12..21 (source, group,
    # CARP version and type, vhid), IPv6 ones by (source, group, vhid). See _Pair.
    _pairs: dict[object, _Pair] = field(default_factory=dict)
    _digest_mac: codec.KeyedMac = field(init=False, repr=False)  # the password's HMAC-SHA1

    def __post_init__(self) -> None:
        self._index_hosts()
        self.machines = self._rekeyed(self.machines)
        self._set_phase_slots()
        self._digest_mac = codec.KeyedMac(self.plan.cluster.password, "sha1")
        self.auth = NativeAuth.for_password(
            self.plan.cluster.password, self._address, self._address6
        )

    def _index_hosts(self) -> None:
        # Looked up for every packet: keep them at hand rather than search the host list.
        c = self.plan.cluster
        self._pairs = {}  # facts of the old plan
        for slot in self._slots.values():
            slot.seal = None  # our source, or the marks, may change with it
            slot.vip = self.vips.get(slot.key, slot.vip)  # a machine to stop keeps its own
        # One _Address per IPv4 host and group address (the same objects across reloads), and
        # the VIPs keyed with them: see _Address. IPv6 ones stay as they are.
        old = self._canon
        packed = {h.address.packed for h in c.hosts}
        packed |= {v.group.packed for v in self.plan.vips if v.group.version == 4}
        self._canon = {p: old.get(p) or _Address(IPv4Address(p)) for p in packed}

        def canon(a: IPAddress) -> IPAddress:
            return self._canon.get(a.packed, a)

        self.vips = self._rekeyed(self.vips)
        self._host_at = {canon(h.address): h.name for h in c.hosts}
        self._host_at.update({h.address6: h.name for h in c.hosts if h.address6 is not None})
        me = c.host(self.host)
        self._address, self._address6 = canon(me.address), me.address6  # type: ignore[assignment]
        self._own = frozenset(a for a in (self._address, me.address6) if a is not None)
        self._groups = {canon(v.group) for v in self.plan.vips}
        # Whose adverts carry authenticated priorities and fresh counters (ucarp's do not).
        native = [h for h in c.hosts if h.engine == "iprotate"]
        self._native = frozenset(
            canon(a) for h in native for a in (h.address, h.address6) if a is not None
        )
        # VIP address -> its keys: every address event (one per VIP added at a takeover) and
        # every per-VIP command looks its machine up here, not by scanning all VIPs (which made
        # a takeover of N VIPs cost N * N steps: seconds at 1,000 VIPs, bench/scale.py).
        keys_of: dict[IPAddress, list[Key]] = {}
        for key, v in self.vips.items():
            keys_of.setdefault(v.ip, []).append(key)
        self._keys_of = {ip: tuple(keys) for ip, keys in keys_of.items()}
        # What the receive path needs of a VIP, in one lookup per advert: the VIP, its digest's
        # fixed bytes, and the planned advskew of each source address of its hosts (the plan's
        # priorities, looked up per advert by host name and list index before: bench/scale.py).
        sources = {h.name: [canon(a) for a in (h.address, h.address6) if a] for h in c.hosts}
        self._routes = {
            key: (
                v,
                codec.digest_prefix(v.vhid, v.ip),
                {a: skew for h, skew in zip(v.order, v.advskew, strict=True) for a in sources[h]},
            )
            for key, v in self.vips.items()
        }

    def _set_phase_slots(self) -> None:
        """One point of the interval per VIPS_PER_SLOT machines (machine "Phase"); it takes
        effect at each master's next advert, with no action of its own."""
        slots = max(1, -(-len(self.machines) // VIPS_PER_SLOT))
        for m in self.machines.values():
            m.phase_slots = slots

    def _rekeyed(self, d: dict[Key, _T]) -> dict[Key, _T]:
        """`d` with its keys' groups replaced by the node's own address objects, in order."""
        return {(self._canon.get(g.packed, g), vhid): x for (g, vhid), x in d.items()}

    @classmethod
    def build(
        cls,
        plan: Plan,
        host: str,
        wall_offset: float = 0.0,
        hold_down: float = 0.0,
        stagger: float = 0.0,
        garp_refresh: float = 0.0,
        ignore_ifstate: bool = False,
    ) -> Node:
        """Machines for every VIP `host` takes part in, with the plan's priorities.

        `wall_offset` turns the shell's monotonic `now` into wall-clock seconds, the floor of the
        counters this host sends (carp.native_auth)."""
        vips = {(v.group, v.vhid): v for v in plan.vips}
        machines = {
            key: CarpMachine(cfg)
            for key, cfg in machine_configs(plan, host, garp_refresh, ignore_ifstate).items()
        }
        return cls(
            plan,
            host,
            machines,
            vips,
            hold_down=hold_down,
            stagger=stagger,
            garp_refresh=garp_refresh,
            wall_offset=wall_offset,
            ignore_ifstate=ignore_ifstate,
            health={c.name: CheckState(c) for c in plan.checks_for(host)},
        )

    @property
    def address(self) -> IPv4Address:
        return self._address

    @property
    def address6(self) -> IPv6Address | None:
        """Our IPv6 source (the adverts of our IPv6 VIPs), if we have one."""
        return self._address6

    def source_for(self, key: Key) -> IPAddress:
        """Our source address for the adverts of the VIP `key`: of its group's family."""
        m = self.machines.get(key)
        if m is not None:
            return m.cfg.src
        return self._address6 if key[0].version == 6 and self._address6 else self._address

    # --- events ------------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Every machine joins as BACKUP; preemption waits for the hold-down, staggered."""
        self.started = now
        out = self._all(now, lambda m, i, n: m.start(now, self._preempt_after(now, i, n)))
        # Checks start unknown: their VIPs stand aside until they are up.
        return out + self._apply_health(now)

    def stop(self, now: float) -> list[Effect]:
        """Every machine leaves: farewell adverts from masters, every address released."""
        return self._all(now, lambda m, i, n: m.stop(now))

    def drain(self, now: float, only: IPAddress | None = None) -> list[Effect]:
        return self._all(now, lambda m, i, n: m.drain(now), only)

    def demote(self, now: float, seconds: float) -> list[Effect]:
        """SIGUSR2: every machine hands its VIP over and stands aside for `seconds`, then takes
        part again; preemption then waits for the hold-down, staggered."""
        until = now + seconds
        return self._all(
            now, lambda m, i, n: m.demote(now, until, self._preempt_after(until, i, n))
        )

    def undrain(self, now: float, only: IPAddress | None = None) -> list[Effect]:
        return self._all(now, lambda m, i, n: m.undrain(now, self._preempt_after(now, i, n)), only)

    def check_result(
        self, now: float, name: str, ok: bool, detail: str, seconds: float = 0.0
    ) -> tuple[HealthChange | None, list[Effect]]:
        """One run of the health check `name`: its transition (if any) and what it does to the
        VIPs depending on it (a VIP is sick here while any of its checks is not up)."""
        st = self.health.get(name)
        if st is None:
            return None, []  # a result of a check a reload removed
        change = st.result(now, ok, detail, seconds)
        if change is None:
            return None, []
        return change, self._apply_health(now)

    def checks_down(self, ip: IPAddress) -> list[str]:
        """The names of this host's checks that VIP `ip` depends on and that are not up."""
        return [n for n, st in self.health.items() if not st.up and ip in st.vips]

    def sick_vips(self) -> set[IPAddress]:
        """The VIPs that some check not up here makes sick."""
        out: set[IPAddress] = set()
        for st in self.health.values():
            if not st.up:
                out |= st.vips
        return out

    def _apply_health(self, now: float) -> list[Effect]:
        """Every machine sick or not as its checks say; healed ones preempt after the hold-down,
        staggered (as undrain)."""
        sick = self.sick_vips()

        def step(m: CarpMachine, i: int, n: int) -> list[Action]:
            if m.cfg.vip in sick:
                return m.sicken(now)
            return m.heal(now, self._preempt_after(now, i, n))

        return self._all(now, step)

    def link(self, up: bool, now: float, vip: bool = False) -> list[Effect]:
        """The advert interface (or with `vip`, the VIP interface) went down or came back."""
        self.links_up[vip] = up
        return self._all(now, lambda m, i, n: m.link(up, now, self._preempt_after(now, i, n), vip))

    def source(self, up: bool, now: float, version: int = 4) -> list[Effect]:
        """Our own address (the adverts' source) left the advert interface, or came back; with
        `version` 6, our address6: only the machines of IPv6 VIPs advertise from it."""
        if version == 6:
            self.source6_up = up
        else:
            self.source_up = up
        mine = [k for k, m in self.machines.items() if m.cfg.src.version == version]
        n = sum(1 for k in mine if self.machines[k].cfg.preempt)
        out: list[Effect] = []
        i = 0
        for key in mine:
            m = self.machines[key]
            act = m.source(up, now, self._preempt_after(now, i, n))
            out += self._effects(self._slot_of(key), act, now)
            if m.cfg.preempt:
                i += 1
        return out

    def address_gone(self, now: float, ip: IPAddress) -> list[Effect]:
        """An address was removed from the VIP interface (by us or by someone else)."""
        return self._all(now, lambda m, i, n: m.address_gone(now), ip)

    def address_present(
        self, now: float, ip: IPAddress, prefixlen: int | None = None
    ) -> list[Effect]:
        """A planned VIP is on the VIP interface (with `prefixlen`; None: the planned one).
        Unless its machine here is master, and it is the planned prefix, it must go: a VIP this
        host takes no part in is never ours to hold."""
        out: list[Effect] = []
        for key in self._keys_of.get(ip, ()):
            v = self.vips[key]
            m = self.machines.get(key)
            if m is None:
                out.append(Effect(v, DelAddress()))
            else:
                planned = prefixlen is None or prefixlen == v.address.network.prefixlen
                out += self._effects(self._slot_of(key), m.address_present(now, planned), now)
        return out

    def packet(self, now: float, data: bytes) -> list[Effect]:
        """A packet read from the IPv4 CARP socket. Bad ones are dropped and counted."""
        if type(data) is not bytes:  # a bytearray's slice cannot key the pairs (unhashable)
            data = bytes(data)
        raw = data[12:22]  # source, group, CARP version and type, vhid: a pair's key
        pair = self._pairs.get(raw)
        if pair is not None:
            fields = codec.advert_fields(data)
            if fields is not None:
                return self._accept(now, pair, *fields)
        try:
            raw_src, raw_dst, _, advert = codec.decode_fields(data)
        except codec.DecodeError as e:
            self.counters[f"drop_{e.reason.value}"] += 1
            return []
        # The node's own objects for these addresses (a host's, a group's), else new ones:
        # equal either way, only the lookups below are cheaper (see _Address).
        src = self._canon.get(raw_src) or IPv4Address(raw_src)
        dst = self._canon.get(raw_dst) or IPv4Address(raw_dst)
        return self._receive(now, advert, src, dst, raw)

    def packet6(
        self, now: float, carp: bytes, src: IPv6Address, dst: IPv6Address, hop_limit: int
    ) -> list[Effect]:
        """What the IPv6 CARP socket read: the CARP bytes, from `src` to `dst` with `hop_limit`
        (recvfrom and ancillary data). Bad ones are dropped and counted, as by `packet`."""
        try:
            pkt = codec.decode_packet6(carp, src, dst, hop_limit)
        except codec.DecodeError as e:
            self.counters[f"drop_{e.reason.value}"] += 1
            return []
        adv = pkt.advert
        raw = (pkt.src, pkt.dst, adv.vhid)
        pair = self._pairs.get(raw)
        if pair is not None:
            return self._accept(now, pair, adv.advskew, adv.advbase, adv.counter, adv.digest)
        return self._receive(now, adv, pkt.src, pkt.dst, raw)

    def _receive(
        self, now: float, adv: codec.Advert, src: IPAddress, dst: IPAddress, raw: object
    ) -> list[Effect]:
        """The routing checks after decoding, the same for both families; a packet that passes
        them makes its pair (`raw` its key) and goes on to `_accept`."""
        if src in self._own:
            return []  # our own advert, looped back
        if src not in self._host_at:
            self._stranger(now, src)
            return []
        if dst not in self._groups:
            self.counters[f"drop_{codec.Reject.WRONG_GROUP.value}"] += 1
            return []
        key = (dst, adv.vhid)
        route = self._routes.get(key)
        if route is None:
            self.counters[f"drop_{codec.Reject.UNKNOWN_VHID.value}"] += 1
            if src in self._host_at:
                self.unplanned[(src, dst, adv.vhid)] = now
            return []
        vip, prefix, skews = route
        native = src in self._native
        if not native and src not in skews:
            # A ucarp host's advert carries no tag: anyone can send one under its address. For
            # the VIPs it serves that is CARP's own limit, but a VIP it takes no part in must
            # not listen to it, or a captured advert resent from there, with any priority,
            # moves (or holds off) a VIP served only by iprotate hosts.
            self.counters["drop_not_in_order"] += 1
            self._drifting(
                now, key, src,
                f"{self._host_at[src]} (ucarp) advertises but takes no part in the plan",
            )  # fmt: skip
            return []
        marks = self.auth.marks_of(key) if native else None
        slot = self._slot_of(key) if key in self.machines else None
        pair = _Pair(key, src, vip, prefix, skews.get(src), slot, marks)
        self._pairs[raw] = pair
        return self._accept(now, pair, adv.advskew, adv.advbase, adv.counter, adv.digest)

    def _accept(
        self, now: float, pair: _Pair, advskew: int, advbase: int, counter: int, digest: bytes
    ) -> list[Effect]:
        """The checks of one advert of a known pair (digest, iprotate sender and freshness),
        then what it tells us: who is heard, drift from the plan, and the VIP's machine."""
        key, src = pair.key, pair.src
        if not codec.verify_digest(digest, self._digest_mac, pair.prefix, counter):
            self.counters[f"drop_{codec.Reject.BAD_DIGEST.value}"] += 1
            self._drifting(now, key, src, "fails the digest check (another password, VIP or vhid)")
            return []
        if pair.marks is not None:
            verdict = self.auth.judge(
                pair.marks, src, pair.head, pair.vip_packed, advbase, advskew, counter,
                now + self.wall_offset,
            )  # fmt: skip
            if verdict is not Verdict.OK:
                self.counters[f"drop_{verdict.value}"] += 1
                if verdict is Verdict.FORGED:
                    self._drifting(
                        now, key, src,
                        "fails iprotate's check of sender and priority (rewritten or forged, "
                        "or another version)",
                    )  # fmt: skip
                elif verdict is Verdict.FUTURE:
                    self._drifting(
                        now, key, src,
                        "sends a counter years ahead (a forged guess, or its clock is wrong)",
                    )  # fmt: skip
                return []
        self.counters["adverts_received"] += 1
        prior = pair.seen
        if prior is None:
            prior = pair.seen = self.seen.setdefault(key, {}).get(src)
        if prior is None:
            pair.seen = self.seen[key][src] = Seen(src, advbase, advskew, now, now)
        else:  # updated in place: one object less per advert received
            if now - prior.at > self._fresh():
                prior.first = now  # a new streak
            prior.advbase, prior.advskew, prior.at = advbase, advskew, now
        if self.drift or advbase != self.plan.cluster.advbase or advskew not in pair.allowed:
            self._check_priorities(now, key, src, advbase, advskew, pair.planned)
        slot = pair.slot
        if slot is None:
            return []  # a VIP we only watch
        m = slot.machine
        return self._effects(slot, m.advert(now, src, advbase, advskew, pair.planned), now)

    def reload(self, plan: Plan, now: float) -> list[Effect]:
        """Apply a new plan: unchanged VIPs are not touched, changed priorities are applied in
        place, VIPs this host no longer takes part in are released, new ones join."""
        old_vips = self.vips
        new_cfgs = machine_configs(plan, self.host, self.garp_refresh, self.ignore_ifstate)
        new_vips = {(v.group, v.vhid): v for v in plan.vips}
        out: list[Effect] = []
        if plan.cluster.password != self.plan.cluster.password:
            # Before the farewells below are sealed: the shell digests every advert it sends
            # from now on with the new password, so their tags must be under the new key too, or
            # no peer accepts them (the old password fails the digest, the new one the tag).
            self.auth.rekey(derive_key(plan.cluster.password))
            self._digest_mac = codec.KeyedMac(plan.cluster.password, "sha1")
            for slot in self._slots.values():
                slot.seal = None  # their encoders digest with the old password
        for key in list(self.machines):
            if key not in new_cfgs or new_vips[key].address != old_vips[key].address:
                out += self._effects(self._slot_of(key), self.machines[key].stop(now), now)
                del self.machines[key]
        self.plan, self.vips = plan, new_vips
        self._index_hosts()
        self.auth.src, self.auth.src6 = self._address, self._address6
        self.auth.forget(set(new_vips))
        self.seen = {k: v for k, v in self.seen.items() if k in new_vips}
        self.drift = {k: d for k, d in self.drift.items() if k[0] in new_vips}
        self.unplanned = {
            k: t
            for k, t in self.unplanned.items()
            if (k[1], k[2]) not in new_vips and k[0] in self._host_at
        }
        joined = 0
        joining = sum(1 for key in new_cfgs if key not in self.machines)
        for key, cfg in new_cfgs.items():
            m = self.machines.get(key)
            if m is not None:
                out += self._effects(self._slot_of(key), m.reconfigure(cfg, now), now)
            else:
                m = self.machines[key] = CarpMachine(cfg)
                # A VIP that joins while a link is down must not take over on it.
                m.advert_link_up, m.vip_link_up = self.links_up[False], self.links_up[True]
                m.source_up = self.source6_up if cfg.src.version == 6 else self.source_up
                act = m.start(now, self._preempt_after(now, joined, joining))
                out += self._effects(self._slot_of(key), act, now)
                joined += 1
        # Checks: a changed one keeps its state; a new one starts up (a reload must not touch
        # healthy VIPs; it goes down after `fall` failures); a removed one no longer counts. But a
        # new check on a VIP that is sick here starts unknown (sick until its first pass): a check
        # renamed while down must not hand the VIP back to a host whose service is still down.
        was_sick = self.sick_vips()
        checks = {c.name: c for c in plan.checks_for(self.host)}
        health: dict[str, CheckState] = {}
        for name, c in checks.items():
            st = self.health.get(name)
            if st is None and was_sick & frozenset(c.vips):
                st = CheckState(c, since=now, detail="added by a reload while its VIPs were sick")
            elif st is None:
                st = CheckState(c, state="up", since=now, detail="added by a reload, not run yet")
            else:
                st.reconfigure(c)
            health[name] = st
        self.health = health
        self.machines = self._rekeyed(self.machines)
        self._reslot()
        self._pairs = {}  # they hold the slots and marks replaced above
        self._set_phase_slots()
        return out + self._apply_health(now)

    def timers(self, now: float) -> list[Effect]:
        """Run every machine whose deadline has passed."""
        out: list[Effect] = []
        heap, due = self._timers, self._due
        while heap and heap[0] <= now:
            t = heapq.heappop(heap)
            for slot in due.pop(t):  # in the order queued; a slot queued again goes elsewhere
                if slot.queued != t:
                    continue  # superseded by an earlier entry for that machine, or dead
                slot.queued = None
                m = slot.machine
                advert = m.periodic_advert(now)  # a master's every advert: nothing else due
                if advert is not None:
                    self._schedule(slot)
                    out.append(self._sealed(slot, advert, now))
                    continue
                d = m.deadline  # a property that computes: read it once
                if d is None:
                    continue  # no timer armed any more
                if d > now:
                    self._schedule(slot)  # its deadline moved later meanwhile
                    continue
                out += self._effects(slot, m.timer(now), now)
        return out

    @property
    def deadline(self) -> float | None:
        """When `timers` must run next: no later than the earliest machine deadline (possibly
        earlier, when a deadline has moved later since it was queued; `timers` then re-queues)."""
        heap, due = self._timers, self._due
        while heap:
            t = heap[0]
            slots = due[t]
            if slots[0].queued == t:
                return t
            live = [s for s in slots if s.queued == t]  # dropped once, not read each time
            if live:
                due[t] = live
                return t
            heapq.heappop(heap)
            del due[t]
        return None

    def _schedule(self, slot: _Slot) -> None:
        """Queue the slot's machine's deadline, unless an entry at or before it is queued."""
        d = slot.machine.deadline
        if d is None:
            return
        queued = slot.queued
        if queued is not None and queued <= d:
            return
        slots = self._due.get(d)
        if slots is None:
            heapq.heappush(self._timers, d)
            self._due[d] = [slot]
        else:
            slots.append(slot)
        slot.queued = d

    def _slot_of(self, key: Key) -> _Slot:
        """The slot of the machine of `key`; a new one if that machine is new (a replaced
        machine's old slot is dead from then on)."""
        m = self.machines[key]
        slot = self._slots.get(key)
        if slot is None or slot.machine is not m:
            if slot is not None:
                slot.queued = None
            slot = self._slots[key] = _Slot(key, m, self.vips[key])
        return slot

    def _reslot(self) -> None:
        """After a reload: a slot for every machine, keyed as `machines` is; every other slot
        dead."""
        slots: dict[Key, _Slot] = {}
        for key, m in self.machines.items():
            slot = self._slots.get(key)
            if slot is None or slot.machine is not m:
                slot = _Slot(key, m, self.vips[key])
                self._schedule(slot)
            slot.key = key
            slots[key] = slot
        for key, slot in self._slots.items():
            if slots.get(key) is not slot:
                slot.queued = None
        self._slots = slots

    # --- internals ---------------------------------------------------------------------------

    def _preempt_after(self, now: float, index: int, count: int = 1) -> float:
        """Hold-down, then the `index`-th of `count` VIPs taken back, one every `stagger`
        seconds, or faster when `count` is large: all within STAGGER_WINDOW (no storm, and no
        long wait either)."""
        return now + self.hold_down + index * self._gap(count)

    def _gap(self, count: int) -> float:
        """Seconds between two VIPs taken back when `count` of them come back together."""
        return min(self.stagger, STAGGER_WINDOW / count) if count > 1 else self.stagger

    def _all(self, now: float, step: Step, only: IPAddress | None = None) -> list[Effect]:
        """Apply `step(machine, i)` to every machine (or the one for VIP `only`); `i` counts the
        machines that preempt, so each gets its own place in the stagger."""
        out: list[Effect] = []
        i = 0
        if only is None:
            chosen = list(self.machines.items())
        else:
            chosen = [
                (k, self.machines[k]) for k in self._keys_of.get(only, ()) if k in self.machines
            ]
        count = sum(1 for _, m in chosen if m.cfg.preempt)
        for key, m in chosen:
            out += self._effects(self._slot_of(key), step(m, i, count), now)
            if m.cfg.preempt:
                i += 1
        return out

    def _effects(self, slot: _Slot, actions: list[Action], now: float) -> list[Effect]:
        """`actions` of the slot's machine as effects, its next deadline queued, and each
        advert's counter sealed."""
        self._schedule(slot)
        if not actions:  # a backup hearing its master: nothing more per advert
            return []
        vip = slot.vip
        out = []
        for a in actions:
            if type(a) is SendAdvert:  # the usual one (a master's every advert): tested first
                out.append(self._sealed(slot, a, now))
                continue
            if isinstance(a, Transition):
                self.counters[f"to_{a.new.value.lower()}"] += 1
            out.append(Effect(vip, a))
        return out

    def _sealed(self, slot: _Slot, a: SendAdvert, now: float) -> Effect:
        """The slot's advert `a` with its counter sealed, encoded by the slot's encoder.

        Every advert leaves with a sealed counter: peers authenticate its sender and priority
        and drop it when replayed (carp.native_auth). It is encoded here with it: one object per
        advert, and no encoder looked up by the shell (bench/scale.py)."""
        marks, head, vip_packed, encoder = slot.seal or self._seal_of(slot)
        advbase, advskew = a.advbase, a.advskew
        counter = self.auth.seal(marks, head, vip_packed, advbase, advskew, now + self.wall_offset)
        try:
            carp = encoder.encode(advbase, advskew, counter) if encoder else b""
        except ValueError:  # values no advert may carry: the shell's encoding says so
            carp = b""
        advert = _new_tuple(SendAdvert, (advbase, advskew, counter))
        return _new_tuple(Effect, (slot.vip, advert, carp))

    def _seal_of(self, slot: _Slot) -> tuple[Marks, bytes, bytes, codec.AdvertEncoder | None]:
        """What sealing and encoding the slot's adverts takes (`_Slot.seal`), made now."""
        key, vip = slot.key, slot.vip
        head = tag_head(self.auth.own_source(key), key)
        try:
            # The password of _digest_mac: the new one already while a reload seals its
            # farewells (see reload), with the tags' key.
            mac = self._digest_mac
            encoder: codec.AdvertEncoder | None = codec.AdvertEncoder(
                vip.vhid, vip.ip, mac.key, mac
            )
        except ValueError:
            encoder = None
        seal = slot.seal = (self.auth.marks_of(key), head, vip.ip.packed, encoder)
        return seal

    def drained(self) -> list[VipPlan]:
        """The VIPs drained on this host (to remember across restarts)."""
        return [self.vips[k] for k, m in self.machines.items() if m.drained]

    def _stranger(self, now: float, src: IPAddress) -> None:
        """An advert from an address that is no host of the cluster file: dropped, counted, and
        its sender remembered (the most recent MAX_STRANGERS only: a flood from spoofed sources
        costs bounded memory)."""
        self.counters["drop_not_a_host"] += 1
        seen = self.strangers.pop(src, None)
        self.strangers[src] = Stranger((seen.count if seen else 0) + 1, now)
        while len(self.strangers) > MAX_STRANGERS:
            del self.strangers[next(iter(self.strangers))]

    def _drifting(self, now: float, key: Key, src: IPAddress, detail: str) -> None:
        d = self.drift.get((key, src))
        if d is None or d.detail != detail:
            self.drift[(key, src)] = Drift(detail, now, now)
            self.counters["drift"] += 1
        else:
            d.last, d.count = now, d.count + 1

    def _check_priorities(
        self,
        now: float,
        key: Key,
        src: IPAddress,
        advbase: int,
        advskew: int,
        skew: int | None,
    ) -> None:
        """A peer advertising what the plan does not give it is drifting (a stale or different
        cluster file, or a hand-started ucarp). Farewell and drained values are expected.
        `skew`: the sender's advskew in the plan for this VIP (None: it takes no part)."""
        host = self._host_at.get(src)
        if host is None:
            self._drifting(now, key, src, "advertises but is no host of the cluster file")
            return
        if skew is None:
            self._drifting(now, key, src, f"{host} advertises but takes no part in the plan")
            return
        planned = (self.plan.cluster.advbase, skew)
        allowed = (planned[1], FAREWELL_ADVSKEW, SICK_ADVSKEW)
        # The planned priority, the same base with the drained or sick skew, or the farewell.
        expected = (advbase == planned[0] and advskew in allowed) or (
            advbase == FAREWELL_ADVBASE and advskew == FAREWELL_ADVSKEW
        )
        if not expected:
            self._drifting(
                now, key, src,
                f"{host} advertises {advbase}/{advskew}, its plan says {planned[0]}/{planned[1]}",
            )  # fmt: skip
        elif self.drift:  # nothing to forget in the usual case: no key to hash per advert
            self.drift.pop((key, src), None)

    def last_heard(self) -> dict[IPAddress, float]:
        """When each peer address was last heard advertising (any vhid of our plan, valid
        digest); a dual-stack peer has two entries, one per source address."""
        out: dict[IPAddress, float] = {}
        for heard in self.seen.values():
            for s in heard.values():
                out[s.src] = max(out.get(s.src, s.at), s.at)
        return out

    def _fresh(self) -> float:
        # A master advertises every advbase + skew/256 s: heard within that (and a margin).
        return self.plan.cluster.advbase + 1.0

    def masters(self, now: float) -> dict[Key, list[IPAddress]]:
        """Who is master of each vhid on the segment, as far as this host can tell: us, and
        whoever advertised it within the last `fresh` seconds (two entries: two masters).

        A handover is not two masters: a master that hears a better one sends one last advert
        and falls silent, and that advert stays fresh for a while. Two sources are both masters
        only when their streaks of adverts overlap by half an interval (two masters that do not
        hear each other keep advertising); otherwise the master is us if our machine says so,
        else the one heard last (the one that answered the other)."""
        out: dict[Key, list[IPAddress]] = {}
        for key in self.vips:
            me = self.source_for(key)
            fresh = [
                (s.src, s.first, s.at, interval(s.advbase, s.advskew))
                for s in self.seen.get(key, {}).values()
                if now - s.at <= self._fresh() and s.advbase != FAREWELL_ADVBASE
            ]
            m = self.machines.get(key)
            if m is not None and m.state is State.MASTER:
                fresh.append((me, m.since, now, interval(m.cfg.advbase, m.cfg.advskew)))
            both: set[IPAddress] = set()
            for i, (a, a_first, a_at, a_every) in enumerate(fresh):
                for b, b_first, b_at, b_every in fresh[i + 1 :]:
                    overlap = min(a_at, b_at) - max(a_first, b_first)
                    if overlap >= max(min(a_every, b_every) / 2, OVERLAP_FLOOR):
                        both |= {a, b}
            if both:
                srcs = sorted(both)
            elif fresh:
                srcs = [max(fresh, key=lambda f: (f[0] == me, f[2]))[0]]
            else:
                srcs = []
            if me in srcs:  # us first, as before
                srcs = [me, *(a for a in srcs if a != me)]
            out[key] = srcs
        return out
