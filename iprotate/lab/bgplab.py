"""The BGP lab: hosts in BGP mode peering with a real router (Debian's BIRD 2), a client behind it.

    client (203.0.113.250/29) --- eth2 router eth1 (198.51.100.254, AS 64512) --- br0
                                                        |                           |
                                   alpha 198.51.100.1, bravo .2, ... (AS 64513, iprotate run)

Dual stack (`vips6`): the same again over IPv6, beside it: the router at 2001:db8::254 with one
IPv6 session per host (from the host's 2001:db8::<n>), the client at 2001:db8:250::2/64 behind
it, IPv6 VIPs 2001:db8:113::a and up announced as /128s.

The router runs BIRD 2 with one session per host, `med metric` and `deterministic med` (compare
MEDs across all the hosts' routes), and installs its best routes in its kernel, so the client's
pings to a VIP go where the router's best path says. The router's table (`birdc show route`, on
its own control socket) is the truth the lab and the tests read.

Only namespaces of its own (iprotate.lab.netns.Segment), lab addresses and private ASNs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from iprotate.engine.bgp import tool
from iprotate.lab.lab import NAMES, PASSWORD
from iprotate.lab.netns import VIP_NET, VIP_NET6, Segment, host_address6, ip

ROUTER = "router"
ROUTER_ADDRESS = "198.51.100.254"
ROUTER_AS = 64512
HOSTS_AS = 64513
CLIENT = "client"
CLIENT_NET = "203.0.113.248/29"  # behind the router; the lab's VIPs stay below it
CLIENT_ADDRESS = "203.0.113.250"
ROUTER_CLIENT_SIDE = "203.0.113.249"
FIRST_VIP = 10
ROUTER_ADDRESS6 = host_address6(254)  # 2001:db8::254
CLIENT_ADDRESS6 = "2001:db8:250::2"
ROUTER_CLIENT_SIDE6 = "2001:db8:250::1"
VIP6_BASE = "2001:db8:113::"
MAX_VIPS = 200
METRICS_PORT = 9650


def bgp_cluster_toml(
    hosts: int,
    vips: int,
    bfd: bool = False,
    hold_time: int = 3,
    rank: str = "med",
    drain_wait: float = 1.0,
    hold_down: float = 1.0,
    stagger: float = 0.0,
    vips6: int = 0,
) -> str:
    """The cluster file of a BGP lab: hosts alpha, bravo, ... in AS 64513, one shared router
    (with `vips6` IPv6 VIPs: the router's IPv6 address as a second router, and each host's
    address6)."""
    if not 1 <= hosts <= len(NAMES) or not 1 <= vips <= MAX_VIPS or not 0 <= vips6 <= MAX_VIPS:
        raise ValueError(
            f"a BGP lab has 1..{len(NAMES)} hosts, 1..{MAX_VIPS} VIPs and 0..{MAX_VIPS} IPv6 VIPs"
        )
    lines = [
        "# Written by `iprotate lab --bgp`.",
        "[cluster]",
        'interface = "eth1"',
        # The VIPs as /32s on the loopback: a host accepts what it is sent (a dummy interface
        # does the same where the kernel has the module).
        'vip_interface = "lo"',
        'password_file = "password"',
        "",
        "[run]",
        f"hold_down = {hold_down}",
        f"stagger = {stagger}",
        f'metrics = "127.0.0.1:{METRICS_PORT}"',  # in each host's own namespace
        "",
        "[bgp]",
        f"asn = {HOSTS_AS}",
        f'routers = [{{ address = "{ROUTER_ADDRESS}", asn = {ROUTER_AS} }}'
        + (f', {{ address = "{ROUTER_ADDRESS6}", asn = {ROUTER_AS} }}]' if vips6 else "]"),
        f"hold_time = {hold_time}",
        f"bfd = {json.dumps(bfd)}",
        f'rank = "{rank}"',
        f"drain_wait = {drain_wait}",
    ]
    for i in range(hosts):
        lines += ["", "[[hosts]]", f'name = "{NAMES[i]}"', f'address = "198.51.100.{i + 1}"']
        if vips6:
            lines.append(f'address6 = "{host_address6(i + 1)}"')
    last = FIRST_VIP + vips - 1
    lines += ["", "[[vips]]", f'pool = "203.0.113.{FIRST_VIP}-203.0.113.{last}/32"', ""]
    if vips6:
        first6, last6 = vip6(0), vip6(vips6 - 1)
        lines += ["[[vips]]", f'pool = "{first6}-{last6}/128"', ""]
    return "\n".join(lines)


def vip6(k: int) -> str:
    """The lab's k-th IPv6 VIP (from 0): 2001:db8:113::a, ::b, ..."""
    return f"{VIP6_BASE}{FIRST_VIP + k:x}"


