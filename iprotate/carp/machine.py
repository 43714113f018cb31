"""The CARP state machine, one per (group, vhid): every rule about CARP transitions lives here.

Theory of operation
-------------------
A machine is sans-I/O: it owns no socket and reads no clock. The shell feeds it events with the
current monotonic time `now` (`start`, `advert`, `timer`, `link`, `drain`, `undrain`, `stop`,
`address_gone`, `address_present`, `sicken`, `heal`) and
performs the actions it returns, in order (send an advert, add or delete the address, send a
gratuitous ARP). After every event the shell reads `deadline` and calls `timer(now)` no later than
that (or first `periodic_advert(now)`, the same for a master whose only due deadline is its next
advert). Transitions come back as `Transition` actions so the shell can log them; it decides
nothing.

States follow ucarp 1.5.2 as measured (CARP.md):

- INIT exists only until `start`: it goes straight to BACKUP (releasing the address, as ucarp runs
  its downscript) and arms the master-down timer D = advbase * dead_ratio + advskew/256.
- BACKUP never advertises. It becomes MASTER when D expires with no valid advert; at once when it
  hears a master with a longer interval and it may preempt; and, preempt or not, when the master's
  interval exceeds D (how a leaving master's farewell, advbase 255 / advskew 255, works). Any other
  valid advert restarts D.
- MASTER adds the address, sends a gratuitous ARP and an advert at once, then an advert every
  interval T = advbase + advskew/256 and a second gratuitous ARP two intervals later. Hearing a
  master with a shorter interval (or an equal one from a "lower" address, compared as ucarp does on
  x86) it sends one last advert and becomes BACKUP. Hearing a less preferred master it sends a
  gratuitous ARP and an advert at once, so clients and the other master both learn who is right.

What iprotate adds, each kept to the same three states:

- Links: a machine watches two of them, the advert link (where adverts flow) and the VIP link
  (where the address lives; often the same interface). It can serve only while its VIP link is
  up and its advert link is up, or ignored (`ignore_ifstate`, ucarp's -S: a back-to-back link loses
  carrier when the peer powers off, and the survivor must keep serving then). A machine that
  cannot serve is forced to BACKUP with no timers (the address is released) and ignores adverts;
  when it can serve again it rejoins as BACKUP with D armed and the hold-down. A master that loses
  only its VIP link can still speak on the advert link, so it sends the farewell (255/255) as
  `stop` does: every backup takes over at once (a native one after advskew/1024 s) instead of
  after D, the fastest correct takeover; a master that loses its advert link cannot tell anyone,
  and the next host takes over when D expires. Gratuitous ARPs are sent only by a master, and a
  machine is master only while its links are up, so a GARP never goes out on a link that is down;
  after a link comes back the next takeover sends them.
- Own address: adverts leave from the host's own address on the advert link. Removed from there
  by hand while we are master, every advert failed (ENETUNREACH), the backups took over after D
  and the VIP stayed on two hosts for as long as it was gone. Without it a machine cannot serve,
  even with `ignore_ifstate` (this is no carrier question): it is forced to BACKUP as on link
  down (no farewell: it cannot be sent), and rejoins as BACKUP with the hold-down when the
  address is back.
- Stray address: the VIP present on our interface while we are BACKUP (added by hand, left
  behind) makes two hosts answer ARP: `address_present` removes it. So is a copy with another
  prefix while we are MASTER (203.0.113.10/32 added by hand beside our 203.0.113.10/24): the
  hand-over releases only the planned one, and the copy kept the VIP on two hosts for good.
- Hold-down: after start or link up, preemption waits until `preempt_after` (a hold-down plus a
  per-VIP stagger chosen by the node: `stagger` apart, all within a bounded window, carp.node),
  so a flapping host does not drag addresses back and forth, and a fail-back does not storm.
  A master-down timeout still takes over at once: an unserved VIP is never left waiting. A
  backup that hears a less preferred master before `preempt_after` preempts at `preempt_after`
  itself, not at that master's next advert: one host's adverts come in bursts (see "Phase"), and
  waiting for them took back every VIP of a burst at once, whatever the stagger.
- Patience: a backup never concludes that a master is gone before that master's own interval has
  passed. With advbase 0, D = advskew/256 alone is shorter than a slower master's interval (62 ms
  for an owner behind a first backup advertising every 187 ms), so D expired between two adverts
  and the owner took its VIPs back by timeout, through the hold-down. So:
  * after an advert from a live master with interval Tm >= D, a backup waits Tm + advskew/256
    (the master's interval plus our own skew) instead of D. Behind a faster master (Tm < D, the
    usual case: a backup behind a better-ranked master) D stays, so failover still takes D;
  * on joining (start, link up, undrain) it has heard nobody yet and treats the slowest live
    master possible as heard: W = advbase + 255/256 (a drained master), so it waits W +
    advskew/256 when W >= D. Hosts started together still time out in the plan's order;
  * an advert is a farewell only when its interval exceeds max(D, W): at advbase 0 a slower
    master's ordinary advert (187 ms > an owner's D) was taken as a farewell and taken over.
    After a farewell a backup waits D (the leaving master is no live master).
  The order among backups holds: behind one master, those that wait Tm + advskew/256 are the ones
  ranked above it and time out by skew, before those ranked below it, which wait their D, as
  long as the skews of the ranks next above and next below the master differ by more than the
  master's own skew (the advbase 0 ladder 16, 48, 112, 240 does: 96 > 48, 192 > 112). With
  advbase >= 1 and dead_ratio >= 2, D = advbase * dead_ratio + advskew/256 exceeds W, so nothing
  changes there: ucarp's behaviour, made to hold at advbase 0.
- Drain: a draining master advertises the farewell values until another host answers as master,
  then yields (make-before-break: the new master holds the address before the old one lets go). A
  drained backup never preempts, does not take a farewell either (it takes over on D expiry only)
  and waits as if its advskew were 255: a last resort only. Two draining masters hearing each
  other's farewell settle by the address tie-break, so exactly one keeps the VIP.
- Demote (SIGUSR2, ucarp's "drop to BACKUP, block 3 s, carry on"): for DEMOTE_SECONDS the
  machine stands aside exactly as a drained one does (a master hands over make-before-break with
  farewell adverts, then yields; a backup never preempts, takes no farewell, a last resort only),
  then takes part normally again, preempting after the hold-down the shell gives. Unlike ucarp it
  never drops the address before a taker answers, and it is no drain: nothing is remembered, and
  a drained VIP stays drained when the demote ends.
- Sick (a health check of this VIP down here, iprotate.carp.health): the host stands aside as a
  drained one does, make-before-break (a sick master offers the VIP with farewell adverts until a
  taker answers, then yields; a sick backup never preempts a healthy master and takes no
  farewell), but it stays a better last resort than nobody, and sick hosts among themselves keep
  the plan's rank:
  * a sick backup waits D(254) + its own advskew/256: longer than any healthy backup, so a healthy
    one always takes over first, and in the plan's order among sick ones;
  * a sick master advertises advskew 254 (SICK_ADVSKEW): worse than any healthy host of the plan
    (a ucarp peer with -P preempts it, as any worse master), better than a drained one (255), and
    told apart from both on the wire, so a healthy backup with preempt takes the VIP back;
  * between two sick hosts the plan decides, not the address: a sick backup preempts a sick (254)
    master that the plan ranks below it, and a sick master yields to a sick one ranked above it
    (the node tells the machine the sender's planned advskew; adverts between iprotate hosts
    are authenticated). So a check down on every host leaves each VIP on its highest-ranked live
    host;
  * when nobody takes the VIP from a sick master, it keeps serving it: a VIP served by a sick
    host beats a VIP served by nobody (`last_resort` says so for status and the log).
  When the check is up again the host takes part normally, preempting after the hold-down the
  shell gives (staggered), as after undrain. Sick, drained and demoted are independent: undrain
  does not revive a sick VIP, a check coming up does not undrain a drained one.
- Farewell: ucarp takes over at once on a farewell, so every backup grabs the VIP together. A
  native backup waits advskew/1024 s instead (62 ms for a first backup): the best-ranked one
  answers first and the others hear a new master in time. An owner (advskew 0) takes over at once.
- Phase: a master's periodic adverts fall on a grid of its own: the times k * T + phase * T of
  the shell's clock, phase one of `phase_slots` points of [0, 1) hashed from the VIP's address
  (the same on every start and reload). The first advert after becoming master goes at once,
  the next at the first grid point after it (within one interval), then one every interval; a
  timer run late sends at once and goes back to the grid. Before, every VIP counted its
  interval from when its timer ran: machines that became master together (a host alone at
  start, a takeover of a dead host's VIPs) or ran in one late batch advertised in step from
  then on, one burst of N adverts each interval; every backup's master-down timers then
  expired in one burst too, and the last VIP of a takeover waited behind all the others (4,000
  VIPs: up to 1.65 s past D, bench/scale.py). The node sets `phase_slots` to one per
  VIPS_PER_SLOT of its VIPs (carp.node): bursts of at most about that many adverts, which a
  takeover handles well within its bound, and no more wake-ups of the shell than that needs
  (smaller bursts cost CPU: 16 slots at 1,000 VIPs took a point of a core more than 4). An
  advert earlier than the interval is always safe (a backup only restarts D).
- Stop: a master sends the farewell advert and releases the address.
- An address removed behind our back while we are master is added back (and announced).
- IPv6 VIPs (issue 11) run through the same machine and the same rules; only the addresses are
  IPv6 (the VIP, our source `address6`, the master heard). The actions are the same and the shell
  picks by the VIP's family: SendAdvert goes to the VIP's group (ff02::12) on the IPv6 CARP
  socket, AddAddress adds an IPv6Interface without duplicate address detection (nodad: a
  tentative VIP is dead for a second, and one that meets the old holder ends "dadfailed"), and
  SendGarp, "announce the VIP on the link", is an unsolicited neighbour advertisement to ff02::1
  with the override flag for an IPv6 VIP, a gratuitous ARP for an IPv4 one, at the same moments.
  The tie-break between two masters with equal intervals compares IPv6 sources as 128-bit
  numbers (network order, big-endian), the lower address winning as ucarp's lower integer does
  over IPv4. No peer implementation to agree with here: ucarp speaks no IPv6 and FreeBSD's
  carp_input_c has no tie-break (a master yields to any equal interval); distinct advskews per
  vhid, which the plan gives, make it moot.
- What reaches a machine is an advert the node has accepted: digest verified, sent by a host of
  the cluster file, and from an iprotate peer with its sender and priority authenticated and its
  counter fresh (carp.native_auth), or from a ucarp host that takes part in this VIP (a ucarp
  host's adverts are not authenticated, so one outside the VIP's order is not listened to). The
  counter of what a machine sends is the node's business.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import NamedTuple

from iprotate.cluster.model import IPAddress
from iprotate.plan.timing import (
    FAREWELL_ADVBASE,
    FAREWELL_ADVSKEW,
    SICK_ADVSKEW,
    interval,
    interval_key,
    master_down,
)

# After this many intervals without an answer a draining master gives up waiting for a taker and
# keeps the address (nobody else is alive to hold it); it goes on offering it with every advert.
DRAIN_PATIENCE = 3
# SIGUSR2 stands aside this long: ucarp blocks for 3 s after a demote, and scripts written for
# ucarp (maintenance, a failed local check) expect the host to be out of the way that long.
DEMOTE_SECONDS = 3.0
# A native backup takes over advskew/1024 s after a farewell (rank 1 of the usual ladder: 62 ms).
FAREWELL_SKEW_DIVISOR = 1024.0


class State(enum.Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"


# --- actions -------------------------------------------------------------------------------------


class SendAdvert(NamedTuple):
    """Send an advert with this priority. A named tuple: the node makes one per advert it
    sends (its counter sealed), and a tuple is made from a free list in a fraction of a frozen
    dataclass's time, its memory hot (bench/scale.py)."""

    advbase: int
    advskew: int
    counter: int = 0  # filled in by the node (carp.native_auth) when it hands the advert out


