"""Chaos: a seeded random sequence of failures against a lab, with invariants checked all along.

`run_chaos(ChaosConfig(seed=...), workdir)` builds a lab (4 hosts, 10 VIPs, advbase 1 by default),
plays a schedule drawn from `random.Random(seed)` and watches the cluster every ~50 ms the whole
time. The same seed gives the same schedule (`make_schedule` is pure), so a failure is replayed
with `IPROTATE_CHAOS_SEED=<seed> pytest tests/test_chaos.py` or `python bench/chaos.py --seed
<seed>`. The CI test (tests/test_chaos.py) and the long benchmark (bench/chaos.py) both drive it.

The hosts differ, so that one run meets every fault (ChaosConfig.fault_kinds says which host can
have which): by default the first native host (alpha) adds its VIPs on a NIC of its own (eth2, on
the same bridge, `Lab(vip_links=...)`), the next one (bravo) runs with `--ignore-ifstate` (its
VIPs on its advert NIC), the others are plain; `--legacy` makes the last hosts ucarp ones.

Faults, each on a host that is fully up, each followed by its recovery after a drawn hold time:

- kill: the engine SIGKILLed and the cable pulled (its addresses stay behind, harmless with the
  cable out). Recovery `restore`, in the order a rebooted machine comes back: the engine is
  started with the cable still out, and the cable goes back in once it has started (and removed
  the leftovers); `Lab.restore` plugs the cable first, which shows the leftovers to the segment
  for as long as the engine takes to start.
- stop: a clean stop (SIGTERM). Recovery `start`.
- flap: the (advert) cable pulled with the engine running, short (under D) or long. Recovery
  `link_up`. On an ignore-ifstate host the engine keeps its VIPs (and, hearing nobody, takes
  every other one after D, as in a cut); its VIPs live on that NIC, so no client sees them.
- cut: the host's ports taken off the bridge, carrier up (a partition: the host hears nobody and
  takes every VIP for itself). Recovery `heal`.
- vip_flap (hosts with a VIP NIC): the VIP NIC's cable pulled, adverts still flowing. The engine
  must hand its VIPs over (a farewell: the next host takes over at once, at worst within D) and
  release them; recovery `vip_up`, after which it takes them back after its hold-down.
- recreate (native, not ignore-ifstate): the advert NIC deleted (`Segment.delete_interface`), the
  host off the segment as in a flap; recovery `create`: made again with the same name, MAC,
  address, route and bridge port, but a new ifindex. The engine must rebuild what held the old
  index and rejoin.
- storm (native, not ignore-ifstate): `ip -batch` adds and deletes STORM_ADDRESSES on a spare
  veth in the host's namespace, STORM_ROUNDS times (20,000 netlink address events in about half
  a second), the engine frozen (SIGSTOP) meanwhile so that its netlink socket overflows for
  certain (as on a busy machine), for at most STORM_FREEZE_MAX = 1 s: its adverts are that late,
  and a backup takes over only after D_b - T_m >= 3 - 2 s without one (advbase 1, dead ratio
  3), so the freeze alone changes nothing. Nothing may change (invariant 7).
  Recovery `calm` (the batch has ended), then at once a flap of the same host, longer than
  `release_bound`: the engine must still notice carrier loss (invariant 4), i.e. the storm did
  not blind its link watcher.
- twin (native): a second `iprotate run` for the host, with the same arguments. It must be
  refused: exit non-zero within TWIN_TIMEOUT with one line of output, and change nothing
  (invariant 7). Recovery `twin_gone` once it has exited (+ TWIN_GRACE).
- demote (native): SIGUSR2, which makes the engine stand aside for DEMOTE_SECONDS (ucarp's
  "drop to BACKUP, block 3 s, carry on"; machine.py, "Demote"): a master hands its VIPs over
  make-before-break (farewell adverts until a taker answers, so no gap), a backup restarts its
  timer at D as if its advskew were 255 (b*r + 255/256, longer than the demote) and again, at D,
  when the demote ends. So a demoted host takes no VIP over before the demote's end + D: for
  invariant 1 it leaves at the signal (as a departure) and arrives at `rejoin`, DEMOTE_SECONDS
  later. DEMOTE_CHECK = 2.5 s after the signal it must hold no VIP that another participant,
  eligible since at least 2 s before, could have taken (invariant 4); after `rejoin` it takes
  its VIPs back after its hold-down.

Storms and twins happen on a settled cluster only: when one is drawn every fault still on ends,
a quiet check follows, and nothing else happens until the storm or twin has ended, so anything
that changes meanwhile is theirs.

At most `max_down` hosts (default N - 1) are not fully up at once, so one host always is. Now and
then the schedule holds still (`quiet`): transient faults end, killed and stopped hosts stay down,
and the cluster must settle. The run ends with two quiet checks: with the hosts that are still
killed or stopped left down, then with every host back.

What is watched: the client's ARP probe (`Lab.start_probe`, every `probe_period`: which hosts
answer for each VIP), the ground truth (`Lab.holders`, every `truth_period`: which hosts have each
address), the engines' processes and their logs.

Invariants and their bounds, all from the protocol (CARP.md, "Timing"; advbase = b, dead ratio r,
a host h's advskew s_h). D_h = b*r + s_h/256 is h's master-down timeout (for a native host at
least b + 255/256 + s_h/256, the slowest live master's interval + its skew: machine.py,
"Patience"; the same for b >= 1, r >= 2), T_h = b + s_h/256 its advert interval. A host is
*eligible* while its engine runs (and has started), its cables are in, it is not cut off and
not demoted (a storm or a twin does not change it); `a_h` is when it last became so. ucarp hosts
get `ucarp_lag` = 1 s + b more everywhere (pcap hands it packets up to 1 s late and it checks
its timer only when it wakes), and become eligible 10 s after their link comes back (ucarp
sleeps 10 s while its link is down).

1. unserved: a VIP the client gets no answer for since g0 must be answered again by
   min over eligible participants h of (max(g0, a_h, L_h) + D_h) + margin, L_h the last time
   another participant left (killed, stopped, a cable out, cut off, NIC deleted, demoted). A
   backup's timer runs from the last advert it heard; every advert comes from a master the
   client could see, or from one that has left since (a host that takes a VIP over and is cut
   off milliseconds later restarts the other backups' timers with its first advert), so the best
   eligible backup takes over within D_h of the failure, of its own arrival, or of the last
   departure. margin = 0.5 s of scheduling on a loaded machine + 2 probe periods (when a gap
   starts and ends is known to a period each). With no eligible participant the VIP may stay
   unserved.
2. two holders: two hosts answering for one VIP (client view), or two reachable hosts having it
   configured (ground truth; reachable: the NIC its VIPs live on is plugged in and on the
   bridge, so a host with a VIP NIC whose advert cable is out still counts), for no longer than
   one interval, max T_h over the hosts involved, + 0.5 s + 2 observation periods. Two masters
   that hear each other settle at the first advert of either (the better one keeps it, the other
   yields at once); the usual case is a healed partition, whose host became master of everything
   while cut off, or an ignore-ifstate host whose cable comes back. Make-before-break handovers
   (a returning host preempting, a demoted one handing over) overlap for milliseconds.
3. quiet: `settle` after the last event (or after the last host became eligible, whichever is
   later) every VIP is held, in the ground truth and in the client's view, by exactly
   `VipPlan.holder(down)`, down = the hosts not fully up. settle = max(D_max, hold_down +
   stagger * (k - 1) + T_max) + 1 s, k the most VIPs a host preempts (its stagger ladder): a failed
   holder is replaced within D; a returning host preempts its last VIP at hold_down + (k-1)*stagger
   at the next advert of the current master.
4. no address on a stopped host: after a clean stop (SIGTERM) exits (status 0 for iprotate), no
   VIP is left on it, and none appears while it is stopped. Likewise an engine whose advert
   cable is out (unless it runs with --ignore-ifstate), whose advert NIC is deleted, or whose VIP
   NIC's cable is out releases its VIPs within `release_bound` (native hosts: DESIGN "interface
   down -> backup"); a demoted engine, DEMOTE_CHECK = 2.5 s after SIGUSR2, holds none that had
   a taker (another eligible participant) for at least 2 s of it.
   A killed host keeps its addresses until restarted (nothing runs to remove them); not checked.
5. the daemons never crash: every engine we did not kill or stop is still running, starts within
   `ready_timeout`, stops within 10 s, and no log has a "Traceback". ERROR lines are collected.
6. the engine's word matches the kernel (native hosts, asked on the control socket every
   `state_period`): a VIP whose machine is MASTER is configured on the host, one that is BACKUP
   is not, on two reads in a row (a transition between the two reads of one sample is no
   mismatch). It names the culprit when invariant 1 or 3 fails without a visible cause.
7. undisturbed: from a storm's or a twin's start until it has ended, no native engine logs a
   transition (`VIP vhid N: OLD -> NEW: why`) or an address repair ("behind our back", "left by
   an earlier run", "present while BACKUP"). The cluster was settled (a quiet check came just
   before) and nothing else happens meanwhile, so the protocol has no reason to change anything:
   any change is the storm's (an engine blinded or slowed down) or the twin's (a second engine
   on the host's addresses).
"""

