"""The lab: a whole cluster on one machine, hosts as network namespaces on one bridge.

`Lab` writes a cluster file, builds the segment (N hosts and a client), runs `iprotate run` on the
native hosts and Debian's ucarp, with the lines `iprotate ucarp` generates, on the legacy ones, and
can fail, stop and restore hosts. The client runs `iprotate.lab.probe`, so the lab shows who
holds each VIP the way a client sees it: which MAC answers ARP. The integration tests stand on
the same class.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from types import TracebackType
from typing import Any

from iprotate.cluster.loader import load_cluster
from iprotate.export.ucarp import DEFAULT_UCARP, UcarpOptions, command, instances
from iprotate.lab.netns import Segment, host_address6, ip
from iprotate.lab.service import DEFAULT_PORT as SERVICE_PORT
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

NAMES = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
)  # fmt: skip
CLIENT = "client"
CLIENT_OCTET = 200
FIRST_VIP = 10
VIP6_PREFIX = "2001:db8:113::"  # the lab's IPv6 VIPs: 2001:db8:113::10, ::11, ... /64
PASSWORD = "lab-secret"
VIP_IFACE = "eth2"  # a host's NIC for its VIPs, when they are not on its advert NIC (eth1)
# The lab's service check: every VIP depends on the HTTP service of the host that holds it. Two
# failures 0.5 s apart take a host out: its VIPs are on the next host about a second after
# `break`, quick to watch and slow enough to read.
SERVICE_CHECK: dict[str, Any] = {
    "name": "web",
    "http": f"http://127.0.0.1:{SERVICE_PORT}/",
    "interval": 0.5,
    "timeout": 0.4,
    "fall": 2,
    "rise": 2,
}


def lab_cluster_toml(
    hosts: int,
    vips: int,
    legacy: int = 0,
    advbase: int = 1,
    dead_ratio: int = 3,
    extra_cluster: dict[str, Any] | None = None,
    vip_interface: str | None = None,
    vip_links: Sequence[str] = (),
    extra_run: dict[str, Any] | None = None,
    service: bool = False,
    extra_toml: str = "",
    vips6: int = 0,
) -> str:
    """The cluster file of a lab: hosts alpha, bravo, ...; the last `legacy` ones run ucarp; the
    hosts named in `vip_links` add their VIPs on a NIC of their own, VIP_IFACE (on the same
    bridge); `vip_interface` names one for every host. Dual-stack: every native host declares
    its address6 (2001:db8::N beside 198.51.100.N), and `vips6` IPv6 VIPs follow the IPv4 ones
    (ucarp hosts take no part in them). `service` adds the `[[checks]]` entry for the lab's
    HTTP service (SERVICE_CHECK) on every host; `extra_toml` is appended as it is (more
    `[[checks]]`, for a benchmark)."""
    if not 1 <= hosts <= len(NAMES):
        raise ValueError(f"a lab has 1..{len(NAMES)} hosts")
    if not 0 <= vips <= 255 - FIRST_VIP or (vips == 0 and vips6 == 0):
        raise ValueError(f"a lab has 1..{255 - FIRST_VIP} VIPs (or none, with IPv6 ones)")
    if not 0 <= legacy <= hosts:
        raise ValueError("more legacy hosts than hosts")
    if not 0 <= vips6 <= 255 - FIRST_VIP:
        raise ValueError(f"a lab has 0..{255 - FIRST_VIP} IPv6 VIPs")
    lines = [
        "# Written by `iprotate lab`.",
        "[cluster]",
        'interface = "eth1"',
        'password_file = "password"',
        f"advbase = {advbase}",
        f"dead_ratio = {dead_ratio}",
    ]
    for k, v in (extra_cluster or {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    for i in range(hosts):
        lines += ["", "[[hosts]]", f'name = "{NAMES[i]}"', f'address = "198.51.100.{i + 1}"']
        if vip_interface:
            lines.append(f'vip_interface = "{vip_interface}"')
        if i >= hosts - legacy:
            lines.append('engine = "ucarp"')
        else:
            lines.append(f'address6 = "{host_address6(i + 1)}"')
        if NAMES[i] in vip_links:
            lines.append(f'vip_interface = "{VIP_IFACE}"')
    last = FIRST_VIP + vips - 1
    lines.append("")
    if vips:
        lines += ["[[vips]]", f'pool = "203.0.113.{FIRST_VIP}-203.0.113.{last}/24"', ""]
    if vips6:
        first6, last6 = vip6(0), vip6(vips6 - 1)
        lines += ["[[vips]]", f'pool = "{first6}-{last6}/64"', ""]
    if extra_run:
        lines += ["[run]", *(f"{k} = {json.dumps(v)}" for k, v in extra_run.items()), ""]
    if service:
        lines += ["[[checks]]", *(f"{k} = {json.dumps(v)}" for k, v in SERVICE_CHECK.items()), ""]
    if extra_toml:
        lines.append(extra_toml)
    return "\n".join(lines)


def vip6(k: int) -> IPv6Address:
    """The lab's k-th IPv6 VIP (k = 0: 2001:db8:113::10, the hex twin of 203.0.113.10)."""
    return IPv6Address(f"{VIP6_PREFIX}{0x10 + k:x}")


