"""One host's announcements in BGP mode: for every VIP it takes part in, what it tells its
routers, decided from the plan and driven with `now` (no clock, no socket).

Theory of operation. Each VIP is in one of four states here:

    waiting    not announced yet: the hold-down after start, undrain or reload, then the stagger
    announced  announced with its planned rank (plan.bgp.announcement)
    leaving    announced as the worst route there is (MED 2**32-1, or more prepends than any
               rank): the router moves the traffic to the next host while this one still
               answers (make-before-break)
    withdrawn  not announced (drained, or the host is stopping)

- start(now): every VIP waits `hold_down`, then they come one by one, `stagger` apart: a host that
  returns takes its traffic back gradually, as in CARP mode.
- drain(now, ip): announced (or leaving) -> leaving until now + drain_wait, then withdrawn; waiting
  -> withdrawn at once (it never had traffic). The router's choice is not visible from the host,
  so the wait is a fixed time, long enough for an UPDATE to reach the router and its best-path run
  (measured: a few ms; bench/results/bgp.md); `drain_wait` is 2 s by default.
- undrain(now, ip): withdrawn -> waiting, back after the hold-down, staggered.
- set_sick(now, ips): a health check these VIPs depend on is not up here: they leave exactly as
  in a drain; when it is up again they come back after the hold-down, staggered (unless
  drained). A drained or sick VIP is never scheduled back until both are cleared.
- stop(now): like drain for every VIP; the engine stops the speaker once every VIP is withdrawn.
- reload(plan, now): VIPs that are new here wait (hold-down, staggered); VIPs this host no longer
  takes part in are withdrawn at once; the others keep their state, with their new rank.
- tick(now): the timed moves (waiting -> announced, leaving -> withdrawn). next_deadline() says
  when the next one is due.

Never announced: a VIP this host does not serve (it is withdrawn the moment the host stops
serving it; the engine keeps the address on the host until the route is gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from iprotate.cluster.model import IPAddress
from iprotate.plan.bgp import Announcement, announcement
from iprotate.plan.model import Plan, VipPlan

State = Literal["waiting", "announced", "leaving", "withdrawn"]


@dataclass
class _Vip:
    plan: VipPlan
    state: State
    due: float | None  # waiting: when it is announced; leaving: when it is withdrawn
    drained: bool = False  # an operator's drain (remembered across reloads)
    sick: bool = False  # a health check it depends on is not up on this host


class Announcer:
    """What one host announces, VIP by VIP. See the module docstring."""

    def __init__(
        self, plan: Plan, host: str, hold_down: float, stagger: float, drain_wait: float
    ) -> None:
        if plan.cluster.bgp is None:
            raise ValueError("the cluster has no [bgp] table")
        self.plan = plan
        self.host = host
        self.hold_down = hold_down
        self.stagger = stagger
        self.drain_wait = drain_wait
        self.stopping = False
        self.vips: dict[IPAddress, _Vip] = {
            v.ip: _Vip(v, "withdrawn", None) for v in plan.for_host(host)
        }

    # --- events ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Announce every VIP after the hold-down, one every `stagger` seconds."""
        self._schedule([v for v in self.vips.values() if not v.drained and not v.sick], now)

    def drain(self, now: float, ip: IPAddress | None = None) -> list[IPAddress]:
        """Make this host's route for `ip` (every VIP if None) the worst, then withdraw it."""
        out = []
        for v in self._select(ip):
            v.drained = True
            self._leave(v, now)
            out.append(v.plan.ip)
        return out

    def undrain(self, now: float, ip: IPAddress | None = None) -> list[IPAddress]:
        """Bring drained VIPs back after the hold-down, staggered."""
        back = [v for v in self._select(ip) if v.drained]
        for v in back:
            v.drained = False
        if not self.stopping:
            self._schedule([v for v in back if v.state in ("withdrawn", "leaving") and not v.sick],
                           now)  # fmt: skip
        return [v.plan.ip for v in back]

    def set_sick(self, now: float, sick: set[IPAddress]) -> list[IPAddress]:
        """The VIPs in `sick` depend on a check that is not up here: they leave as in a drain
        (worst route, then withdrawn); the others that were sick come back after the hold-down,
        staggered, unless drained. The VIPs whose sickness changed."""
        changed = []
        for ip, v in self.vips.items():
            now_sick = ip in sick
            if v.sick == now_sick:
                continue
            v.sick = now_sick
            changed.append(ip)
            if now_sick:
                self._leave(v, now)
        if not self.stopping:
            back = [self.vips[ip] for ip in changed if not self.vips[ip].sick]
            self._schedule([v for v in back if not v.drained], now)
        return changed

    def stop(self, now: float) -> None:
        """Leave every VIP (worst route, then withdrawn): the host is going away."""
        self.stopping = True
        for v in self.vips.values():
            self._leave(v, now)

    def reload(self, plan: Plan, now: float) -> tuple[list[IPAddress], list[IPAddress]]:
        """Take a new plan: (VIPs added here, VIPs removed here)."""
        self.plan = plan
        new = {v.ip: v for v in plan.for_host(self.host)}
        removed = [ip for ip in self.vips if ip not in new]
        for ip in removed:
            del self.vips[ip]  # withdrawn at once: the route goes with the next configuration
        added = []
        for ip, vp in new.items():
            if ip in self.vips:
                self.vips[ip].plan = vp
            else:
                self.vips[ip] = _Vip(vp, "withdrawn", None)
                added.append(ip)
        if not self.stopping:
            self._schedule([self.vips[ip] for ip in added], now)
        return added, removed

    def tick(self, now: float) -> bool:
        """Make the moves that are due; True if what is announced changed."""
        changed = False
        for v in self.vips.values():
            if v.due is None or v.due > now:
                continue
            v.state = "announced" if v.state == "waiting" else "withdrawn"
            v.due = None
            changed = True
        return changed

    # --- queries ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        dues = [v.due for v in self.vips.values() if v.due is not None]
        return min(dues) if dues else None

    def routes(self) -> tuple[Announcement, ...]:
        """What the speaker must announce now, in plan order."""
        out = []
        for v in self.vips.values():
            if v.state in ("announced", "leaving"):
                out.append(announcement(self.plan.cluster, v.plan, self.host, v.state == "leaving"))
        return tuple(out)

    def state(self, ip: IPAddress) -> State:
        return self.vips[ip].state

    def drained(self) -> list[IPAddress]:
        return [ip for ip, v in self.vips.items() if v.drained]

    def all_withdrawn(self) -> bool:
        return all(v.state == "withdrawn" for v in self.vips.values())

    def status(self) -> list[dict[str, object]]:
        """Per VIP: its rank here, what is announced and the MED/prepend it carries."""
        out: list[dict[str, object]] = []
        for ip, v in self.vips.items():
            a = announcement(self.plan.cluster, v.plan, self.host, v.state == "leaving")
            item: dict[str, object] = {
                "vip": str(ip),
                "prefix": a.prefix,
                "owner": v.plan.owner,
                "rank": a.rank,
                "state": v.state,
                "drained": v.drained,
                "sick": v.sick,
            }
            if v.state in ("announced", "leaving"):
                item |= {"med": a.med, "prepend": a.prepend}
            out.append(item)
        return out

    # --- helpers ---------------------------------------------------------------------------

    def _select(self, ip: IPAddress | None) -> list[_Vip]:
        if ip is None:
            return list(self.vips.values())
        return [self.vips[ip]] if ip in self.vips else []

    def _leave(self, v: _Vip, now: float) -> None:
        if v.state in ("announced", "leaving"):
            if v.state == "announced":
                v.state, v.due = "leaving", now + self.drain_wait
        else:
            v.state, v.due = "withdrawn", None

    def _schedule(self, vips: list[_Vip], now: float) -> None:
        # Owned VIPs first: a returning host takes back its own traffic before its backup duties
        # (which carry no traffic while the owner lives anyway).
        order = sorted(vips, key=lambda v: (v.plan.rank(self.host) or 0, int(v.plan.ip)))
        for i, v in enumerate(order):
            if v.state == "announced":
                continue
            v.state, v.due = "waiting", now + self.hold_down + i * self.stagger