from __future__ import annotations

import enum
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iprotate.engine.control import ControlError, request
from iprotate.lab.lab import CLIENT, FIRST_VIP, NAMES, VIP_IFACE, Lab
from iprotate.lab.netns import Segment
from iprotate.lab.netns import ip as ip_cmd
from iprotate.plan.timing import interval, master_down

ATTACKER = str(Path(__file__).with_name("attacker.py"))

FAULTS = ("kill", "stop", "flap", "cut", "vip_flap", "recreate", "storm", "twin", "demote")
RECOVERY = {
    "kill": "restore",
    "stop": "start",
    "flap": "link_up",
    "cut": "heal",
    "vip_flap": "vip_up",
    "recreate": "create",
    "storm": "calm",
    "twin": "twin_gone",
    "demote": "rejoin",
}
BASE_FAULTS = ("kill", "stop", "flap", "cut")  # any host, ucarp ones included
TRANSIENT = ("flap", "cut", "vip_flap", "recreate", "storm", "twin", "demote")  # end before quiet
EXCLUSIVE = ("storm", "twin")  # on a settled cluster, alone: the engines must see no change
WEIGHTS = {
    "kill": 3, "stop": 2, "flap": 2, "cut": 3, "vip_flap": 5, "recreate": 2, "storm": 1,
    "twin": 1, "demote": 2,
}  # fmt: skip
DEMOTE_SECONDS = 3.0  # SIGUSR2: backup for this long (as ucarp), then back
DEMOTE_CHECK = 2.5  # when, after SIGUSR2, a demoted host must hold no VIP a taker could have
STORM_FLAP = (1.5, 3.0)  # the flap right after a storm: longer than release_bound, so checked
VIP_PREFIX = "203.0.113."
UCARP_LINK_SLEEP = 10.0  # ucarp polls a link that is not RUNNING every 10 s (CARP.md)
STOP_TIMEOUT = 10.0
TWIN_TIMEOUT = 10.0  # a second daemon for a host must be refused (and exit) within this
TWIN_GRACE = 0.5  # after the twin exited, what it might have broken shows within this
STORM_ROUNDS = 100  # a storm: this many rounds of adding then deleting STORM_ADDRESSES
STORM_ADDRESSES = [f"203.0.113.{i}/32" for i in range(150, 250)]  # above the lab's VIPs
STORM_LINK = "storm0"  # a veth pair (storm0, storm1) in the host's namespace, on no bridge
STORM_FREEZE_MAX = 1.0  # the engine is frozen while the storm lasts, at most this long
CAUSE_TOLERANCE = 0.05  # an event begun this soon after a probe round began can explain it
POST_DEADLINE = 10.0  # how long a quiet check keeps measuring after its bound was missed
STEP_PATIENCE = 60.0  # a step whose host never gets ready for it is skipped (and reported)
DISTURBANCE = re.compile(
    r" vhid \d+: [A-Z]+ -> [A-Z]+: |behind our back|left by an earlier run|present while"
)  # an engine's log line saying something changed


