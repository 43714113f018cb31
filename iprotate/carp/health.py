"""The state of one health check on this host: rise/fall counting, pure (no clock, no process).

The engine (iprotate.engine.checks) runs the check and feeds each result here with `now`; what a
check that is not up does to the VIPs is a CARP rule (iprotate.carp.machine, "Sick"), applied by
the node. A check starts `unknown` when the daemon starts: its VIPs are handled as sick until its
first pass (a host whose service is down must not take its VIPs back first and hand them over
again later; `rise` passes would keep a host with a long interval out for rise x interval after
every start), and it goes down after `fall` failures. It starts `up` when a reload adds it (a
reload must not touch healthy VIPs: a new check that fails goes down after `fall` failures like
any other), but `unknown` when a VIP of it is sick here at the reload (a reload must not heal a
sick VIP either: a check renamed while its service is down would hand the VIP back to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from iprotate.cluster.model import Check, IPAddress

Health = Literal["unknown", "up", "down"]
# The output line or error kept per check, for status: one line, bounded.
MAX_DETAIL = 200


@dataclass(frozen=True)
class HealthChange:
    """A check's transition, for the log, the hooks and the metrics."""

    name: str
    old: Health
    new: Health
    why: str  # the last run's output line or error
    count: int  # consecutive results that made it (of `needed`)
    needed: int  # fall or rise

    def line(self, host: str) -> str:
        """`check web on alpha: up -> down: connect refused (2/2)`."""
        return (
            f"check {self.name} on {host}: {self.old} -> {self.new}: {self.why} "
            f"({self.count}/{self.needed})"
        )


@dataclass
class CheckState:
    """One check's rise/fall counter and what status shows of it."""

    check: Check
    state: Health = "unknown"
    since: float = 0.0
    streak: int = 0  # consecutive results against the current state
    last_ok: bool | None = None
    detail: str = "not run yet"
    last_run: float | None = None
    runs: int = 0
    failures: int = 0
    direction: bool | None = None  # while unknown: which way the streak counts
    last_seconds: float = 0.0  # how long the last run took
    seconds_total: float = 0.0  # of every run (metrics)
    vips: frozenset[IPAddress] = field(init=False)  # the check's VIPs, for lookups

    def __post_init__(self) -> None:
        self.vips = frozenset(self.check.vips)

    @property
    def up(self) -> bool:
        return self.state == "up"

    def result(
        self, now: float, ok: bool, detail: str, seconds: float = 0.0
    ) -> HealthChange | None:
        """One run's result: `ok`, its output line or error and how long it took. The transition
        it makes, if any."""
        detail = one_line(detail)
        self.last_seconds = seconds
        self.seconds_total += seconds
        self.last_ok, self.detail, self.last_run = ok, detail, now
        self.runs += 1
        self.failures += 0 if ok else 1
        c = self.check
        if self.state == "unknown":
            # One pass is enough to start (`rise` is for coming back); `fall` failures to go down.
            if self.direction is not ok:
                self.streak = 0
            self.direction = ok
            self.streak += 1
            target: Health = "up" if ok else "down"
            needed = 1 if ok else c.fall
        else:
            if (self.state == "up") == ok:
                self.streak = 0
                return None
            self.streak += 1
            target = "down" if self.state == "up" else "up"
            needed = c.fall if target == "down" else c.rise
        if self.streak < needed:
            return None
        change = HealthChange(c.name, self.state, target, detail, self.streak, needed)
        self.state, self.since, self.streak = target, now, 0
        return change

    def reconfigure(self, check: Check) -> None:
        """A reload changed the check (same name): keep its state, count with the new bounds."""
        self.check = check
        self.vips = frozenset(check.vips)


def one_line(text: str) -> str:
    """The last non-empty line of `text`, printable and bounded (it goes into logs and JSON)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return line[:MAX_DETAIL] or "no output"
