"""BIRD 2 as BGP mode's speaker: the configuration iprotate writes for it, and what its control
socket says back. Pure text in, text out.

iprotate owns the whole file: one static protocol per family holds the routes this host announces
now (each with the MED, prepends or community of its rank: /32s in `iprotate_vips`, /128s in
`iprotate_vips6`), one BGP session per router exports exactly those of the router's family (an
IPv4 router the /32s, an IPv6 router, peered from the host's address6, the /128s), nothing is
imported and nothing goes into the kernel. A change is a new file and
`birdc configure`: BIRD then sends only the UPDATEs that differ (bench/results/bgp.md: the router
sees it tens of ms later), and the sessions stay up.
"""

from __future__ import annotations

from dataclasses import dataclass

from iprotate.cluster.model import Cluster
from iprotate.plan.bgp import Announcement

STATIC = "iprotate_vips"
STATIC6 = "iprotate_vips6"


def protocol_name(index: int) -> str:
    """The BIRD protocol of the router at `index` in the host's router list."""
    return f"router{index}"


def config(cluster: Cluster, host: str, routes: tuple[Announcement, ...]) -> str:
    """The BIRD 2 configuration that announces `routes` from `host` to its routers."""
    s = cluster.bgp
    if s is None:
        raise ValueError("the cluster has no [bgp] table")
    h = cluster.host(host)
    asn = cluster.asn_of(host)
    lines = [
        f"# Written by iprotate for host {host}; every change is overwritten.",
        f"router id {h.address};",
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        "protocol device { scan time 10; }",
    ]
    if s.bfd:
        lines += [
            "protocol bfd {",
            '    interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };',
            "}",
        ]
    for name, channel, family in ((STATIC, "ipv4", 4), (STATIC6, "ipv6", 6)):
        lines += [f"protocol static {name} {{", f"    {channel};"]
        for a in routes:
            if _family(a) != family:
                continue
            attrs = [f"bgp_med = {a.med};"]
            attrs += [f"bgp_path.prepend({asn});"] * a.prepend
            lines.append(f"    route {a.prefix} blackhole {{ {' '.join(attrs)} }};")
        lines.append("}")
    # Communities are added on export: set in a static route's block, BIRD 2.0.12 sent the
    # route without its MED (measured against the lab's router).
    lines.append("filter iprotate_export {")
    lines.append(f'    if proto != "{STATIC}" && proto != "{STATIC6}" then reject;')
    for a in routes:
        adds = " ".join(f"bgp_community.add(({x}, {y}));" for x, y in (*a.communities, a.plan_id))
        lines.append(f"    if net = {a.prefix} then {{ {adds} }}")
    lines += ["    accept;", "}"]
    for i, r in enumerate(cluster.routers_of(host)):
        v6 = r.address.version == 6
        # The loader makes sure a host with an IPv6 router has a global address6.
        local = h.address6 if v6 else h.address
        channel = "ipv6" if v6 else "ipv4"
        lines += [
            f"protocol bgp {protocol_name(i)} {{",
            f'    description "{r.address}";',
            f"    local {local} as {asn};",
            f"    neighbor {r.address} as {r.asn};",
            f"    hold time {s.hold_time};",
            f"    keepalive time {max(1, s.hold_time // 3)};",
            # Restart gracefully and the router keeps our routes after we die: never.
            "    graceful restart off;",
            "    connect delay time 1;",
            "    connect retry time 2;",
            "    error wait time 1, 10;",
            f"    bfd {'on' if s.bfd else 'off'};",
            f"    {channel} {{ import none; export filter iprotate_export; next hop self; }};",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _family(a: Announcement) -> int:
    return 6 if ":" in a.prefix else 4


@dataclass(frozen=True)
class Session:
    """One BGP session as `birdc show protocols` reports it."""

    name: str
    state: str  # BIRD's: up, start, down, ...
    info: str  # Established, Active, Connect, Idle, ...

    @property
    def established(self) -> bool:
        return self.info.startswith("Established")


def parse_protocols(text: str) -> dict[str, Session]:
    """The BGP sessions in the output of `birdc show protocols`."""
    out: dict[str, Session] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[1] == "BGP":
            info = " ".join(f[5:]) if len(f) > 5 else ""
            out[f[0]] = Session(f[0], f[3], info)
    return out