# --- configuration and schedule ----------------------------------------------------------------


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run. `seconds` is the planned length of the fault phase (quiet checks, start-up
    and the final checks come on top)."""

    seed: int
    seconds: float = 40.0
    hosts: int = 4
    vips: int = 10
    legacy: int = 0  # the last `legacy` hosts run Debian's ucarp
    vip_links: int = 1  # the first `vip_links` native hosts add their VIPs on a NIC of their own
    ignore_ifstate: int = 1  # the next native hosts run with --ignore-ifstate
    advbase: int = 1
    dead_ratio: int = 3
    hold_down: float = 1.0
    stagger: float = 0.1
    max_down: int | None = None  # hosts not fully up at once; None: hosts - 1
    mean_gap: float = 2.0  # mean seconds between two faults (exponential)
    quiet_every: float = 20.0  # a quiet check every this many planned seconds; 0: none
    probe_period: float = 0.1
    truth_period: float = 0.2
    state_period: float = 1.0
    slack: float = 0.5  # scheduling slack on a loaded machine, in every bound
    settle_slack: float = 1.0
    release_bound: float = 1.0  # link down -> addresses gone (native)
    ready_timeout: float = 30.0  # an engine started -> "taking part" in its log
    # Someone on the segment without the password, all along (tests/attacker.py): old adverts of
    # the iprotate hosts replayed, rewritten to a better priority, sent under another host's
    # address or from a stranger's. None of it may change anything: every invariant still holds.
    attacker: bool = True

    @property
    def down_limit(self) -> int:
        return self.hosts - 1 if self.max_down is None else self.max_down

    @property
    def run_args(self) -> tuple[str, ...]:
        return ("--hold-down", str(self.hold_down), "--stagger", str(self.stagger))

    @property
    def names(self) -> list[str]:
        return list(NAMES[: self.hosts])

    @property
    def native(self) -> list[str]:
        return self.names[: self.hosts - self.legacy]

    @property
    def vip_link_hosts(self) -> list[str]:
        """Hosts whose VIPs live on VIP_IFACE, not on their advert NIC."""
        return self.native[: self.vip_links]

    @property
    def ignoring_hosts(self) -> list[str]:
        """Hosts whose engine ignores carrier loss on its advert NIC (their VIPs on it too)."""
        return self.native[self.vip_links : self.vip_links + self.ignore_ifstate]

    def fault_kinds(self) -> dict[str, tuple[str, ...]]:
        """What can happen to each host. ucarp hosts: the base faults. Native ones: also
        recreate, storm, twin, demote; vip_flap where the VIPs have a NIC of their own. Not on
        an ignore-ifstate host: recreate and storm (the flap that follows a storm checks that
        the engine still notices carrier loss, which such a host ignores by design)."""
        out = {n: BASE_FAULTS for n in self.names}
        for n in self.native:
            kinds = [*BASE_FAULTS, "twin", "demote"]
            if n not in self.ignoring_hosts:
                kinds += ["recreate", "storm"]
            if n in self.vip_link_hosts:
                kinds.append("vip_flap")
            out[n] = tuple(k for k in FAULTS if k in kinds)
        return out


@dataclass(frozen=True)
class Step:
    """One step of a schedule, at a planned time (seconds into the fault phase; quiet checks take
    no planned time). `hold` is how long a fault is planned to last."""

    at: float
    kind: str  # a fault, a recovery, or "quiet"
    host: str | None = None
    hold: float = 0.0


def _hold(rng: random.Random, kind: str) -> float:
    """How long a fault lasts: flaps and cuts are short (under D) or long, half and half."""
    if kind == "kill":
        return rng.uniform(1.0, 8.0)
    if kind == "stop":
        return rng.uniform(0.5, 6.0)
    if kind in ("flap", "vip_flap", "recreate"):
        return rng.uniform(0.2, 2.5) if rng.random() < 0.5 else rng.uniform(4.0, 8.0)
    if kind == "storm":
        return rng.uniform(1.0, 3.0)
    if kind == "twin":
        return rng.uniform(2.0, 4.0)
    if kind == "demote":
        return DEMOTE_SECONDS
    return rng.uniform(0.5, 2.5) if rng.random() < 0.5 else rng.uniform(4.0, 10.0)


def make_schedule(
    seed: int,
    names: Sequence[str],
    seconds: float,
    max_down: int,
    mean_gap: float = 2.0,
    quiet_every: float = 20.0,
    weights: Mapping[str, float] = WEIGHTS,
    kinds: Mapping[str, Sequence[str]] | None = None,
) -> list[Step]:
    """The steps of a run: pure, the same for the same arguments.

    Faults hit hosts that are fully up, at most `max_down` hosts are down at once, every fault is
    recovered; every `quiet_every` planned seconds the transient faults end and a quiet check
    follows; at the end the transient faults end, a quiet check, every other host back, a last
    quiet check. `kinds`: the faults each host can have (default: the base faults).

    Storms and twins (EXCLUSIVE) come only when every host is up, right after a quiet check, and
    nothing else happens until they end: whatever changes meanwhile is their doing. A storm
    ends with a flap of the same host (STORM_FLAP long): the engine must still notice it. When
    one is drawn, every fault still on ends at once (a killed host restored, ...) first."""
    rng = random.Random(seed)
    kinds = kinds or {n: BASE_FAULTS for n in names}
    steps: list[Step] = []
    pending: dict[str, tuple[float, str]] = {}  # host -> (planned recovery, fault)

    def recover(until: float, which: Sequence[str] = FAULTS, at: float | None = None) -> None:
        while True:
            due_now = sorted(
                (due, h, kind)
                for h, (due, kind) in pending.items()
                if (at is not None or due <= until) and kind in which
            )
            if not due_now:
                return
            due, h, kind = due_now[0]
            steps.append(Step(due if at is None else at, RECOVERY[kind], h))
            del pending[h]
            if kind == "storm" and at is None:
                hold = round(rng.uniform(*STORM_FLAP), 3)
                steps.append(Step(due, "flap", h, hold))
                pending[h] = (round(due + hold, 3), "flap")

    t = 0.0
    next_quiet = quiet_every if quiet_every > 0 else math.inf
    while True:
        t += min(max(rng.expovariate(1.0 / mean_gap), 0.1), 4 * mean_gap)
        if t >= seconds:
            break
        recover(t)
        if t >= next_quiet:
            recover(t, TRANSIENT, at=t)
            steps.append(Step(t, "quiet"))
            next_quiet += quiet_every
            continue
        if any(k in EXCLUSIVE for _, k in pending.values()):
            continue
        up = [h for h in names if h not in pending]
        if len(pending) >= max_down or not up:
            continue
        host = rng.choice(up)
        kind = rng.choices(kinds[host], [weights[k] for k in kinds[host]])[0]
        hold = round(_hold(rng, kind), 3)
        if kind in EXCLUSIVE:  # every other fault ends now, then the cluster settles
            recover(t, FAULTS, at=round(t, 3))
            steps.append(Step(round(t, 3), "quiet"))
        steps.append(Step(round(t, 3), kind, host, hold))
        pending[host] = (round(t + hold, 3), kind)
    end = max([seconds, *(s.at for s in steps)])
    recover(end, TRANSIENT, at=end)
    steps.append(Step(end, "quiet"))
    recover(end, FAULTS, at=end)
    steps.append(Step(end, "quiet"))
    return steps


# --- what a run records --------------------------------------------------------------------------


@dataclass
class Violation:
    t: float  # seconds since the fault phase began
    wall: str  # the same instant as the daemons' logs write it (local time)
    invariant: str
    subject: str  # a VIP or a host
    detail: str
    logs: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Gap:
    """A VIP the client got no answer for."""

    vip: str
    t: float
    seconds: float
    allowed: float | None  # None: no participant was eligible
    cause: str
    cause_host: str | None
    ongoing: bool = False  # still unanswered when the run ended


@dataclass
class Overlap:
    """A VIP two hosts answered for (client) or had configured (truth)."""

    vip: str
    source: str  # "client" or "truth"
    t: float
    seconds: float
    allowed: float
    hosts: list[str]
    cause: str
    cause_host: str | None
    ongoing: bool = False  # still two when the run ended


@dataclass
class QuietCheck:
    t: float
    down: list[str]
    settled_after: float | None  # seconds after the reference (last event / arrival); None: never
    bound: float


@dataclass
class Executed:
    t: float
    kind: str
    host: str | None
    planned: float
    hold: float
    note: str = ""  # "ignore-ifstate": a flap the engine is told to ignore


@dataclass
class ChaosResult:
    """Everything a run saw; `summary()` has the figures."""

    config: dict[str, Any]
    bounds: dict[str, Any]
    workdir: str
    executed: list[Executed] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    quiets: list[QuietCheck] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)
    probe_rounds: int = 0
    truth_samples: int = 0
    fault_phase: float = 0.0
    wall: float = 0.0
    t0_wall: str = ""  # t=0 as the daemons' logs write the time
    namespaces_left: list[str] = field(default_factory=list)
    attacks: dict[str, int] = field(default_factory=dict)  # what the attacker sent, by kind

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    def summary(self) -> dict[str, Any]:
        """Events run; per cause, the longest unserved gap and two-holder overlap vs its bound;
        quiet checks; violations."""
        events: dict[str, int] = defaultdict(int)
        for e in self.executed:
            events[f"{e.kind} ({e.note})" if e.note else e.kind] += 1
        unserved: dict[str, dict[str, Any]] = {}
        for g in self.gaps:
            row = unserved.setdefault(
                g.cause, {"gaps": 0, "max_s": 0.0, "bound_s": None, "max_past_D_s": None}
            )
            row["gaps"] += 1
            if g.allowed is not None:
                past = round(g.seconds - (g.allowed - self.bounds["margin_client"]), 3)
                row["max_past_D_s"] = max(row["max_past_D_s"] or -math.inf, past)
            if g.seconds >= row["max_s"]:
                row["max_s"] = round(g.seconds, 3)
                row["bound_s"] = None if g.allowed is None else round(g.allowed, 3)
                row["vip"] = g.vip
        overlap: dict[str, dict[str, Any]] = {}
        for o in self.overlaps:
            row = overlap.setdefault(
                f"{o.cause} ({o.source})", {"overlaps": 0, "max_s": 0.0, "bound_s": None}
            )
            row["overlaps"] += 1
            if o.seconds >= row["max_s"]:
                row["max_s"] = round(o.seconds, 3)
                row["bound_s"] = round(o.allowed, 3)
                row["vip"] = o.vip
        settled = [q.settled_after for q in self.quiets if q.settled_after is not None]
        return {
            "seed": self.seed,
            "fault_phase_s": round(self.fault_phase, 1),
            "wall_s": round(self.wall, 1),
            "events": dict(sorted(events.items())),
            "probe_rounds": self.probe_rounds,
            "truth_samples": self.truth_samples,
            "unserved_by_cause": dict(sorted(unserved.items())),
            "two_holders_by_cause": dict(sorted(overlap.items())),
            "quiet_checks": len(self.quiets),
            "quiet_settled_max_s": round(max(settled), 3) if settled else None,
            "quiet_bound_s": round(self.bounds["settle"], 3),
            "violations": len(self.violations),
            "attacks_sent": dict(sorted(self.attacks.items())),
            "error_lines": sum(len(v) for v in self.errors.values()),
            "namespaces_left": self.namespaces_left,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "config": self.config,
            "bounds": self.bounds,
            "workdir": self.workdir,
            "t0_wall": self.t0_wall,
            "executed": [asdict(e) for e in self.executed],
            "violations": [asdict(v) for v in self.violations],
            "quiets": [asdict(q) for q in self.quiets],
            "gaps": [asdict(g) for g in self.gaps],
            "overlaps": [asdict(o) for o in self.overlaps],
            "errors": self.errors,
        }

    def replay(self) -> str:
        c = self.config
        env = f"IPROTATE_CHAOS_SEED={c['seed']} IPROTATE_CHAOS_SECONDS={c['seconds']:g}"
        flags = f"--seed {c['seed']} --seconds {c['seconds']:g} --legacy {c['legacy']}"
        flags += f" --vip-links {c['vip_links']} --ignore-ifstate {c['ignore_ifstate']}"
        if c["legacy"]:
            return f"python bench/chaos.py {flags}"
        return f"{env} pytest tests/test_chaos.py -k short, or python bench/chaos.py {flags}"

    def failure_message(self, limit: int = 5) -> str:
        lines = [
            f"chaos seed {self.seed}: {len(self.violations)} invariant violation(s); "
            f"replay: {self.replay()}; logs in {self.workdir}"
        ]
        for v in self.violations[:limit]:
            lines.append(f"  t={v.t:.2f}s ({v.wall}) {v.invariant} {v.subject}: {v.detail}")
            for host, tail in v.logs.items():
                lines += [f"    {host}.log: {line}" for line in tail[-4:]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more (chaos.json)")
        return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------------


class HostState(enum.Enum):
    UP = "up"
    KILLED = "killed"
    RESTORING = "restoring"  # engine started, cable still out
    STOPPING = "stopping"
    STOPPED = "stopped"
    STARTING = "starting"
    FLAPPED = "flapped"  # advert cable out, engine running
    CUT = "cut"  # off the bridge, carrier up
    VIP_FLAPPED = "vip_flapped"  # VIP cable out (a host with VIP_IFACE), engine running
    GONE = "gone"  # advert NIC deleted, engine running
    STORM = "storm"  # a netlink storm in its namespace: it must go on as if nothing happened
    TWIN = "twin"  # a second daemon started for it: likewise
    DEMOTED = "demoted"  # SIGUSR2: backup for DEMOTE_SECONDS


ENGINE_RUNS = {
    HostState.UP,
    HostState.FLAPPED,
    HostState.CUT,
    HostState.STARTING,
    HostState.RESTORING,
    HostState.VIP_FLAPPED,
    HostState.GONE,
    HostState.STORM,
    HostState.TWIN,
    HostState.DEMOTED,
}
# Eligible (once ready). Not a demoted engine: its backups' timers restart at D as if their
# advskew were 255 (longer than the demote) and again when the demote ends (machine.py, "Demote").
SERVING = {HostState.UP, HostState.STORM, HostState.TWIN}
STATUS_ASKED = ENGINE_RUNS - {HostState.STARTING, HostState.RESTORING}


@dataclass
class Host:
    name: str
    legacy: bool
    state: HostState = HostState.UP
    eligible_since: float | None = None
    spawned_at: float = 0.0
    ready_seen: bool = False
    log_pos: int = 0
    stopping: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stop_sent: float = 0.0
    left_at: float = 0.0  # when it last left the segment (its last advert may be that late)
    link_down_at: float = 0.0
    link_was_down: bool = False  # a ucarp host whose link was down sleeps 10 s before it sees it
    release_flagged: bool = False
    stopped_flagged: bool = False
    vip_link: bool = False  # its VIPs on VIP_IFACE, apart from its advert NIC
    ignores_link: bool = False  # runs with --ignore-ifstate
    aux: subprocess.Popen[bytes] | None = None  # the storm's `ip -batch`, or the twin daemon
    window: dict[str, int] = field(default_factory=dict)  # log offsets when a storm/twin began
    window_t: float = 0.0
    demoted_at: float = 0.0
    aux_exit: float = 0.0  # when the twin was seen to have exited
    crashed: bool = False  # its engine died by itself since the last fault began
    frozen_at: float = 0.0  # SIGSTOPped for a storm since then (0: not frozen)
    demote_checked: bool = False  # invariant 4 looked at its VIPs during its demote

    @property
    def connected(self) -> bool:
        """Its VIPs reachable from the segment: the NIC they live on has its cable in and its
        port on the bridge."""
        off = {HostState.KILLED, HostState.RESTORING, HostState.CUT, HostState.VIP_FLAPPED}
        if not self.vip_link:
            off |= {HostState.FLAPPED, HostState.GONE}
        return self.state not in off

    @property
    def must_release(self) -> bool:
        """Its engine must give up its VIPs (within release_bound): the advert NIC has no
        carrier (and the engine does not ignore that) or is gone, or the VIP NIC has none."""
        if self.legacy:
            return False
        if self.state is HostState.FLAPPED:
            return not self.ignores_link
        return self.state in (HostState.GONE, HostState.VIP_FLAPPED)


@dataclass
class _Streak:
    start: float
    hosts: set[str]
    flagged: bool = False


class ChaosRun:
    """Plays a schedule against a lab and checks the invariants (see the module docstring)."""

    def __init__(
        self, cfg: ChaosConfig, lab: Lab, say: Callable[[str], None] | None = None
    ) -> None:
        self.cfg = cfg
        self.lab = lab
        self.say = say or (lambda s: None)
        self.plan = lab.plan
        c = self.plan.cluster
        self.legacy = {h.name for h in c.hosts if h.engine == "ucarp"}
        self.hosts = {
            n: Host(
                n,
                n in self.legacy,
                vip_link=n in cfg.vip_link_hosts,
                ignores_link=n in cfg.ignoring_hosts,
            )
            for n in lab.names
        }
        if set(lab.names) != set(cfg.names):
            raise ValueError(f"the lab's hosts {lab.names} are not the config's {cfg.names}")
        self.lag = {n: (1.0 + c.advbase if n in self.legacy else 0.0) for n in lab.names}
        self.vips = {str(v.ip): v for v in self.plan.vips}
        # How long a backup may wait before it concludes the master is gone: D, and for a native
        # host never less than the slowest live master's interval + its skew (machine.py,
        # "Patience": it matters at advbase 0 only, where D is shorter than a master's interval).
        slowest = interval(c.advbase, 255)
        self.D = {
            ip: {
                h: max(
                    master_down(c.advbase, v.advskew_of(h), c.dead_ratio),
                    0.0 if h in self.legacy else slowest + v.advskew_of(h) / 256,
                )
                for h in v.order
            }
            for ip, v in self.vips.items()
        }
        self.T = {
            ip: {h: interval(c.advbase, v.advskew_of(h)) for h in v.order}
            for ip, v in self.vips.items()
        }
        d_max = max(d + self.lag[h] for row in self.D.values() for h, d in row.items())
        t_max = max(t + self.lag[h] for row in self.T.values() for h, t in row.items())
        k = max(sum(1 for v in self.plan.for_host(n) if v.preempt_of(n)) for n in lab.names)
        self.settle = (
            max(d_max, cfg.hold_down + cfg.stagger * max(k - 1, 0) + t_max) + cfg.settle_slack
        )
        self.margin_client = cfg.slack + 2 * cfg.probe_period
        self.margin_truth = cfg.slack + 2 * cfg.truth_period
        self.schedule = make_schedule(
            cfg.seed,
            lab.names,
            cfg.seconds,
            cfg.down_limit,
            cfg.mean_gap,
            cfg.quiet_every,
            kinds=cfg.fault_kinds(),
        )
        self.result = ChaosResult(
            config=asdict(cfg),
            bounds={
                "D": self.D,
                "T": self.T,
                "ucarp_lag": {n: self.lag[n] for n in self.legacy},
                "settle": self.settle,
                "margin_client": self.margin_client,
                "margin_truth": self.margin_truth,
                "release": cfg.release_bound,
            },
            workdir=str(lab.workdir),
        )
        self.t0 = 0.0
        self.checking = False
        self.gap: dict[str, float | None] = dict.fromkeys(self.vips)
        self.gap_flagged: dict[str, bool] = dict.fromkeys(self.vips, False)
        self.last_answer: dict[str, list[str]] = {ip: [v.owner] for ip, v in self.vips.items()}
        self.streaks: dict[tuple[str, str], _Streak] = {}
        self.view: dict[str, list[str]] = {}
        self.view_t = 0.0
        self.truth: dict[str, list[str]] = {}
        self.last_truth = 0.0
        self.last_logs = 0.0
        self.last_states = 0.0
        self.mismatch: dict[tuple[str, str], int] = {}  # (host, vip) -> reads in a row
        self.last_event = 0.0
        self.match_since: float | None = None
        self.cursor = 0
        self.step_due = 0.0
        self.quiet_deadline: float | None = None
        self.quiet_ref = 0.0
        self.quiet_flagged = False

    # --- driving -----------------------------------------------------------------------------

    def run(self) -> ChaosResult:
        wall0 = time.monotonic()
        lab = self.lab
        for h in self.hosts.values():
            h.spawned_at = time.monotonic()
        lab.start_all()
        lab.start_probe(self.cfg.probe_period)
        want = {ip: [v.owner] for ip, v in self.vips.items()}
        deadline = time.monotonic() + 30.0
        while not (self._sample_truth() == want and self._poll_client() == want):
            dead = [n for n in lab.names if not lab.running(n)]
            if dead or time.monotonic() > deadline:
                why = f"engines exited: {dead}" if dead else "not settled after 30 s"
                tails = {n: self._log_tail(n, "", 15) for n in (dead or lab.names)}
                raise RuntimeError(
                    f"chaos seed {self.cfg.seed}: the lab did not start ({why}); holders "
                    f"{self.truth}, client {self.view}; logs in {lab.workdir}: {tails}"
                )
            time.sleep(0.1)
        self.t0 = now = time.monotonic()
        self.result.t0_wall = _wall(time.time())
        self.checking = True
        for h in self.hosts.values():
            self._scan_log(h)
            h.ready_seen = True
            h.eligible_since = now
        self.step_due = now + self.schedule[0].at if self.schedule else now
        self.say(
            f"chaos seed {self.cfg.seed}: {len(self.schedule)} steps, settle {self.settle}, "
            f"t=0 at {self.result.t0_wall}"
        )
        attacker = self._start_attacker()
        try:
            while self.cursor < len(self.schedule):
                self._observe()
                self._advance()
        finally:
            self._stop_attacker(attacker)
        self.result.fault_phase = time.monotonic() - self.t0
        self._final_checks()
        self.result.wall = time.monotonic() - wall0
        return self.result

    def _start_attacker(self) -> subprocess.Popen[bytes] | None:
        """tests/attacker.py in the client's namespace for the whole fault phase; it knows the
        iprotate hosts' addresses (ucarp's adverts carry no tag: nothing can tell a replayed one
        from a real one, README "Security")."""
        if not self.cfg.attacker:
            return None
        native = [str(self.lab.plan.cluster.host(n).address) for n in self.cfg.native]
        group = str(self.lab.plan.vips[0].group)
        seconds = self.schedule[-1].at + 600 if self.schedule else 600
        argv = [sys.executable, ATTACKER, "eth0", group, str(seconds), str(self.cfg.seed), *native]
        return self.lab.seg.spawn(CLIENT, argv, stdout=subprocess.PIPE)

    def _stop_attacker(self, p: subprocess.Popen[bytes] | None) -> None:
        """SIGTERM by PID; what it sent is counted from its last line."""
        if p is None:
            return
        Segment.stop(p, signal.SIGINT, timeout=3.0)
        out = p.stdout.read().decode() if p.stdout else ""
        for line in reversed(out.splitlines()):
            try:
                self.result.attacks = json.loads(line)
                break
            except ValueError:
                continue

    def _observe(self) -> None:
        self._poll_client(timeout=0.05)
        now = time.monotonic()
        if now - self.last_truth >= self.cfg.truth_period:
            self._sample_truth()
            self._check_truth(self.last_truth)
        if now - self.last_logs >= 0.25:
            self.last_logs = now
            for h in self.hosts.values():
                self._scan_log(h)
        if now - self.last_states >= self.cfg.state_period:
            self.last_states = now
            self._check_engine_states()
        self._check_processes(now)

    def _advance(self) -> None:
        """Run the next step once it is due and its preconditions hold."""
        step = self.schedule[self.cursor]
        now = time.monotonic()
        if now < self.step_due:
            return
        if step.kind == "quiet":
            done = self._quiet(now)
        else:
            done = self._ready_for(step)
            if done:
                self._execute(step)
            elif step.kind not in FAULTS and step.host and self.hosts[step.host].crashed:
                # Its engine died during the fault and was restored: nothing left to recover.
                self.say(f"t={now - self.t0:7.2f} {step.kind:8} {step.host}: moot, it crashed")
                done = True
            elif now - self.step_due > STEP_PATIENCE:
                self._violate(
                    "stuck", step.host or "cluster", f"{step.kind} waited {STEP_PATIENCE} s for "
                    f"its host to be ready; states {self._states()}; skipped",
                )  # fmt: skip
                done = True
        if done:
            self.cursor += 1
            if self.cursor < len(self.schedule):
                gap = self.schedule[self.cursor].at - step.at
                self.step_due = time.monotonic() + max(gap, 0.0)

    def _ready_for(self, step: Step) -> bool:
        assert step.host is not None
        h = self.hosts[step.host]
        if step.kind in EXCLUSIVE:  # alone on a settled cluster (a quiet check came first)
            return all(x.state is HostState.UP for x in self.hosts.values())
        if step.kind in FAULTS:
            down = sum(1 for x in self.hosts.values() if x.state is not HostState.UP)
            return h.state is HostState.UP and down < self.cfg.down_limit
        need = {
            "restore": HostState.KILLED,
            "start": HostState.STOPPED,
            "link_up": HostState.FLAPPED,
            "heal": HostState.CUT,
            "vip_up": HostState.VIP_FLAPPED,
            "create": HostState.GONE,
            "calm": HostState.STORM,
            "twin_gone": HostState.TWIN,
            "rejoin": HostState.DEMOTED,
        }[step.kind]
        if h.state is not need:
            return False
        now = time.monotonic()
        if step.kind == "calm":  # the storm has been played out
            return h.aux is None or h.aux.poll() is not None or now - h.window_t > 30.0
        if step.kind == "twin_gone":  # exited (and had time to do harm), or too late
            exited = h.aux is None or h.aux.poll() is not None
            graced = exited and h.aux_exit > 0 and now - h.aux_exit >= TWIN_GRACE
            return graced or now - h.window_t > TWIN_TIMEOUT
        if step.kind == "rejoin":
            return now - h.demoted_at >= DEMOTE_SECONDS
        return True

    def _execute(self, step: Step) -> None:
        assert step.host is not None
        h = self.hosts[step.host]
        lab, seg = self.lab, self.lab.seg
        kind = step.kind
        began = time.monotonic()
        if kind == "kill":
            # Every process of the host fails at one instant (a ucarp host runs several).
            procs = lab.procs.pop(h.name, [])
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGSTOP)
            self._cables(h, False)
            for p in procs:
                Segment.stop(p, signal.SIGKILL)
            h.link_was_down = True
            self._set(h, HostState.KILLED)
        elif kind == "restore":
            self._spawn(h)
            self._set(h, HostState.RESTORING)
        elif kind == "stop":
            h.stopping = lab.procs.pop(h.name, [])
            h.stop_sent = time.monotonic()
            for p in h.stopping:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGTERM)
            self._set(h, HostState.STOPPING)
        elif kind == "start":
            self._spawn(h)
            self._set(h, HostState.STARTING)
        elif kind == "flap":
            seg.link(h.name, False, seg.members[h.name].interface)
            h.link_down_at = time.monotonic()
            h.release_flagged = False
            h.link_was_down = True
            self._set(h, HostState.FLAPPED)
        elif kind == "link_up":
            seg.link(h.name, True, seg.members[h.name].interface)
            self._set(h, HostState.UP)
        elif kind == "vip_flap":
            seg.link(h.name, False, VIP_IFACE)
            h.link_down_at = time.monotonic()
            h.release_flagged = False
            self._set(h, HostState.VIP_FLAPPED)
        elif kind == "vip_up":
            seg.link(h.name, True, VIP_IFACE)
            self._set(h, HostState.UP)
        elif kind == "recreate":
            seg.delete_interface(h.name)
            h.link_down_at = time.monotonic()
            h.release_flagged = False
            self._set(h, HostState.GONE)
        elif kind == "create":
            seg.create_interface(h.name)
            self._set(h, HostState.UP)
        elif kind == "storm":
            self._open_window(h)
            if STORM_LINK not in seg.run(h.name, "ip", "-o", "link", "show"):
                seg.run(h.name, "ip", "link", "add", STORM_LINK, "type", "veth", "peer", "name",
                        STORM_LINK[:-1] + "1")  # fmt: skip
            # Frozen while the events pour in, so its netlink socket overflows for certain.
            (proc,) = lab.procs[h.name]
            os.kill(proc.pid, signal.SIGSTOP)
            h.frozen_at = time.monotonic()
            h.aux = seg.spawn(h.name, ["ip", "-batch", str(self._storm_batch())])
            self._set(h, HostState.STORM)
        elif kind == "calm":
            self._thaw(h, force=True)
            if h.aux is not None and h.aux.poll() is None:
                self._violate("storm", h.name, "`ip -batch` still running after 30 s; stopped")
                Segment.stop(h.aux, signal.SIGKILL)
            elif h.aux is not None and h.aux.returncode != 0:
                self._violate("storm", h.name, f"`ip -batch` failed ({h.aux.returncode})")
            h.aux = None
            self._close_window(h, "storm")
            self._set(h, HostState.UP)
        elif kind == "twin":
            self._open_window(h)
            h.aux_exit = 0.0
            h.aux = seg.spawn(h.name, lab.run_argv(h.name), log=str(self._twin_log(h)))
            self._set(h, HostState.TWIN)
        elif kind == "twin_gone":
            self._twin_gone(h)
            self._set(h, HostState.UP)
        elif kind == "demote":
            (proc,) = lab.procs[h.name]
            os.kill(proc.pid, signal.SIGUSR2)
            h.demoted_at = time.monotonic()
            h.demote_checked = False
            self._set(h, HostState.DEMOTED)
        elif kind == "rejoin":
            # Its machines take part again (preempting after the hold-down), their timers
            # restarted: an arrival for invariants 1 and 3.
            self._set(h, HostState.UP)
        elif kind == "cut":
            for iface in seg.members[h.name].all_ports:
                seg.partition(h.name, True, iface)
            self._set(h, HostState.CUT)
        elif kind == "heal":
            for iface in seg.members[h.name].all_ports:
                seg.partition(h.name, False, iface)
            self._set(h, HostState.UP)
        else:
            raise ValueError(kind)
        t = time.monotonic()
        self.last_event = t
        self.match_since = None
        if kind in FAULTS:
            h.crashed = False
        note = "ignore-ifstate" if kind == "flap" and h.ignores_link else ""
        self.result.executed.append(
            Executed(round(began - self.t0, 3), kind, h.name, step.at, step.hold, note)
        )
        hold = f" for {step.hold:.1f} s" if step.hold else ""
        self.say(f"t={t - self.t0:7.2f} {kind:8} {h.name}{hold}")

    def _set(self, h: Host, state: HostState) -> None:
        now = time.monotonic()
        serving = h.state in SERVING
        if (serving or h.state is HostState.STARTING) and state not in SERVING:
            h.left_at = now
        h.state = state
        if state in SERVING:
            if serving and h.eligible_since is not None:
                return  # a storm or a twin began or ended: the host never stopped serving
            # ucarp sleeps 10 s while its link is not RUNNING, so it notices the cable late.
            late = UCARP_LINK_SLEEP if h.legacy and h.link_was_down else 0.0
            h.eligible_since = now + late + self.lag[h.name]
            h.link_was_down = False
        else:
            h.eligible_since = None

    def _storm_batch(self) -> Path:
        """The `ip -batch` file of a storm: STORM_ROUNDS x adding then deleting every address
        of STORM_ADDRESSES on a dummy link (thousands of RTM_NEWADDR/DELADDR at once)."""
        path = self.lab.workdir / "storm.batch"
        if not path.exists():
            lines = []
            for _ in range(STORM_ROUNDS):
                lines += [f"address add {a} dev {STORM_LINK}" for a in STORM_ADDRESSES]
                lines += [f"address del {a} dev {STORM_LINK}" for a in STORM_ADDRESSES]
            path.write_text("\n".join(lines) + "\n")
        return path

    def _twin_log(self, h: Host) -> Path:
        return self.lab.workdir / f"{h.name}.twin.log"

    def _open_window(self, h: Host) -> None:
        """A storm or twin begins: remember where every native engine's log ends."""
        h.window_t = time.monotonic()
        h.window = {}
        for n, x in self.hosts.items():
            if not x.legacy:
                try:
                    h.window[n] = (self.lab.workdir / f"{n}.log").stat().st_size
                except FileNotFoundError:
                    h.window[n] = 0

    def _close_window(self, h: Host, what: str) -> None:
        """Invariant 7: from the storm's or twin's start until now no native engine logged a
        transition or an address repair (the cluster was settled and nothing else happened)."""
        seen: dict[str, list[str]] = {}
        for n, pos in h.window.items():
            try:
                with open(self.lab.workdir / f"{n}.log", "rb") as f:
                    f.seek(pos)
                    text = f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                continue
            hits = [line for line in text.splitlines() if DISTURBANCE.search(line)]
            if hits:
                seen[n] = hits[:8]
        if seen:
            self._violate(
                "undisturbed",
                h.name,
                f"a {what} on {h.name} for {time.monotonic() - h.window_t:.2f} s: engines "
                f"changed something: {sorted(seen)}",
                seen,
            )
        h.window = {}

    def _twin_gone(self, h: Host) -> None:
        """The second daemon for `h` must have been refused: a non-zero exit within
        TWIN_TIMEOUT, one line saying why, and nothing changed meanwhile."""
        p, h.aux = h.aux, None
        assert p is not None
        waited = time.monotonic() - h.window_t
        if p.poll() is None:
            self._violate("twin", h.name, f"a second daemon still runs after {waited:.1f} s")
            Segment.stop(p, signal.SIGTERM, timeout=STOP_TIMEOUT)
        out = self._twin_log(h).read_text(errors="replace").strip().splitlines()
        if p.returncode == 0 or len(out) != 1:
            self._violate(
                "twin",
                h.name,
                f"a second daemon exited with status {p.returncode} and {len(out)} lines "
                "(want: refused, non-zero, one line)",
                {h.name: out[-12:]},
            )
        self._twin_log(h).unlink(missing_ok=True)
        self._close_window(h, "twin")

    def _cables(self, h: Host, up: bool) -> None:
        """Every cable of the host (a host losing power loses them all)."""
        for iface in self.lab.seg.members[h.name].all_ports:
            self.lab.seg.link(h.name, up, iface)

    def _spawn(self, h: Host) -> None:
        self._scan_log(h)  # whatever the last run wrote is read: "taking part" below is new
        h.ready_seen = False
        h.spawned_at = time.monotonic()
        self.lab.start(h.name)

    def _became_ready(self, h: Host) -> None:
        if h.state is HostState.RESTORING:
            self._cables(h, True)  # the engine has cleaned up: cables back in
        self._set(h, HostState.UP)
        self.last_event = time.monotonic()
        self.match_since = None
        self.say(f"t={self.last_event - self.t0:7.2f} ready    {h.name}")

    # --- observing ---------------------------------------------------------------------------

    def _poll_client(self, timeout: float = 0.0) -> dict[str, list[str]]:
        for t, view in self.lab.poll_probe(timeout):
            self.result.probe_rounds += 1
            self.view, self.view_t = view, t
            if self.checking:
                self._check_client(t, view)
        return self.view

    def _sample_truth(self) -> dict[str, list[str]]:
        self.last_truth = time.monotonic()
        self.truth = self.lab.holders()
        self.last_truth = (self.last_truth + time.monotonic()) / 2
        self.result.truth_samples += 1
        return self.truth

    def _scan_log(self, h: Host) -> None:
        path = self.lab.workdir / f"{h.name}.log"
        try:
            with open(path, "rb") as f:
                f.seek(h.log_pos)
                data = f.read()
        except FileNotFoundError:
            return
        cut = data.rfind(b"\n") + 1
        h.log_pos += cut
        text = data[:cut].decode("utf-8", "replace")
        if not text:
            return
        for line in text.splitlines():
            if " ERROR " in line:
                self.result.errors.setdefault(h.name, []).append(line)
        if "Traceback" in text:
            tb = text[text.index("Traceback") :].splitlines()[:30]
            self._violate("traceback", h.name, "a Traceback in the engine's log", {h.name: tb})
        if (
            h.state in (HostState.STARTING, HostState.RESTORING)
            and not h.ready_seen
            and not h.legacy
            and "taking part in" in text
        ):
            h.ready_seen = True
            self._became_ready(h)

    def _thaw(self, h: Host, force: bool = False) -> None:
        """SIGCONT a storm's frozen engine once the storm has passed (or STORM_FREEZE_MAX)."""
        if not h.frozen_at:
            return
        over = h.aux is None or h.aux.poll() is not None
        if force or over or time.monotonic() - h.frozen_at > STORM_FREEZE_MAX:
            for p in self.lab.procs.get(h.name, []):
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGCONT)
            h.frozen_at = 0.0

    def _check_processes(self, now: float) -> None:
        for h in self.hosts.values():
            self._thaw(h)
            if h.aux is not None and not h.aux_exit and h.aux.poll() is not None:
                h.aux_exit = now
            if h.state in (HostState.STARTING, HostState.RESTORING) and not h.ready_seen:
                if h.legacy and now - h.spawned_at >= 1.0 and self.lab.running(h.name):
                    h.ready_seen = True
                    self._became_ready(h)
                elif now - h.spawned_at > self.cfg.ready_timeout:
                    self._violate(
                        "not_ready", h.name, f"not started after {now - h.spawned_at:.1f} s"
                    )
                    self._crashed(h)
                    continue
            if h.state in ENGINE_RUNS:
                procs = self.lab.procs.get(h.name, [])
                dead = [p for p in procs if p.poll() is not None]
                if dead or not procs:
                    codes = [p.returncode for p in dead]
                    self._violate("crash", h.name, f"engine exited by itself, status {codes}")
                    self._crashed(h)
            elif h.state is HostState.STOPPING:
                if all(p.poll() is not None for p in h.stopping):
                    self._stopped(h, time.monotonic())
                elif now - h.stop_sent > STOP_TIMEOUT:
                    self._violate(
                        "stop_timeout", h.name, f"still running {STOP_TIMEOUT} s after SIGTERM"
                    )
                    for p in h.stopping:
                        Segment.stop(p, signal.SIGKILL)
                    self._stopped(h, time.monotonic())

    def _stopped(self, h: Host, now: float) -> None:
        codes = [p.returncode for p in h.stopping]
        if not h.legacy and codes != [0]:
            self._violate("exit_code", h.name, f"clean stop exited with {codes}")
        vip_if = self.lab.vip_iface(h.name)
        left = [a for a in self.lab.seg.addresses(h.name, vip_if) if a.startswith(VIP_PREFIX)]
        h.stopped_flagged = bool(left)
        if left:
            self._violate("stopped_host", h.name, f"VIPs left after a clean stop: {left}")
        h.stopping = []
        self._set(h, HostState.STOPPED)
        self.say(f"t={now - self.t0:7.2f} stopped  {h.name} in {now - h.stop_sent:.2f} s")

    def _crashed(self, h: Host) -> None:
        """An engine that died unasked (or never started): treat it as killed, restore it."""
        h.crashed = True
        h.frozen_at = 0.0
        for p in self.lab.procs.pop(h.name, []):
            Segment.stop(p, signal.SIGKILL)
        if h.aux is not None:
            Segment.stop(h.aux, signal.SIGKILL)
            h.aux = None
        h.window = {}
        if h.state is HostState.GONE:
            self.lab.seg.create_interface(h.name)
        self._cables(h, False)
        h.link_was_down = True
        if h.state is HostState.CUT:
            for iface in self.lab.seg.members[h.name].all_ports:
                self.lab.seg.partition(h.name, False, iface)
        self._set(h, HostState.KILLED)
        self._spawn(h)
        self._set(h, HostState.RESTORING)

    # --- invariants --------------------------------------------------------------------------

    def _violate(
        self, invariant: str, subject: str, detail: str, logs: dict[str, list[str]] | None = None
    ) -> None:
        t = time.monotonic() - self.t0
        if logs is None:
            hosts = [subject] if subject in self.hosts else self.lab.names
            logs = {n: self._log_tail(n, subject) for n in hosts}
        wall = _wall(time.time())
        self.result.violations.append(
            Violation(round(t, 3), wall, invariant, subject, detail, logs)
        )
        self.say(f"t={t:7.2f} ({wall}) VIOLATION {invariant} {subject}: {detail}")

    def _log_tail(self, host: str, needle: str, n: int = 12) -> list[str]:
        path = self.lab.workdir / f"{host}.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        if needle in self.vips:
            lines = [x for x in lines if needle + "/" in x or "link" in x or "stopping" in x]
        return lines[-n:]

    def _cause(self, t: float, hosts: Sequence[str] = ()) -> tuple[str, str | None]:
        """The last event that began before `t` on one of `hosts` (the VIP's last holders), or
        on any host if none of them had one."""
        rel = t - self.t0 + CAUSE_TOLERANCE
        for pick in (set(hosts), None):
            for e in reversed(self.result.executed):
                if e.t <= rel and (pick is None or e.host in pick):
                    return e.kind, e.host
        return "start", None

    def _unserved_deadline(self, ip: str, g0: float) -> float:
        """Invariant 1's deadline for a gap that began at g0 (inf: nobody can take it)."""
        order = self.vips[ip].order
        out = math.inf
        for n in order:
            a = self.hosts[n].eligible_since
            if a is not None:
                left = max((self.hosts[o].left_at for o in order if o != n), default=0.0)
                out = min(out, max(g0, a, left) + self.D[ip][n] + self.lag[n])
        return out + self.margin_client

    def _check_client(self, t: float, view: dict[str, list[str]]) -> None:
        for ip, answering in view.items():
            g0 = self.gap[ip]
            if answering:
                if g0 is not None:
                    dl = self._unserved_deadline(ip, g0)
                    cause, who = self._cause(g0, self.last_answer[ip])
                    allowed = None if math.isinf(dl) else dl - g0
                    self.result.gaps.append(
                        Gap(ip, round(g0 - self.t0, 3), round(t - g0, 3), allowed, cause, who)
                    )
                    self.gap[ip] = None
                    self.gap_flagged[ip] = False
                self.last_answer[ip] = answering
            else:
                if g0 is None:
                    self.gap[ip] = g0 = t
                dl = self._unserved_deadline(ip, g0)
                if t > dl and not self.gap_flagged[ip]:
                    self.gap_flagged[ip] = True
                    eligible = {
                        n: round(h.eligible_since - self.t0, 2)
                        for n, h in self.hosts.items()
                        if h.eligible_since is not None
                    }
                    self._violate(
                        "unserved",
                        ip,
                        f"no answer for {t - g0:.2f} s (bound {dl - g0:.2f} s) since "
                        f"t={g0 - self.t0:.2f}; eligible since {eligible}; "
                        f"states {self._states()}; cause {self._cause(g0, self.last_answer[ip])}",
                    )
            self._overlap("client", ip, answering, t, self.margin_client)

    def _check_truth(self, t: float) -> None:
        if not self.checking:
            return
        for ip, holders in self.truth.items():
            reachable = [n for n in holders if self.hosts[n].connected]
            self._overlap("truth", ip, reachable, t, self.margin_truth)
        for h in self.hosts.values():
            mine = [ip for ip, hs in self.truth.items() if h.name in hs]
            if h.state is HostState.STOPPED and mine and not h.stopped_flagged:
                h.stopped_flagged = True
                self._violate("stopped_host", h.name, f"holds {mine} while stopped")
            if (
                h.must_release
                and mine
                and t - h.link_down_at > self.cfg.release_bound
                and not h.release_flagged
            ):
                h.release_flagged = True
                self._violate(
                    "link_down_release",
                    h.name,
                    f"holds {mine} {t - h.link_down_at:.2f} s after its link went down "
                    f"({h.state.value})",
                )
            if h.state is HostState.DEMOTED:
                self._check_demoted(h, t, mine)
        match = self._matches_plan()
        if match is None:
            if self.match_since is None:
                self.match_since = t
        else:
            self.match_since = None

    def _check_demoted(self, h: Host, t: float, mine: list[str]) -> None:
        """Invariant 4 for a demote: DEMOTE_CHECK s after SIGUSR2 (before the demote ends and
        the hold-down that follows, when it may take them back), the host holds no VIP that
        another participant, eligible since at least 2 s before, could have taken."""
        if h.demote_checked or t - h.demoted_at < DEMOTE_CHECK:
            return
        h.demote_checked = True
        if t - h.demoted_at > DEMOTE_SECONDS + self.cfg.hold_down - 0.2:
            return  # looked too late (a busy driver): it may have taken them back by now
        takers = {
            n
            for n, x in self.hosts.items()
            if x.state in SERVING
            and x.eligible_since is not None
            and x.eligible_since <= h.demoted_at + DEMOTE_CHECK - 2.0
        }
        kept = [ip for ip in mine if takers & set(self.vips[ip].order)]
        if kept:
            self._violate(
                "demoted_release",
                h.name,
                f"holds {kept} {t - h.demoted_at:.2f} s after SIGUSR2 though {sorted(takers)} "
                "could take them",
            )

    def _check_engine_states(self) -> None:
        """Invariant 6: what each running native engine says it is master of, against the
        addresses its host has."""
        for h in self.hosts.values():
            if h.legacy or h.state not in STATUS_ASKED or h.frozen_at:
                continue
            try:
                doc = request(str(self.lab.control_socket(h.name)), {"cmd": "status"}, 2.0)
            except ControlError:
                continue  # starting or stopping; invariant 5 watches the process
            vip_if = self.lab.vip_iface(h.name)
            have = {a.split("/")[0] for a in self.lab.seg.addresses(h.name, vip_if)}
            for v in doc["status"]["vips"]:
                ip = v["address"].split("/")[0]
                key = (h.name, ip)
                if (v["state"] == "MASTER") == (ip in have):
                    self.mismatch.pop(key, None)
                    continue
                n = self.mismatch[key] = self.mismatch.get(key, 0) + 1
                if n == 2:
                    says = v["state"]
                    has = "has" if ip in have else "has not"
                    self._violate(
                        "engine_vs_kernel",
                        ip,
                        f"{h.name}'s engine says {says} (for {v['since']} s) but the host {has} "
                        f"the address, on two reads {self.cfg.state_period:g} s apart; "
                        f"states {self._states()}",
                        {h.name: self._log_tail(h.name, ip)},
                    )

    def _overlap(self, source: str, ip: str, hosts: list[str], t: float, margin: float) -> None:
        key = (source, ip)
        s = self.streaks.get(key)
        if len(hosts) >= 2:
            if s is None:
                s = self.streaks[key] = _Streak(t, set(hosts))
            s.hosts |= set(hosts)
            allowed = max(self.T[ip][n] + self.lag[n] for n in s.hosts) + margin
            if t - s.start > allowed and not s.flagged:
                s.flagged = True
                self._violate(
                    "two_holders",
                    ip,
                    f"{source}: {sorted(s.hosts)} for {t - s.start:.2f} s (bound {allowed:.2f} s) "
                    f"since t={s.start - self.t0:.2f}; states {self._states()}; "
                    f"cause {self._cause(s.start, sorted(s.hosts))}",
                )
        elif s is not None:
            allowed = max(self.T[ip][n] + self.lag[n] for n in s.hosts) + margin
            cause, who = self._cause(s.start, sorted(s.hosts))
            self.result.overlaps.append(
                Overlap(
                    ip,
                    source,
                    round(s.start - self.t0, 3),
                    round(t - s.start, 3),
                    round(allowed, 3),
                    sorted(s.hosts),
                    cause,
                    who,
                )
            )
            del self.streaks[key]

    def _states(self) -> dict[str, str]:
        return {n: h.state.value for n, h in self.hosts.items()}

    def _down(self) -> set[str]:
        return {n for n, h in self.hosts.items() if h.state is not HostState.UP}

    def _matches_plan(self) -> str | None:
        """None if every VIP is where the plan puts it, in the truth and the client's view;
        otherwise what differs."""
        down = self._down()
        diffs = []
        for ip, v in self.vips.items():
            want = [] if v.holder(down) is None else [v.holder(down)]
            truth = [n for n in self.truth.get(ip, []) if self.hosts[n].state is HostState.UP]
            seen = self.view.get(ip, [])
            if truth != want or seen != want:
                diffs.append(f"{ip}: want {want}, truth {truth}, client {seen}")
        if time.monotonic() - self.view_t > 1.0:
            diffs.append("no recent probe round")
        return "; ".join(diffs) or None

    def _quiet(self, now: float) -> bool:
        """A quiet check: wait `settle` after the last event and the last arrival, then every
        VIP must be on its plan holder (and is measured until it is)."""
        if any(
            h.state in (HostState.STARTING, HostState.RESTORING, HostState.STOPPING)
            for h in self.hosts.values()
        ):
            return False
        if self.quiet_deadline is None:
            arrivals = [h.eligible_since for h in self.hosts.values() if h.eligible_since]
            self.quiet_ref = max([self.last_event, *arrivals])
            self.quiet_deadline = self.quiet_ref + self.settle
            self.quiet_flagged = False
            self.say(f"t={now - self.t0:7.2f} quiet    down {sorted(self._down())}")
        if now < self.quiet_deadline:
            return False
        mismatch = self._matches_plan()
        settled = mismatch is None and self.match_since is not None
        if not settled and not self.quiet_flagged:
            self.quiet_flagged = True
            self._violate(
                "quiet",
                "cluster",
                f"not settled {self.settle:.2f} s after the last event: {mismatch or 'just now'}",
            )
        if not settled and now < self.quiet_deadline + POST_DEADLINE:
            return False
        after = None
        if settled and self.match_since is not None:
            after = round(max(self.match_since - self.quiet_ref, 0.0), 3)
        self.result.quiets.append(
            QuietCheck(round(now - self.t0, 3), sorted(self._down()), after, self.settle)
        )
        self.say(f"t={now - self.t0:7.2f} settled  after {after} s (bound {self.settle:.2f} s)")
        self.quiet_deadline = None
        self.last_event = time.monotonic()
        return True

    def _final_checks(self) -> None:
        """Every engine still runs, no log has a Traceback (the last lines are read too); gaps
        and overlaps still open are recorded as they stand."""
        for h in self.hosts.values():
            self._scan_log(h)
        self._check_processes(time.monotonic())
        self.checking = False
        for ip, g0 in self.gap.items():
            if g0 is not None:
                dl = self._unserved_deadline(ip, g0)
                cause, who = self._cause(g0, self.last_answer[ip])
                allowed = None if math.isinf(dl) else dl - g0
                secs = round(self.view_t - g0, 3)
                self.result.gaps.append(
                    Gap(ip, round(g0 - self.t0, 3), secs, allowed, cause, who, ongoing=True)
                )
        for (source, ip), st in self.streaks.items():
            allowed = max(self.T[ip][n] + self.lag[n] for n in st.hosts)
            allowed += self.margin_client if source == "client" else self.margin_truth
            cause, who = self._cause(st.start, sorted(st.hosts))
            secs = round(time.monotonic() - st.start, 3)
            self.result.overlaps.append(
                Overlap(
                    ip,
                    source,
                    round(st.start - self.t0, 3),
                    secs,
                    round(allowed, 3),
                    sorted(st.hosts),
                    cause,
                    who,
                    ongoing=True,
                )
            )