@dataclass(frozen=True)
class AddAddress:
    pass


@dataclass(frozen=True)
class DelAddress:
    pass


@dataclass(frozen=True)
class SendGarp:
    """Announce the VIP on its link: a gratuitous ARP for an IPv4 VIP, an unsolicited neighbour
    advertisement (override flag) for an IPv6 one; the shell picks by the VIP's family."""


@dataclass(frozen=True, slots=True)
class Transition:
    old: State
    new: State
    why: str


Action = SendAdvert | AddAddress | DelAddress | SendGarp | Transition


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MachineConfig:
    vip: IPAddress
    vhid: int
    src: IPAddress  # our own address of the VIP's family: the equal-interval tie-break uses it
    advbase: int
    advskew: int
    dead_ratio: int = 3
    preempt: bool = True
    garp_refresh: float = 0.0  # seconds between gratuitous ARPs while master; 0: only ucarp's two
    ignore_ifstate: bool = False  # ucarp's -S: serve even while the advert link has no carrier


def _tiebreak(addr: IPAddress) -> int:
    """Lower wins. IPv4: ucarp compares the raw network-order bytes as a native (x86:
    little-endian) integer. IPv6: the address as a number (big-endian), see the docstring."""
    if addr.version == 6:
        return int(addr)
    return int.from_bytes(addr.packed, "little")


