"""The CARP state machine, one per (group, vhid): every rule about CARP transitions lives here.

Theory of operation
-------------------
A machine is sans-I/O: it owns no socket and reads no clock. The shell feeds it events with the
current monotonic time `now` (`start`, `advert`, `timer`, `link`, `drain`, `undrain`, `stop`,
`address_gone`, `address_present`) and
performs the actions it returns, in order (send an advert, add or delete the address, send a
gratuitous ARP). After every event the shell reads `deadline` and calls `timer(now)` no later than
that. Transitions come back as `Transition` actions so the shell can log them; it decides nothing.

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
- Stray address: the VIP present on our interface while we are BACKUP (added by hand, left
  behind) makes two hosts answer ARP: `address_present` removes it.
- Hold-down: after start or link up, preemption waits until `preempt_after` (a hold-down plus a
  per-VIP stagger chosen by the shell), so a flapping host does not drag addresses back and forth.
  A master-down timeout still takes over at once: an unserved VIP is never left waiting.
- Drain: a draining master advertises the farewell values until another host answers as master,
  then yields (make-before-break: the new master holds the address before the old one lets go). A
  drained backup never preempts, does not take a farewell either (it takes over on D expiry only)
  and waits as if its advskew were 255: a last resort only. Two draining masters hearing each
  other's farewell settle by the address tie-break, so exactly one keeps the VIP.
- Farewell: ucarp takes over at once on a farewell, so every backup grabs the VIP together. A
  native backup waits advskew/1024 s instead (62 ms for a first backup): the best-ranked one
  answers first and the others hear a new master in time. An owner (advskew 0) takes over at once.
- Stop: a master sends the farewell advert and releases the address.
- An address removed behind our back while we are master is added back (and announced).
- What reaches a machine is an advert the node has accepted: digest verified, sent by a host of
  the cluster file, and from an iprotate peer with its sender and priority authenticated and its
  counter fresh (carp.native_auth). The counter of what a machine sends is the node's business.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from iprotate.plan.timing import (
    FAREWELL_ADVBASE,
    FAREWELL_ADVSKEW,
    interval,
    interval_key,
    master_down,
)

# After this many intervals without an answer a draining master gives up waiting for a taker and
# keeps the address (nobody else is alive to hold it); it goes on offering it with every advert.
DRAIN_PATIENCE = 3
# A native backup takes over advskew/1024 s after a farewell (rank 1 of the usual ladder: 62 ms).
FAREWELL_SKEW_DIVISOR = 1024.0


class State(enum.Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"


# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendAdvert:
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
    pass


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    why: str


Action = SendAdvert | AddAddress | DelAddress | SendGarp | Transition


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineConfig:
    vip: IPv4Address
    vhid: int
    src: IPv4Address  # our own address: the tie-break between equal intervals uses it
    advbase: int
    advskew: int
    dead_ratio: int = 3
    preempt: bool = True
    garp_refresh: float = 0.0  # seconds between gratuitous ARPs while master; 0: only ucarp's two
    ignore_ifstate: bool = False  # ucarp's -S: serve even while the advert link has no carrier


def _tiebreak(addr: IPv4Address) -> int:
    """ucarp compares the raw network-order bytes as a native (x86: little-endian) integer."""
    return int.from_bytes(addr.packed, "little")


# --- the machine ---------------------------------------------------------------------------------


@dataclass
class CarpMachine:
    """One VIP's CARP state. See the module docstring for the rules."""

    cfg: MachineConfig
    state: State = State.INIT
    advert_link_up: bool = True
    vip_link_up: bool = True
    drained: bool = False
    preempt_after: float = 0.0
    since: float = 0.0
    transitions: int = 0
    master_src: IPv4Address | None = None  # who we last heard advertise as master (or us)
    master_prio: tuple[int, int] | None = None  # its (advbase, advskew)
    _down_at: float | None = None  # BACKUP: master-down timer
    _advert_at: float | None = None  # MASTER: next advert
    _garp_at: float | None = None  # MASTER: the second (or a periodic) gratuitous ARP
    _down_why: str | None = None  # BACKUP: why _down_at is early (a farewell), for the log
    _drain_deadline: float | None = None  # MASTER while draining: stop waiting for a taker

    # --- derived values ----------------------------------------------------------------------

    @property
    def advskew(self) -> int:
        """The skew we stand for now: a drained host ranks last."""
        return FAREWELL_ADVSKEW if self.drained else self.cfg.advskew

    @property
    def interval(self) -> float:
        return interval(self.cfg.advbase, self.advskew)

    @property
    def down_timeout(self) -> float:
        return master_down(self.cfg.advbase, self.advskew, self.cfg.dead_ratio)

    @property
    def link_up(self) -> bool:
        """Whether this machine may serve: its VIP link up, its advert link up or ignored."""
        return self.vip_link_up and (self.advert_link_up or self.cfg.ignore_ifstate)

    @property
    def deadline(self) -> float | None:
        """When `timer` must be called next (None: no timer armed)."""
        times = [t for t in (self._down_at, self._advert_at, self._garp_at) if t is not None]
        return min(times) if times else None

    # --- events ------------------------------------------------------------------------------

    def start(self, now: float, preempt_after: float | None = None) -> list[Action]:
        """Join: INIT -> BACKUP, releasing any address a previous run left."""
        self.preempt_after = now if preempt_after is None else preempt_after
        out: list[Action] = [DelAddress()]
        out += self._to_backup(now, "start")
        return out

    def advert(self, now: float, src: IPv4Address, advbase: int, advskew: int) -> list[Action]:
        """A valid advert (accepted by the node's receive path) from another host for our vhid."""
        if self.state is State.INIT or not self.link_up:
            return []
        self.master_src, self.master_prio = src, (advbase, advskew)
        theirs = interval_key(advbase, advskew)
        ours = interval_key(self.cfg.advbase, self.advskew)
        if self.state is State.BACKUP:
            # A drained backup is a last resort: it takes over on D expiry only (taking the
            # farewell too made two drained hosts hand the VIP back and forth forever).
            if interval(advbase, advskew) > self.down_timeout and not self.drained:
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
            self._down_at = now + self.down_timeout
            self._down_why = None
            return []
        # MASTER
        yields = theirs < ours or (theirs == ours and _tiebreak(src) < _tiebreak(self.cfg.src))
        if self.drained and self._drain_deadline is not None:
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
            if not self.drained:
                out.append(SendAdvert(self.cfg.advbase, self.advskew))
            out += self._to_backup(now, f"{src} is master with {advbase}/{advskew}")
            return out
        self.master_src, self.master_prio = self.cfg.src, (self.cfg.advbase, self.advskew)
        return [SendGarp(), self._advert()]

    def timer(self, now: float) -> list[Action]:
        """Act on every deadline that has passed."""
        out: list[Action] = []
        if self._down_at is not None and now >= self._down_at:
            why = self._down_why or f"no advert for {self.down_timeout:.3f} s"
            return self._to_master(now, why)
        if self._advert_at is not None and now >= self._advert_at:
            if self._drain_deadline is not None and now >= self._drain_deadline:
                # Nobody took over: keep serving, and keep offering it with every advert.
                self._drain_deadline = None
            out.append(self._advert())
            self._advert_at = now + self.interval
        if self._garp_at is not None and now >= self._garp_at:
            out.append(SendGarp())
            refresh = self.cfg.garp_refresh
            self._garp_at = now + refresh if refresh > 0 else None
        return out

    def link(
        self, up: bool, now: float, preempt_after: float | None = None, vip: bool = False
    ) -> list[Action]:
        """The advert link (or with `vip`, the VIP link) lost or regained carrier."""
        could = self.link_up
        if vip:
            self.vip_link_up = up
        else:
            self.advert_link_up = up
        which = "VIP link" if vip else "link"
        if self.link_up == could or self.state is State.INIT:
            return []
        if not self.link_up:
            out: list[Action] = []
            if self.state is State.MASTER and self.advert_link_up:
                # We can still tell the backups: the farewell makes them take over now, not in D.
                out.append(SendAdvert(FAREWELL_ADVBASE, FAREWELL_ADVSKEW))
            out += self._to_backup(now, f"{which} down")
            self._down_at = None
            return out
        self.preempt_after = now if preempt_after is None else preempt_after
        return self._to_backup(now, f"{which} up")

    def drain(self, now: float) -> list[Action]:
        """Hand the VIP to the next host, make-before-break, and stay out of the way."""
        if self.drained:
            return []
        self.drained = True
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
        self._drain_deadline = None
        self.preempt_after = now if preempt_after is None else preempt_after
        if self.state is State.BACKUP and self._down_at is not None:
            self._down_at = now + self.down_timeout
        if self.state is State.MASTER and self._advert_at is not None:
            # Back to our own pace at once: a drained master advertised every advbase + 255/256,
            # longer than our backups' timeout when advbase is 0.
            self._advert_at = min(self._advert_at, now + self.interval)
        return []

    def address_gone(self, now: float) -> list[Action]:
        """Our address vanished from the interface while we are master (someone ran `ip addr
        del`, or the kernel dropped it with the subnet's primary): put it back and announce it."""
        if self.state is not State.MASTER:
            return []
        return [AddAddress(), SendGarp()]

    def address_present(self, now: float) -> list[Action]:
        """Our address is on the interface. Only a master may hold it: on a backup (added by
        hand, or left behind) it makes two hosts answer ARP, so it is removed."""
        if self.state is State.BACKUP:
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
        return out

    # --- internals ---------------------------------------------------------------------------

    def _may_preempt(self, now: float) -> bool:
        return self.cfg.preempt and not self.drained and now >= self.preempt_after

    def _advert(self) -> SendAdvert:
        if self.drained and self.state is State.MASTER and self._drain_deadline is not None:
            return SendAdvert(FAREWELL_ADVBASE, FAREWELL_ADVSKEW)
        return SendAdvert(self.cfg.advbase, self.advskew)

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
        self._advert_at = now + self.interval
        self._garp_at = now + 2 * self.interval
        self._drain_deadline = None
        if self.drained:
            # A drained host that had to take over (nobody else alive) offers the VIP at once.
            self._drain_deadline = now + DRAIN_PATIENCE * interval(
                self.cfg.advbase, self.cfg.advskew
            )
        return [
            Transition(old, State.MASTER, why),
            AddAddress(),
            SendGarp(),
            self._advert(),
        ]
