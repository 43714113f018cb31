"""The validated cluster: what the cluster file says, as immutable values.

Nothing here reads files or talks to the network; :mod:`iprotate.cluster.loader` builds these
from TOML and the rest of the code sees only them.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Literal

Engine = Literal["iprotate", "ucarp", "freebsd", "keepalived"]
ENGINES: tuple[str, ...] = ("iprotate", "ucarp", "freebsd", "keepalived")
Rank = Literal["med", "prepend", "community"]
CheckKind = Literal["tcp", "http", "exec"]
# A VIP, a group or an advert's source can be of either family; a file may mix them.
IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface

DEFAULT_GROUP = IPv4Address("224.0.0.18")
# FreeBSD's and OpenBSD's CARP over IPv6 (the address IANA gave VRRP, link-local scope).
DEFAULT_GROUP6 = IPv6Address("ff02::12")

# The syslog facilities `[run] syslog` / `--syslog` accept: the ones syslog(3) on Linux names
# (kern is left out: syslog(3) turns it into user, as local programs may not pose as the kernel).
SYSLOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "lpr", "mail", "news", "syslog", "user", "uucp",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip


@dataclass(frozen=True)
class BgpRouter:
    """A router a host peers with in BGP mode: an IPv4 router carries the IPv4 VIPs, an IPv6
    router (a session over IPv6) the IPv6 VIPs."""

    address: IPv4Address | IPv6Address
    asn: int


@dataclass(frozen=True)
class Host:
    """One member of the cluster."""

    name: str
    address: IPv4Address  # CARP source address (ucarp --srcip)
    interface: str  # where adverts flow
    vip_interface: str  # where the VIPs are added (often the same as `interface`)
    weight: float = 1.0
    engine: Engine = "iprotate"
    preempt: bool = True
    # IPv6 CARP source (global, ULA or link-local of `interface`); needed to take part in IPv6
    # VIPs, which ucarp hosts never do (ucarp speaks no IPv6).
    address6: IPv6Address | None = None
    bgp_asn: int | None = None  # BGP mode: this host's AS, when it is not [bgp].asn
    bgp_routers: tuple[BgpRouter, ...] | None = None  # BGP mode: its own routers, not [bgp]'s

    @property
    def speaks_ipv6(self) -> bool:
        """Whether this host can hold IPv6 VIPs (an iprotate host with an IPv6 source)."""
        return self.engine != "ucarp" and self.address6 is not None

    def source_for(self, vip: IPAddress) -> IPAddress | None:
        """The source address of this host's adverts for a VIP of `vip`'s family."""
        return self.address6 if vip.version == 6 else self.address


@dataclass(frozen=True)
class Vip:
    """One virtual address as the file gives it (before planning)."""

    address: IPInterface  # with the prefix it is added with
    source: str  # key path in the file, for messages: "vips[3]" or "vips[2].pool[5]"
    group: IPAddress = DEFAULT_GROUP  # of the VIP's family
    vhid: int | None = None  # pinned vhid, or None to derive it
    owner: str | None = None  # pinned preferred owner
    up_script: str | None = None
    down_script: str | None = None


@dataclass(frozen=True)
class RunSettings:
    """[run]: how `iprotate run` behaves (the same on every host; options on the command line
    override them)."""

    hold_down: float = 3.0  # seconds after start or link up before taking VIPs back
    stagger: float = 0.1  # seconds between two VIPs taken back
    garp_refresh: float = 60.0  # seconds between gratuitous ARPs while master (0: ucarp's two)
    control_socket: str | None = None  # None: /run/iprotate/<host>.sock; "": no control socket
    control_group: str | None = None  # a group allowed to use the control socket besides root
    state_dir: str | None = "/var/lib/iprotate"  # the drained state survives restarts here
    metrics: str | None = None  # "127.0.0.1:9650": serve Prometheus metrics there
    hook_timeout: float = 10.0
    ignore_ifstate: bool = False  # ucarp's -S: keep serving when the advert link loses carrier
    syslog: str | None = None  # a facility (SYSLOG_FACILITIES): log to /dev/log, not stderr


@dataclass(frozen=True)
class BgpSettings:
    """[bgp]: the plan announced as BGP routes (one /32 per VIP) instead of CARP on a segment.

    How a rank is expressed: `med` (owner med_base, each backup med_step more), `prepend` (the
    host's AS repeated once more per rank) or `community` (community (asn, rank) on each route,
    for a router whose policy maps it to a local preference)."""

    asn: int  # the hosts' AS (a host may set its own with bgp_asn)
    routers: tuple[BgpRouter, ...]  # shared routers (a host may list its own with bgp_routers)
    hold_time: int = 3  # seconds (BGP: 3..65535)
    bfd: bool = False  # sub-second failure detection, when the router runs BFD too
    rank: Rank = "med"
    med_base: int = 100
    med_step: int = 100
    drain_wait: float = 2.0  # seconds between the worst announcement and the withdrawal
    speaker: str = "bird"  # the BIRD 2 binary (path or name on PATH)
    birdc: str = "birdc"


@dataclass(frozen=True)
class Check:
    """[[checks]]: a health check whose failure on a host takes that host out of its VIPs.

    `kind` says what `target` is: "tcp" connects to `target` ("HOST:PORT", the host an IP literal),
    "http" GETs the URL `target` (2xx/3xx passes, or exactly `expect`), "exec" runs `argv` (argv[0]
    == target, an absolute path; exit 0 passes; no shell), as `user` if given.
    """

    name: str
    kind: CheckKind
    target: str
    vips: tuple[IPAddress, ...]  # the VIPs that depend on it (the file's default: all)
    hosts: tuple[str, ...] | None = None  # where it runs; None: every host taking part in `vips`
    argv: tuple[str, ...] = ()  # exec only
    expect: int | None = None  # http only: the one status that passes
    user: str | None = None  # exec only: run as this user
    interval: float = 1.0  # seconds between the starts of two runs
    timeout: float = 0.5  # a run that takes longer fails (and is killed)
    fall: int = 2  # consecutive failures before the check is down
    rise: int = 2  # consecutive passes before it is up again
    source: str = ""  # key path in the file, for messages: "checks[0]"

    def runs_on(self, host: str, host_vips: frozenset[IPAddress]) -> bool:
        """Whether the check runs on `host`, which takes part in the VIPs `host_vips`."""
        if self.hosts is not None:
            return host in self.hosts
        return not host_vips.isdisjoint(self.vips)


@dataclass(frozen=True)
class Cluster:
    """The whole cluster file, validated."""

    path: str  # the file it came from, for messages
    password: bytes
    advbase: int
    dead_ratio: int
    backups: int  # how many backup hosts each VIP gets (capped at hosts - 1)
    hosts: tuple[Host, ...]
    vips: tuple[Vip, ...]
    up_script: str | None = None
    down_script: str | None = None
    warnings: tuple[str, ...] = ()
    run: RunSettings = RunSettings()
    bgp: BgpSettings | None = None  # None: CARP on one segment

    def routers_of(self, host: str) -> tuple[BgpRouter, ...]:
        """The routers `host` peers with in BGP mode (its own, else the shared ones)."""
        h = self.host(host)
        if h.bgp_routers is not None:
            return h.bgp_routers
        return self.bgp.routers if self.bgp is not None else ()

    def asn_of(self, host: str) -> int | None:
        """The AS `host` announces from in BGP mode."""
        h = self.host(host)
        if h.bgp_asn is not None:
            return h.bgp_asn
        return self.bgp.asn if self.bgp is not None else None

    checks: tuple[Check, ...] = ()

    def host(self, name: str) -> Host:
        """The host called `name` (KeyError if there is none)."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)


class ClusterError(Exception):
    """A cluster file that cannot be used. Each problem names the key path and what is allowed."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{path}: {p}" for p in self.problems))