# --- the machine ---------------------------------------------------------------------------------


@dataclass(slots=True)
class CarpMachine:
    """One VIP's CARP state. See the module docstring for the rules."""

    cfg: MachineConfig
    state: State = State.INIT
    advert_link_up: bool = True
    vip_link_up: bool = True
    source_up: bool = True  # our own address (the adverts' source) is on the advert link
    drained: bool = False
    sick: bool = False  # a health check this VIP depends on is down (or not yet up) here
    demoted_until: float | None = None  # SIGUSR2: standing aside until then
    preempt_after: float = 0.0
    since: float = 0.0
    transitions: int = 0
    master_src: IPAddress | None = None  # who we last heard advertise as master (or us)
    master_prio: tuple[int, int] | None = None  # its (advbase, advskew)
    phase_slots: int = 1  # the points of the interval masters' adverts fall on ("Phase"); node's
    _down_at: float | None = None  # BACKUP: master-down timer
    _advert_at: float | None = None  # MASTER: next advert
    _garp_at: float | None = None  # MASTER: the second (or a periodic) gratuitous ARP
    _down_why: str | None = None  # BACKUP: why _down_at is early (a farewell), for the log
    _drain_deadline: float | None = None  # MASTER while draining: stop waiting for a taker
    _demote_preempt_after: float = 0.0  # preempt_after once the demote ends
    _phase_of: tuple[int, float] | None = None  # (phase_slots, _phase) for those slots
    # (cfg, advskew, phase_slots, interval, offset): this VIP's grid for those (_next_advert).
    _grid: tuple[MachineConfig, int, int, float, float] | None = None
    _last_advert: SendAdvert | None = None  # see _advert

    # --- derived values ----------------------------------------------------------------------

    @property
    def aside(self) -> bool:
        """Standing aside: drained (until undrained), demoted (until `demoted_until`) or sick
        (until healed). A host aside ranks last, never preempts a healthy master, takes no
        farewell: a last resort only."""
        return self.drained or self.demoted_until is not None or self.sick

    @property
    def only_sick(self) -> bool:
        """Aside because of a health check alone: still ranked by the plan among sick hosts."""
        return self.sick and not self.drained and self.demoted_until is None

    @property
    def last_resort(self) -> bool:
        """Master while sick, nobody having taken the VIP: served here because nobody else can."""
        return self.state is State.MASTER and self.sick and self._drain_deadline is None

    @property
    def advskew(self) -> int:
        """The skew we stand for now: a drained host ranks last, a sick one just above it."""
        # `aside` and `only_sick` spelled out: read for every advert sent and heard.
        if self.drained or self.demoted_until is not None:
            return FAREWELL_ADVSKEW
        return SICK_ADVSKEW if self.sick else self.cfg.advskew

    @property
    def interval(self) -> float:
        return interval(self.cfg.advbase, self.advskew)

    @property
    def down_timeout(self) -> float:
        cfg = self.cfg
        d = master_down(cfg.advbase, self.advskew, cfg.dead_ratio)
        if self.sick and not self.drained and self.demoted_until is None:  # only_sick
            # After every healthy backup (whose D is below D(254)), in the plan's order.
            d += self.cfg.advskew / 256.0
        return d

    @property
    def link_up(self) -> bool:
        """Whether this machine may serve: its VIP link up, its own address on the advert link,
        and its advert link up or ignored."""
        return (
            self.vip_link_up and self.source_up and (self.advert_link_up or self.cfg.ignore_ifstate)
        )

    @property
    def deadline(self) -> float | None:
        """When `timer` must be called next (None: no timer armed)."""
        # Read per advert heard and per advert sent: no list built (bench/scale.py).
        d = self._down_at
        for t in (self._advert_at, self._garp_at, self.demoted_until):
            if t is not None and (d is None or t < d):
                d = t
        return d

    # --- events ------------------------------------------------------------------------------

    def start(self, now: float, preempt_after: float | None = None) -> list[Action]:
        """Join: INIT -> BACKUP, releasing any address a previous run left."""
        self.preempt_after = now if preempt_after is None else preempt_after
        out: list[Action] = [DelAddress()]
        out += self._to_backup(now, "start")
        self._join(now)
        return out

    def advert(
        self,
        now: float,
        src: IPAddress,
        advbase: int,
        advskew: int,
        planned_skew: int | None = None,
    ) -> list[Action]:
        """A valid advert (accepted by the node's receive path) from another host for our vhid.
        `planned_skew`: the sender's advskew in the plan (None: unknown), which ranks two sick
        hosts."""
        if self.state is State.INIT or not self.link_up:
            return []
        self.master_src, self.master_prio = src, (advbase, advskew)
        theirs = interval_key(advbase, advskew)
        ours = interval_key(self.cfg.advbase, self.advskew)
        if self.state is State.BACKUP:
            # D, the farewell threshold and the master's interval once per advert (every backup
            # hears one per VIP a second: bench/scale.py); _patience takes them as computed.
            every = interval(advbase, advskew)
            d = self.down_timeout
            above = max(d, self._slowest_master)  # _farewell_above
            # A drained backup is a last resort: it takes over on D expiry only (taking the
            # farewell too made two drained hosts hand the VIP back and forth forever).
            if every > above and not self.aside:
                # ucarp takes over at once. Every backup hears a farewell at the same instant,
                # so we wait advskew/1024 s: the best-ranked backup answers first and the others
                # just hear a new master, instead of all of them grabbing the VIP together.
                delay = self.advskew / FAREWELL_SKEW_DIVISOR
                if delay == 0:
                    return self._to_master(now, f"farewell from {src} ({advbase}/{advskew})")
                due = now + delay
                if self._down_at is None or due < self._down_at:
                    self._down_at = due
                    self._down_why = f"farewell from {src} ({advbase}/{advskew})"
                return []
            if theirs > ours and self._may_preempt(now):
                return self._to_master(now, f"preempting {src} ({advbase}/{advskew})")
            if self._sick_outranks(advbase, advskew, planned_skew) and self._may_preempt(
                now, sick=True
            ):
                return self._to_master(
                    now, f"preempting {src} ({advbase}/{advskew}): both sick, we rank above"
                )
            self._down_at = now + self._patience(every, d, above)
            self._down_why = None
            if (
                theirs > ours
                and self.cfg.preempt
                and not self.aside
                and self._down_at > (self.preempt_after)
            ):
                # A less preferred master and the hold-down not over yet: preempt when it ends,
                # not at the master's next advert (see "Hold-down").
                self._down_at = self.preempt_after
                self._down_why = f"preempting {src} ({advbase}/{advskew}) after the hold-down"
            return []
        # MASTER
        yields = theirs < ours or (theirs == ours and _tiebreak(src) < _tiebreak(self.cfg.src))
        if (
            self.only_sick
            and (advbase, advskew) == (self.cfg.advbase, SICK_ADVSKEW)
            and planned_skew is not None
        ):
            # Two sick masters: the plan decides (see "Sick"), not the addresses.
            yields = planned_skew < self.cfg.advskew
        if self.aside and self._drain_deadline is not None:
            # Draining: anyone who answers as master takes over (we advertise the farewell). Another
            # draining master is no taker: between two farewells the address decides, so exactly
            # one of them keeps the VIP.
            if (advbase, advskew) == (FAREWELL_ADVBASE, FAREWELL_ADVSKEW):
                yields = _tiebreak(src) < _tiebreak(self.cfg.src)
            else:
                yields = True
        if yields:
            # ucarp's one last advert. A drained host sends none: its skew of 255 would make every
            # backup with preempt jump at the VIP the new master has just taken.
            out: list[Action] = []
            if not self.aside:
                out.append(SendAdvert(self.cfg.advbase, self.advskew))
            out += self._to_backup(now, f"{src} is master with {advbase}/{advskew}")
            self._down_at = now + self._patience(interval(advbase, advskew))
            return out
        self.master_src, self.master_prio = self.cfg.src, (self.cfg.advbase, self.advskew)
        return [SendGarp(), self._advert()]

    def timer(self, now: float) -> list[Action]:
        """Act on every deadline that has passed."""
        out: list[Action] = []
        if self.demoted_until is not None and now >= self.demoted_until:
            self._end_demote(now)
        if self._down_at is not None and now >= self._down_at:
            why = self._down_why or f"no advert for {self.down_timeout:.3f} s"
            return self._to_master(now, why)
        if self._advert_at is not None and now >= self._advert_at:
            if self._drain_deadline is not None and now >= self._drain_deadline:
                # Nobody took over: keep serving, and keep offering it with every advert.
                self._drain_deadline = None
            out.append(self._advert())
            self._advert_at = self._next_advert(now)
        if self._garp_at is not None and now >= self._garp_at:
            out.append(SendGarp())
            refresh = self.cfg.garp_refresh
            self._garp_at = now + refresh if refresh > 0 else None
        return out

    def periodic_advert(self, now: float) -> SendAdvert | None:
        """`timer` for its most frequent case, a master whose one passed deadline is its next
        advert: that advert, the next one scheduled. None, changing nothing, in any other case
        (a drain, a demote's end, a GARP due, a backup): call `timer`. Every master runs it once
        an interval per VIP, without `timer`'s list and checks (bench/scale.py, round four)."""
        at = self._advert_at
        if at is None or at > now or self._drain_deadline is not None:
            return None
        garp, demoted = self._garp_at, self.demoted_until
        if (garp is not None and garp <= now) or (demoted is not None and demoted <= now):
            return None
        if self._down_at is not None:  # never armed beside an advert: but then timer decides
            return None
        advert = self._advert()
        self._advert_at = self._next_advert(now)
        return advert

    def link(
        self, up: bool, now: float, preempt_after: float | None = None, vip: bool = False
    ) -> list[Action]:
        """The advert link (or with `vip`, the VIP link) lost or regained carrier."""
        could = self.link_up
        if vip:
            self.vip_link_up = up
        else:
            self.advert_link_up = up
        return self._can_serve_changed(could, now, preempt_after, "VIP link" if vip else "link")

    def source(self, up: bool, now: float, preempt_after: float | None = None) -> list[Action]:
        """Our own address left the advert link (or came back): no advert can leave without it."""
        could = self.link_up
        self.source_up = up
        return self._can_serve_changed(could, now, preempt_after, "own address")

    def _can_serve_changed(
        self, could: bool, now: float, preempt_after: float | None, which: str
    ) -> list[Action]:
        if self.link_up == could or self.state is State.INIT:
            return []
        if not self.link_up:
            out: list[Action] = []
            if self.state is State.MASTER and self.advert_link_up and self.source_up:
                # We can still tell the backups: the farewell makes them take over now, not in D.
                out.append(SendAdvert(FAREWELL_ADVBASE, FAREWELL_ADVSKEW))
            out += self._to_backup(now, f"{which} down")
            self._down_at = None
            return out
        self.preempt_after = now if preempt_after is None else preempt_after
        out = self._to_backup(now, f"{which} up")
        self._join(now)
        return out

    def drain(self, now: float) -> list[Action]:
        """Hand the VIP to the next host, make-before-break, and stay out of the way."""
        if self.drained:
            return []
        was_aside = self.aside
        self.drained = True
        if was_aside:
            return []  # demoted: already standing aside (and it stays so when the demote ends)
        return self._step_aside(now)

    def demote(self, now: float, until: float, preempt_after: float | None = None) -> list[Action]:
        """SIGUSR2, as ucarp: hand the VIP over (make-before-break, as a drain does), stand aside
        until `until`, then take part normally again, preempting from `preempt_after` on."""
        if self.state is State.INIT:
            return []
        was_aside = self.aside
        self.demoted_until = max(until, self.demoted_until or until)
        self._demote_preempt_after = until if preempt_after is None else preempt_after
        if was_aside:
            return []
        return self._step_aside(now)

    def _end_demote(self, now: float) -> None:
        self.demoted_until = None
        # A drained VIP stays drained: the demote ends, the drain does not. A sick one stays
        # aside until its check is up.
        if not self.drained and not self.sick:
            self._take_part_again(now, self._demote_preempt_after)
        elif self.only_sick and self.state is State.BACKUP and self._down_at is not None:
            self._down_at = now + self.down_timeout

    def _step_aside(self, now: float) -> list[Action]:
        """Start standing aside: a master offers the VIP with farewell adverts until a taker
        answers; a backup waits as if its advskew were 255."""
        if self.state is not State.MASTER:
            if self.state is State.BACKUP and self._down_at is not None:
                # Wait as if our advskew were 255 from now on (undrain restarts D the same way).
                self._down_at = now + self.down_timeout
            return []
        self._drain_deadline = now + DRAIN_PATIENCE * interval(self.cfg.advbase, self.cfg.advskew)
        self._advert_at = now + interval(self.cfg.advbase, self.cfg.advskew)
        return [self._advert()]

    def undrain(self, now: float, preempt_after: float | None = None) -> list[Action]:
        """Take part normally again; preempt (after `preempt_after`) to take the VIP back."""
        if not self.drained:
            return []
        self.drained = False
        if self.demoted_until is not None:
            return []  # still demoted: it takes part again when the demote ends
        if self.sick:
            # Still sick: aside until its check is up, but ranked by the plan again.
            if self.state is State.BACKUP and self._down_at is not None:
                self._down_at = now + self.down_timeout
            return []
        self._take_part_again(now, now if preempt_after is None else preempt_after)
        return []

    def sicken(self, now: float) -> list[Action]:
        """A health check this VIP depends on went down here: hand the VIP over make-before-break
        and stand aside as a last resort (see "Sick")."""
        if self.sick:
            return []
        was_aside = self.aside
        self.sick = True
        if self.state is State.INIT:
            return []
        if was_aside:
            return []  # drained or demoted: already standing aside
        return self._step_aside(now)

    def heal(self, now: float, preempt_after: float | None = None) -> list[Action]:
        """Every health check of this VIP is up here again: take part normally, preempting (to
        take the VIP back) from `preempt_after` on, unless drained or demoted."""
        if not self.sick:
            return []
        self.sick = False
        if self.state is State.INIT or self.drained or self.demoted_until is not None:
            return []
        self._take_part_again(now, now if preempt_after is None else preempt_after)
        return []

    def _take_part_again(self, now: float, preempt_after: float) -> None:
        """The end of a drain or a demote: our own skew again, preempting from `preempt_after`."""
        self._drain_deadline = None
        self.preempt_after = preempt_after
        if self.state is State.BACKUP and self._down_at is not None:
            self._join(now)
        if self.state is State.MASTER and self._advert_at is not None:
            # Back to our own pace at once: a drained master advertised every advbase + 255/256,
            # longer than our backups' timeout when advbase is 0.
            self._advert_at = min(self._advert_at, now + self.interval)

    def address_gone(self, now: float) -> list[Action]:
        """Our address vanished from the interface while we are master (someone ran `ip addr
        del`, or the kernel dropped it with the subnet's primary): put it back and announce it."""
        if self.state is not State.MASTER:
            return []
        return [AddAddress(), SendGarp()]

    def address_present(self, now: float, planned_prefix: bool = True) -> list[Action]:
        """Our address is on the interface (with the planned prefix, or another one). Only a
        master may hold it, and only with the planned prefix: on a backup (added by hand, or
        left behind) it makes two hosts answer ARP; a copy with another prefix on a master is
        not the one it releases, and would stay behind after a hand-over. Either is removed
        (the shell removes the copy it found)."""
        if self.state is State.BACKUP:
            return [DelAddress()]
        if self.state is State.MASTER and not planned_prefix:
            return [DelAddress()]
        return []

    def reconfigure(self, cfg: MachineConfig, now: float) -> list[Action]:
        """A reload changed this VIP's priorities (same VIP and vhid). No transition here: a
        master advertises its new skew at once and a better backup preempts it by the usual rules;
        a backup's timeout follows its new skew."""
        if cfg == self.cfg:
            return []
        if (cfg.vip, cfg.vhid) != (self.cfg.vip, self.cfg.vhid):
            raise ValueError("reconfigure keeps the VIP and vhid; stop and start a new machine")
        self.cfg = cfg
        if self.state is State.BACKUP and self._down_at is not None:
            self._down_at = now + self.down_timeout
        if self.state is State.MASTER:
            self._advert_at = now + self.interval
            return [self._advert()]
        return []

    def stop(self, now: float) -> list[Action]:
        """Leave: a master says farewell so backups take over at once; release the address."""
        out: list[Action] = []
        if self.state is State.MASTER:
            out.append(SendAdvert(FAREWELL_ADVBASE, FAREWELL_ADVSKEW))
        if self.state is not State.INIT:
            out.append(DelAddress())
            out.append(Transition(self.state, State.INIT, "stopping"))
            self.transitions += 1
        self.state = State.INIT
        self._down_at = self._advert_at = self._garp_at = self._drain_deadline = None
        self.demoted_until = None
        return out

    # --- internals ---------------------------------------------------------------------------

    @property
    def _phase(self) -> float:
        """Where in the interval this VIP's adverts fall: one of `phase_slots` points of [0, 1),
        hashed from its address, so the same on every start and reload (see "Phase")."""
        slots = self.phase_slots
        known = self._phase_of
        if known is None or known[0] != slots:  # made once per slot count: read per advert
            phase = ((int(self.cfg.vip) * 2654435761) % 2**32 * slots >> 32) / slots
            known = self._phase_of = (slots, phase)
        return known[1]

    def _next_advert(self, now: float) -> float:
        """The first point after `now` of this VIP's grid: its phase of the interval, every
        interval, on the shell's clock (see "Phase")."""
        # The interval and offset kept while the config (immutable), skew and slots stay: read
        # per advert sent, they took four calls (bench/scale.py).
        cfg, skew, slots = self.cfg, self.advskew, self.phase_slots
        grid = self._grid
        if grid is None or grid[0] is not cfg or grid[1] != skew or grid[2] != slots:
            every = interval(cfg.advbase, skew)
            grid = self._grid = (cfg, skew, slots, every, self._phase * every)
        every, offset = grid[3], grid[4]
        due = (math.floor((now - offset) / every) + 1) * every + offset
        return due if due > now else due + every

    @property
    def _slowest_master(self) -> float:
        """W: the longest interval a live master of this vhid may advertise (a drained one)."""
        return interval(self.cfg.advbase, FAREWELL_ADVSKEW)

    @property
    def _farewell_above(self) -> float:
        """An advert with a longer interval than this is a farewell, not a slower live master."""
        return max(self.down_timeout, self._slowest_master)

    def _patience(
        self, master_interval: float, d: float | None = None, above: float | None = None
    ) -> float:
        """How long a backup waits for the next advert of a master advertising every
        `master_interval` s: D, unless that master is no faster than D; then its interval plus
        our own skew (see "Patience" above). A farewell is no live master: D. `d` and `above`:
        down_timeout and _farewell_above, if the caller has them already."""
        if d is None:
            d = self.down_timeout
        if above is None:
            above = self._farewell_above
        if master_interval < d or master_interval > above:
            return d
        return master_interval + self.advskew / 256.0

    def _join(self, now: float) -> None:
        """A backup that has heard nobody yet waits for the slowest live master first."""
        if self.state is State.BACKUP and self.link_up:
            self._down_at = now + self._patience(self._slowest_master)
            self._down_why = None

    def _may_preempt(self, now: float, sick: bool = False) -> bool:
        """Whether we may preempt now; with `sick`, a sick master ranked below us."""
        if sick:
            return self.cfg.preempt and self.only_sick and now >= self.preempt_after
        return self.cfg.preempt and not self.aside and now >= self.preempt_after

    def _sick_outranks(self, advbase: int, advskew: int, planned_skew: int | None) -> bool:
        """We are sick, and so is the master we hear, whom the plan ranks below us: between two
        last resorts the plan decides."""
        return (
            self.only_sick
            and planned_skew is not None
            and (advbase, advskew) == (self.cfg.advbase, SICK_ADVSKEW)
            and planned_skew > self.cfg.advskew
        )

    def _advert(self) -> SendAdvert:
        if self._drain_deadline is not None and self.aside and self.state is State.MASTER:
            return SendAdvert(FAREWELL_ADVBASE, FAREWELL_ADVSKEW)
        # The same values as last time, the same (immutable) action: one a second per VIP.
        last, skew = self._last_advert, self.advskew
        if last is None or last.advskew != skew or last.advbase != self.cfg.advbase:
            last = self._last_advert = SendAdvert(self.cfg.advbase, skew)
        return last

    def _to_backup(self, now: float, why: str) -> list[Action]:
        old = self.state
        self.state = State.BACKUP
        self._advert_at = self._garp_at = self._drain_deadline = None
        self._down_at = now + self.down_timeout if self.link_up else None
        self._down_why = None
        if old is State.MASTER and self.master_src == self.cfg.src:
            self.master_src = self.master_prio = None
        if old is State.BACKUP:
            return []
        self.since = now
        self.transitions += 1
        out: list[Action] = [Transition(old, State.BACKUP, why)]
        if old is State.MASTER:
            out.append(DelAddress())
        return out

    def _to_master(self, now: float, why: str) -> list[Action]:
        old = self.state
        self.state = State.MASTER
        self.since = now
        self.transitions += 1
        self.master_src, self.master_prio = self.cfg.src, (self.cfg.advbase, self.advskew)
        self._down_at = None
        # The first advert goes now; the next one within an interval, at this VIP's own phase
        # (see "Phase"), then every interval.
        self._advert_at = self._next_advert(now)
        self._garp_at = now + 2 * self.interval
        self._drain_deadline = None
        if self.aside and not self.only_sick:
            # A drained host that had to take over (nobody else alive) offers the VIP at once.
            # A sick one does not: every healthy backup timed out before it (it waits longer),
            # and a sick one ranked below it would take the offer back and forth.
            self._drain_deadline = now + DRAIN_PATIENCE * interval(
                self.cfg.advbase, self.cfg.advskew
            )
        return [
            Transition(old, State.MASTER, why),
            AddAddress(),
            SendGarp(),
            self._advert(),
        ]
