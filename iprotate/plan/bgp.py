"""The plan as BGP announcements: per (VIP, host), the attributes that rank the host's route.

Pure. A router picks, among the routes for one /32 (IPv6: /128), the best by the standard
rules: shorter AS path first, then (between routes from one neighbour AS, or always with BIRD's
`med metric`) the lower MED. So the plan's failover order becomes:

- rank "med" (the default): MED = med_base + rank * med_step; the owner's route is the best, each
  backup's one step behind, in the plan's order;
- rank "prepend": the host's AS prepended `rank` times (the owner none), for routers that compare
  MEDs only within one AS or not at all;
- rank "community": the community (asn, rank) on every route and the MED as in "med"; for a
  router whose policy turns the community into a local preference.

Every route also carries the community (asn, vip_plan_id): hosts whose plans for a VIP disagree
show on the router as routes of one prefix with different ids (drift).

A draining host (or one whose check failed) announces its routes as the worst there can be
(`worst`) before it withdraws them: make-before-break.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from iprotate.cluster.model import BgpSettings, Cluster
from iprotate.plan.model import Plan, VipPlan

WORST_MED = 4294967295  # 2**32 - 1: no planned route is ever this bad
WORST_PREPEND = 16  # a draining host's prepends, at least: more if the VIP's order is deeper


@dataclass(frozen=True)
class Announcement:
    """What one host announces for one VIP: a /32 (IPv6: a /128) and the attributes that give
    its rank."""

    prefix: str  # "203.0.113.10/32", "2001:db8::10/128"
    host: str
    rank: int  # 0 for the owner
    med: int
    prepend: int  # extra copies of the host's AS on the path
    communities: tuple[tuple[int, int], ...]
    plan_id: tuple[int, int] = (0, 0)  # the community that names this VIP's plan (drift)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "host": self.host,
            "rank": self.rank,
            "med": self.med,
            "prepend": self.prepend,
            "communities": [f"{a}:{b}" for a, b in self.communities],
            "plan_id": f"{self.plan_id[0]}:{self.plan_id[1]}",
        }


def prefix_of(v: VipPlan) -> str:
    """The host route announced for a VIP, whatever prefix it is added with."""
    return f"{v.ip}/{v.ip.max_prefixlen}"


def announcement(cluster: Cluster, v: VipPlan, host: str, drained: bool = False) -> Announcement:
    """What `host` announces for `v` (it must take part in it); `drained`: the worst route."""
    s = cluster.bgp
    if s is None:
        raise ValueError("the cluster has no [bgp] table")
    rank = v.rank(host)
    if rank is None:
        raise ValueError(f"{host} takes no part in {v.address}")
    asn = cluster.asn_of(host) or 0
    med = WORST_MED if drained else s.med_base + rank * s.med_step
    prepend = 0
    communities: tuple[tuple[int, int], ...] = ()
    if s.rank == "prepend":
        # cluster.backups allows 255 backups: a fixed 16 would rank a draining host above the
        # 17th backup. One more than the VIP's deepest rank is worse than every planned route.
        prepend = max(WORST_PREPEND, len(v.order)) if drained else rank
    elif s.rank == "community":
        communities = ((_community_asn(s, asn), 0xFFFF if drained else rank),)
    pid = (_community_asn(s, asn), vip_plan_id(cluster, v))
    return Announcement(prefix_of(v), host, rank, med, prepend, communities, pid)


def vip_plan_id(cluster: Cluster, v: VipPlan) -> int:
    """A 16-bit name for this VIP's plan (its order and how ranks are expressed), carried as a
    community on every host's route: routes of one prefix with different ids on the router are
    hosts running different plans for it (drift). Per VIP, so a reload that adds or removes other
    VIPs changes no other route. 0x8000..0xFFFE: never a rank's community value."""
    s = cluster.bgp
    assert s is not None
    text = f"{v.ip} {' '.join(v.order)} {s.rank} {s.med_base} {s.med_step}"
    return 0x8000 | (int.from_bytes(hashlib.sha256(text.encode()).digest()[:2], "big") % 0x7FFF)


def _community_asn(s: BgpSettings, asn: int) -> int:
    """Standard communities hold a 16-bit AS: a 32-bit one is written as AS_TRANS (23456)."""
    return asn if asn < 65536 else 23456


def announcements(plan: Plan, host: str) -> tuple[Announcement, ...]:
    """Everything `host` announces when all is well: one route per VIP it takes part in."""
    return tuple(announcement(plan.cluster, v, host) for v in plan.for_host(host))


def preference_key(a: Announcement) -> tuple[int, int]:
    """How a router orders these routes (lower is better): AS path length, then MED."""
    return (a.prepend, a.med)


def table(plan: Plan) -> list[list[Any]]:
    """Rows for `iprotate plan` in BGP mode: per VIP its routes, best first."""
    rows = []
    for v in plan.vips:
        anns = [announcement(plan.cluster, v, h) for h in v.order]
        rows.append([prefix_of(v), v.owner, " > ".join(_describe(a) for a in anns)])
    return rows


def _describe(a: Announcement) -> str:
    extra = f" +{a.prepend}as" if a.prepend else ""
    comm = "".join(f" c{x}:{y}" for x, y in a.communities)
    return f"{a.host}(med {a.med}{extra}{comm})"