@dataclass
class Lab:
    """A running lab. Use as a context manager: everything it made goes on exit."""

    workdir: Path
    hosts: int = 3
    vips: int = 9
    legacy: int = 0
    advbase: int = 1
    dead_ratio: int = 3
    extra_cluster: dict[str, Any] | None = None
    extra_run: dict[str, Any] | None = None  # keys of [run]
    extra_toml: str = ""  # appended to the cluster file as it is
    vips6: int = 0  # IPv6 VIPs beside the IPv4 ones (`iprotate lab` has some by default)
    run_args: tuple[str, ...] = ()
    # A second interface per host for the VIPs (vip_interface = "eth2"), on a second bridge where
    # the client sits; the adverts stay on eth1.
    vip_interface: bool = False
    # Hosts whose VIPs live on a NIC of their own (VIP_IFACE) on the same bridge, beside the
    # others: how one lab mixes hosts with and without a VIP interface.
    vip_links: tuple[str, ...] = ()
    host_args: dict[str, tuple[str, ...]] = field(default_factory=dict)  # more `run` args
    # Every host runs the lab's HTTP service (iprotate.lab.service), checked by a [[checks]]
    # entry; the probe asks it on every VIP.
    service: bool = False
    services: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    served: dict[str, str] = field(default_factory=dict)  # vip -> who answered HTTP (or why not)
    seg: Segment = field(default_factory=Segment)
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    _probe: subprocess.Popen[bytes] | None = None
    _probe_buf: bytes = b""
    view: dict[str, list[str]] = field(default_factory=dict)  # vip -> hosts answering ARP

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster_file = self.workdir / "cluster.toml"
        self.cluster_file.write_text(
            lab_cluster_toml(
                self.hosts,
                self.vips,
                self.legacy,
                self.advbase,
                self.dead_ratio,
                self.extra_cluster,
                vip_interface=VIP_IFACE if self.vip_interface else None,
                vip_links=self.vip_links,
                extra_run=self.extra_run,
                service=self.service,
                extra_toml=self.extra_toml,
                vips6=self.vips6,
            )
        )
        pw = self.workdir / "password"
        pw.write_text(PASSWORD + "\n")
        pw.chmod(0o600)
        self.plan: Plan = make_plan(load_cluster(self.cluster_file))
        self.names = list(self.plan.cluster.host_names)
        self.vip_ifname = VIP_IFACE if self.vip_interface else "eth1"

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.seg.__enter__()
        try:
            for i, h in enumerate(self.plan.cluster.hosts):
                self.seg.add(h.name, int(str(h.address).rsplit(".", 1)[1]), h.interface)
                if h.name in self.vip_links:
                    # An address of its own (the kernel flushes a NIC's routes with its last
                    # address); ARP answered for a VIP on its own NIC only: a VIP whose NIC lost
                    # carrier must not be served through the advert NIC (hiding the loss).
                    self.seg.plug(h.name, VIP_IFACE, f"198.51.100.{101 + i}/32")
                    self.seg.run(h.name, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
            self.seg.add(CLIENT, CLIENT_OCTET, "eth0")
            self.macs = {mac: n for n in self.names for mac in self.seg.members[n].macs.values()}
            if self.vip_interface:
                self._vip_segment()
            if self.service:
                for n in self.names:
                    self.start_service(n)
        except BaseException:
            self.seg.close()
            raise
        return self

    def _vip_segment(self) -> None:
        """eth2 on every host, on a second bridge with the client (moved there). A VIP interface
        needs an address of its own (the kernel flushes its routes when its last VIP leaves): a
        /32, with a route to the client only, so eth1 keeps the segment's /24."""
        for i, n in enumerate(self.names):
            self.seg.plug(n, VIP_IFACE, f"198.51.100.{101 + i}/32", "br1")
            self.seg.run(n, "ip", "route", "add", f"198.51.100.{CLIENT_OCTET}/32", "dev", VIP_IFACE)
            self.macs[self.seg.members[n].link_mac(VIP_IFACE)] = n
        self.seg.partition(CLIENT, True)
        ip("-n", self.seg.switch, "link", "set", self.seg.members[CLIENT].port, "master", "br1")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process (by PID) and remove every namespace and link the lab made."""
        self.procs.clear()
        self.services.clear()
        self._probe = None
        self.seg.close()

    # --- hosts -------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start the host's engine: `iprotate run`, or its ucarp processes if it is legacy."""
        log = str(self.workdir / f"{name}.log")
        host = self.plan.cluster.host(name)
        if host.engine == "ucarp":
            self.procs[name] = [
                self.seg.spawn(name, argv, log=log) for argv in self.ucarp_argvs(name)
            ]
        else:
            self.procs[name] = [self.seg.spawn(name, self.run_argv(name), log=log)]

    def run_argv(self, name: str) -> list[str]:
        """The `iprotate run` command line of a native host."""
        argv = [sys.executable, "-m", "iprotate", "run", str(self.cluster_file)]
        argv += ["--host", name, "--control-socket", str(self.control_socket(name))]
        argv += ["--state-dir", str(self.workdir / "state"), *self.run_args]
        return argv + list(self.host_args.get(name, ()))

    def vip_iface(self, name: str) -> str:
        """The NIC the host adds its VIPs on."""
        return self.plan.cluster.host(name).vip_interface

    def control_socket(self, name: str) -> Path:
        return self.workdir / f"{name}.sock"

    def start_all(self) -> None:
        for n in self.names:
            self.start(n)

    def kill(self, name: str) -> None:
        """A hard failure: the engine frozen, the cable pulled, then the engine killed (SIGKILL).

        Freezing first makes every process of the host fail at one instant. Afterwards the
        addresses a native host held are removed, as systemd's ExecStopPost (`iprotate cleanup`)
        does after a crash, so it does not answer for them when its cable comes back."""
        procs = self.procs.pop(name, [])
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGSTOP)
        self.seg.link(name, False)
        for p in procs:
            Segment.stop(p, signal.SIGKILL)
        if self.plan.cluster.host(name).engine == "iprotate":
            dev = self.vip_iface(name)
            for a in self.seg.addresses(name, dev, family=0):
                if any(str(v.address) == a for v in self.plan.vips):
                    self.seg.run(name, "ip", "addr", "del", a, "dev", dev, check=False)

    def stop(self, name: str) -> list[int | None]:
        """A clean stop (SIGTERM to every process of the host at once); the exit codes."""
        ps = self.procs.pop(name, [])
        for p in ps:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in ps:
            try:
                p.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                Segment.stop(p, signal.SIGKILL)
        return [p.returncode for p in ps]

    def restore(self, name: str) -> None:
        """Plug the cable back and start the engine again."""
        self.seg.link(name, True)
        if name not in self.procs:
            self.start(name)

    def start_service(self, name: str) -> None:
        """Start the host's HTTP service (`fix`); it answers with the host's name. Returns once
        it listens, so a check or a client right after finds it up."""
        if self.serving(name):
            return
        argv = [sys.executable, "-m", "iprotate.lab.service", "--name", name]
        log = str(self.workdir / f"{name}.service.log")
        self.services[name] = p = self.seg.spawn(name, argv, log=log)
        for _ in range(100):
            if f":{SERVICE_PORT} " in self.seg.run(name, "ss", "-Hltn", check=False):
                return
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name}: the lab's service did not start (see {log})")

    def stop_service(self, name: str) -> None:
        """Stop the host's HTTP service (`break`), by its PID; the host and its engine stay."""
        p = self.services.pop(name, None)
        if p is not None:
            Segment.stop(p)

    def serving(self, name: str) -> bool:
        p = self.services.get(name)
        return p is not None and p.poll() is None

    def running(self, name: str) -> bool:
        return any(p.poll() is None for p in self.procs.get(name, []))

    def ucarp_argvs(self, name: str) -> list[list[str]]:
        """The ucarp command lines `iprotate ucarp` generates for a legacy host, in the
        foreground, with the repository's up/down scripts and the lab's password file."""
        scripts = _contrib_dir()
        if not (scripts / "vip-up.sh").exists():
            raise FileNotFoundError(
                f"{scripts}/vip-up.sh: the lab's ucarp hosts use the repository's contrib/ucarp "
                "scripts: run iprotate from a checkout (./setup installs it editable)"
            )
        opts = UcarpOptions(
            ucarp=shutil.which("ucarp") or DEFAULT_UCARP,
            passfile=str(self.workdir / "password"),
            upscript=str(scripts / "vip-up.sh"),
            downscript=str(scripts / "vip-down.sh"),
        )
        return [list(command(i, daemonize=False)) for i in instances(self.plan, name, opts)]

    # --- what the hosts and the client see ---------------------------------------------------

    def holders(self) -> dict[str, list[str]]:
        """Ground truth: which hosts have each VIP (of both families) configured."""
        out: dict[str, list[str]] = {str(v.ip): [] for v in self.plan.vips}
        for n in self.names:
            for a in self.seg.addresses(n, self.vip_iface(n), family=0):
                ip = a.split("/")[0]
                if ip in out:
                    out[ip].append(n)
        return out

    def start_probe(self, period: float = 0.2) -> None:
        """Start the client's prober (ARP for IPv4 VIPs, neighbour solicitations for IPv6 ones);
        `poll_probe` reads its answers."""
        argv = [sys.executable, "-m", "iprotate.lab.probe", "--interface", "eth0"]
        argv += ["--src", f"198.51.100.{CLIENT_OCTET}", "--period", str(period)]
        if self.service:
            argv += ["--http", str(SERVICE_PORT)]
        argv += ["--src6", host_address6(CLIENT_OCTET)]
        argv += [str(v.ip) for v in self.plan.vips]
        self._probe = self.seg.spawn(CLIENT, argv, stdout=subprocess.PIPE)
        assert self._probe.stdout is not None
        os.set_blocking(self._probe.stdout.fileno(), False)

    def poll_probe(self, timeout: float = 0.0) -> list[tuple[float, dict[str, list[str]]]]:
        """The probe rounds that arrived since the last call, as (t, {vip: [host, ...]})."""
        assert self._probe is not None and self._probe.stdout is not None
        fd = self._probe.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError):
                self._probe_buf += os.read(fd, 1 << 20)
        rounds = []
        *lines, self._probe_buf = self._probe_buf.split(b"\n")
        for line in lines:
            r = json.loads(line)
            view = {v: [self.macs.get(m, m) for m in ms] for v, ms in r["macs"].items()}
            rounds.append((r["t"], view))
            self.view = view
            self.served = r.get("served", {})
        return rounds

    def vip(self, address: str | IPv4Address | IPv6Address) -> Any:
        ip = ip_address(str(address).split("/")[0])
        return next(v for v in self.plan.vips if v.ip == ip)


def _contrib_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "contrib" / "ucarp"