def router_conf(hosts: list[str], bfd: bool, hold_time: int, log: str, v6: bool = False) -> str:
    lines = [
        f"router id {ROUTER_ADDRESS};",
        f'log "{log}" all;',
        "protocol device { scan time 10; }",
        "protocol kernel { ipv4 { import none; export all; }; }",
    ]
    if v6:
        lines.append("protocol kernel { ipv6 { import none; export all; }; }")
    if bfd:
        lines += [
            "protocol bfd {",
            '    interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };',
            "}",
        ]
    sessions = [
        (f"h_{n}", ROUTER_ADDRESS, f"198.51.100.{i + 1}", "ipv4") for i, n in enumerate(hosts)
    ]
    if v6:
        sessions += [
            (f"h6_{n}", ROUTER_ADDRESS6, host_address6(i + 1), "ipv6") for i, n in enumerate(hosts)
        ]
    for proto, local, neighbor, channel in sessions:
        lines += [
            f"protocol bgp {proto} {{",
            f"    local {local} as {ROUTER_AS};",
            f"    neighbor {neighbor} as {HOSTS_AS};",
            f"    hold time {hold_time};",
            "    connect delay time 1;",
            "    connect retry time 2;",
            "    error wait time 1, 10;",
            f"    bfd {'on' if bfd else 'off'};",
            "    med metric on;",
            "    deterministic med on;",
            f"    {channel} {{ import all; export none; }};",
            "}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Path_:
    """One route the router has for a prefix."""

    host: str
    best: bool
    med: int | None
    since: str  # when the router last changed this route (BIRD's timestamp)
    communities: tuple[tuple[int, int], ...] = ()


def parse_routes(text: str) -> dict[str, list[Path_]]:
    """`birdc show route all` -> prefix -> the paths (from which host, best or not, MED)."""
    out: dict[str, list[Path_]] = {}
    prefix = None
    current: dict[str, Any] | None = None

    def flush() -> None:
        if current is not None and prefix is not None:
            out.setdefault(prefix, []).append(Path_(**current))

    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        if ("/" in f[0] and len(f) > 2 and f[1] == "unicast") or f[0] == "unicast":
            flush()
            if f[0] != "unicast":
                prefix = f[0]
                f = f[1:]
            proto = f[1].lstrip("[")
            current = {
                "host": proto.split("_", 1)[1] if proto.startswith(("h_", "h6_")) else proto,
                "best": "*" in f,
                "med": None,
                "since": f[2].rstrip("]") if len(f) > 2 else "",
            }
        elif f[0] == "BGP.med:" and current is not None:
            current["med"] = int(f[1])
        elif f[0] == "BGP.community:" and current is not None:
            current["communities"] = tuple(
                (int(a), int(b))
                for a, b in (c.strip("()").split(",") for c in f[1:] if c.startswith("("))
            )
    flush()
    return out


@dataclass
class BgpLab:
    """A BGP lab. Use as a context manager; everything it made goes on exit."""

    hosts: int = 3
    vips: int = 12
    bfd: bool = False
    hold_time: int = 3
    rank: str = "med"
    drain_wait: float = 1.0
    hold_down: float = 1.0
    stagger: float = 0.0
    workdir: str | None = None
    checks: str = ""  # [[checks]] tables (TOML) for the cluster file
    vips6: int = 0  # IPv6 VIPs too (dual stack: IPv6 sessions, an IPv6 client)
    seg: Segment = field(default_factory=Segment)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = list(NAMES[: self.hosts])
        self.dir = Path(self.workdir or f"/tmp/iprotate-bgplab-{self.seg.prefix}")
        self.cluster_file = self.dir / "cluster.toml"
        self.router_ctl = str(self.dir / "router.ctl")

    # --- building ------------------------------------------------------------------------------

    def __enter__(self) -> BgpLab:
        self.seg.__enter__()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _build(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        pw = self.dir / "password"
        pw.write_text(PASSWORD + "\n")
        pw.chmod(0o600)
        self.write_cluster()
        seg = self.seg
        seg.add(ROUTER, 254)
        for i, name in enumerate(self.names):
            seg.add(name, i + 1)
            (self.dir / name).mkdir(exist_ok=True)
            m = seg.members[name]
            # Routed, not on-link: the VIPs reach the client through the router.
            ip("-n", m.netns, "route", "del", VIP_NET, "dev", m.interface)
            ip("-n", m.netns, "route", "add", "default", "via", ROUTER_ADDRESS)
        r = seg.members[ROUTER]
        ip("-n", r.netns, "route", "del", VIP_NET, "dev", r.interface)
        ip("netns", "exec", r.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        seg.add(CLIENT, 200)
        c = seg.members[CLIENT]
        # The client's cable goes to a bridge of its own with the router's second NIC.
        seg.plug(ROUTER, "eth2", f"{ROUTER_CLIENT_SIDE}/29", bridge="br1")
        ip("-n", seg.switch, "link", "set", c.port, "master", "br1")
        ip("-n", c.netns, "route", "del", VIP_NET, "dev", c.interface)
        ip("-n", c.netns, "addr", "flush", "dev", c.interface)
        ip("-n", c.netns, "addr", "add", f"{CLIENT_ADDRESS}/29", "dev", c.interface)
        ip("-n", c.netns, "route", "add", "default", "via", ROUTER_CLIENT_SIDE)
        if self.vips6:
            self._build6()
        conf = self.dir / "router.conf"
        conf.write_text(
            router_conf(
                self.names, self.bfd, self.hold_time, str(self.dir / "router.log"), self.vips6 > 0
            )
        )
        self.procs[ROUTER] = seg.spawn(
            ROUTER, [tool("bird"), "-f", "-c", str(conf), "-s", self.router_ctl],
            log=str(self.dir / "router.out"),
        )  # fmt: skip
        for name in self.names:
            self.start(name)

    def _build6(self) -> None:
        """IPv6 beside IPv4: routed through the router as well (the members' on-link route to
        the IPv6 VIP net goes), the client on a /64 of its own behind the router."""
        seg = self.seg
        for name in self.names:
            m = seg.members[name]
            ip("-n", m.netns, "-6", "route", "del", VIP_NET6, "dev", m.interface)
            ip("-n", m.netns, "-6", "route", "add", "default", "via", ROUTER_ADDRESS6)
        r = seg.members[ROUTER]
        ip("-n", r.netns, "-6", "route", "del", VIP_NET6, "dev", r.interface)
        ip("netns", "exec", r.netns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        ip("-n", r.netns, "addr", "add", f"{ROUTER_CLIENT_SIDE6}/64", "dev", "eth2", "nodad")
        c = seg.members[CLIENT]
        ip("-n", c.netns, "-6", "route", "del", VIP_NET6, "dev", c.interface, check=False)
        ip("-n", c.netns, "addr", "add", f"{CLIENT_ADDRESS6}/64", "dev", c.interface, "nodad")
        ip("-n", c.netns, "-6", "route", "add", "default", "via", ROUTER_CLIENT_SIDE6)

    def write_cluster(self, vips: int | None = None) -> None:
        text = bgp_cluster_toml(
            self.hosts, vips or self.vips, self.bfd, self.hold_time, self.rank,
            self.drain_wait, self.hold_down, self.stagger, self.vips6,
        )  # fmt: skip
        self.cluster_file.write_text(text + self.checks)

    def control_socket(self, name: str) -> str:
        return str(self.dir / name / "iprotate.sock")

    # --- hosts ---------------------------------------------------------------------------------

    def start(self, name: str, cluster_file: Path | None = None) -> subprocess.Popen[bytes]:
        """Run `iprotate run` for host `name` (with another cluster file: a host whose plan
        differs from the others')."""
        path = cluster_file or self.cluster_file
        argv = [sys.executable, "-m", "iprotate", "run", str(path), "--host", name,
                "--control-socket", self.control_socket(name),
                "--state-dir", str(self.dir / "state")]  # fmt: skip
        p = self.seg.spawn(name, argv, log=str(self.dir / f"{name}.log"))
        self.procs[name] = p
        return p

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[name]
        if p.poll() is None:
            os.kill(p.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            p.wait(15)

    def host_pids(self, name: str) -> list[int]:
        """Every process in the host's namespace (iprotate and its BIRD)."""
        out = ip("netns", "pids", self.seg.members[name].netns, check=False)
        return [int(x) for x in out.split()]

    def freeze(self, name: str, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) every process of the host: a hung machine."""
        for pid in self.host_pids(name):
            with contextlib.suppress(ProcessLookupError):  # it may have just exited
                os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def link(self, name: str, up: bool) -> None:
        self.seg.link(name, up)

    def ask(self, name: str, *cmd: str) -> str:
        r = subprocess.run(
            [sys.executable, "-m", "iprotate", *cmd, "--socket", self.control_socket(name)],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        return r.stdout + r.stderr

    def metrics(self, name: str) -> str:
        """The host's Prometheus metrics, fetched inside its namespace."""
        code = f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{METRICS_PORT}/').read().decode())"
        return self.seg.run(name, sys.executable, "-c", code)

    # --- the router's view ---------------------------------------------------------------------

    def routes(self) -> dict[str, list[Path_]]:
        out = self.seg.run(ROUTER, tool("birdc"), "-s", self.router_ctl, "show", "route", "all",
                           check=False)  # fmt: skip
        return parse_routes(out)

    def best(self) -> dict[str, str]:
        """prefix -> the host whose route the router prefers."""
        return {p: next(x.host for x in paths if x.best) for p, paths in self.routes().items()
                if any(x.best for x in paths)}  # fmt: skip

    def drift(self) -> set[str]:
        """Prefixes whose routes carry different plan ids: hosts disagree on their plan."""
        out = set()
        for prefix, paths in self.routes().items():
            ids = {next((c for c in p.communities if c[1] >= 0x8000 and c[1] != 0xFFFF), None)
                   for p in paths}  # fmt: skip
            if len(ids) > 1:
                out.add(prefix)
        return out

    def sessions_up(self) -> list[str]:
        out = self.seg.run(ROUTER, tool("birdc"), "-s", self.router_ctl, "show", "protocols",
                           check=False)  # fmt: skip
        return [line.split()[0][2:] for line in out.splitlines()
                if line.startswith("h_") and "Established" in line]  # fmt: skip

    def sessions6_up(self) -> list[str]:
        """The hosts whose IPv6 session with the router is up (dual stack)."""
        out = self.seg.run(ROUTER, tool("birdc"), "-s", self.router_ctl, "show", "protocols",
                           check=False)  # fmt: skip
        return [line.split()[0][3:] for line in out.splitlines()
                if line.startswith("h6_") and "Established" in line]  # fmt: skip

    def wait(self, pred: Any, timeout: float = 20.0, step: float = 0.02) -> float:
        """Seconds until pred() holds; TimeoutError after `timeout`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():
                return time.monotonic() - t0
            time.sleep(step)
        raise TimeoutError(f"not within {timeout} s")

    def ping(self, vip: str, count: int = 1, interval: float = 0.2, wait: float = 1.0) -> int:
        """Replies the client got from `vip`."""
        out = self.seg.run(CLIENT, "ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                           "-W", str(wait), vip, check=False)  # fmt: skip
        for line in out.splitlines():
            if "received" in line:
                return int(line.split(",")[1].split()[0])
        return 0

    def pinger(self, vip: str, interval: float = 0.01) -> subprocess.Popen[bytes]:
        """A ping every `interval` from the client until stopped with SIGINT; read with
        ping_result()."""
        return self.seg.spawn(CLIENT, ["ping", "-n", "-i", str(interval), "-W", "1", vip],
                              stdout=subprocess.PIPE)  # fmt: skip

    @staticmethod
    def ping_result(p: subprocess.Popen[bytes]) -> tuple[int, int]:
        """(sent, received) of a pinger, once stopped."""
        if p.poll() is None:
            os.kill(p.pid, signal.SIGINT)
        out = p.communicate(timeout=10)[0].decode()
        for line in out.splitlines():
            if "received" in line:
                f = line.split(",")
                return int(f[0].split()[0]), int(f[1].split()[0])
        return 0, 0

    # --- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        for name in self.names:
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                self.freeze(name, False)  # a frozen host cannot stop
                self.seg.stop(p, signal.SIGTERM, timeout=10.0)
        self.seg.close()