def lab_for(cfg: ChaosConfig, workdir: Path) -> Lab:
    if FIRST_VIP + cfg.vips > 150:
        raise ValueError("the storm's addresses (203.0.113.150-249) would meet the VIPs")
    return Lab(
        workdir,
        hosts=cfg.hosts,
        vips=cfg.vips,
        legacy=cfg.legacy,
        advbase=cfg.advbase,
        dead_ratio=cfg.dead_ratio,
        run_args=cfg.run_args,
        vip_links=tuple(cfg.vip_link_hosts),
        host_args={n: ("--ignore-ifstate",) for n in cfg.ignoring_hosts},
    )


def run_chaos(
    cfg: ChaosConfig, workdir: Path, say: Callable[[str], None] | None = None
) -> ChaosResult:
    """Build a lab in `workdir`, run the chaos, tear the lab down (also on failure) and check
    that none of its namespaces is left. chaos.json in `workdir` has everything seen."""
    workdir = Path(workdir)
    lab = lab_for(cfg, workdir)
    with lab:
        prefix = lab.seg.prefix
        run = ChaosRun(cfg, lab, say)
        try:
            result = run.run()
        finally:
            (workdir / "chaos.json").write_text(json.dumps(run.result.to_json(), indent=1))
    left = [n for n in ip_cmd("netns", "list").split() if n.startswith(prefix)]
    result.namespaces_left = left
    (workdir / "chaos.json").write_text(json.dumps(result.to_json(), indent=1))
    return result


def _wall(t: float) -> str:
    """`t` (time.time()) as logging's asctime writes it: local time, milliseconds."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f",{int(t * 1000) % 1000:03d}"


def printer(s: str) -> None:
    print(s, flush=True, file=sys.stdout)
