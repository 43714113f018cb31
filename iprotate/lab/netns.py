"""Throw-away Ethernet segments made of network namespaces, for the lab and the tests.

A `Segment` is one bridge (in a namespace of its own, so the host's root namespace is never touched)
and any number of member namespaces, each plugged into the bridge by a veth pair. Every name starts
with a prefix unique to the run, every process started in a member is tracked by its PID, and
`close()` (also on error, via the context manager) stops those processes by PID and deletes every
namespace it made, which removes their links with them.

Addresses: members get 198.51.100.0/24 addresses and, dual-stack, 2001:db8::/64 ones (the same last
number: 198.51.100.7 and 2001:db8::7); VIPs live in 203.0.113.0/24 and 2001:db8:113::/64. Nothing
here sends a packet anywhere.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

HOST_NET = "198.51.100"
VIP_NET = "203.0.113.0/24"
HOST_NET6 = "2001:db8::"
VIP_NET6 = "2001:db8:113::/64"


def host_address6(host_octet: int) -> str:
    """A member's IPv6 address, beside 198.51.100.<host_octet>: 2001:db8::<host_octet>."""
    return f"{HOST_NET6}{host_octet}"


class NetnsError(RuntimeError):
    """An `ip` command failed while building or changing the segment."""


def have_root() -> bool:
    return os.geteuid() == 0


def ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS...`; return stdout. Raises NetnsError with ip's message on failure."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


@dataclass
class Member:
    """One namespace on the segment."""

    name: str  # short name in the segment, e.g. "alpha"
    netns: str  # the namespace's real name, run-unique
    port: str  # its veth end on the bridge (inside the switch namespace)
    interface: str  # its own veth end (inside its namespace)
    address: str  # 198.51.100.x
    address6: str  # 2001:db8::x
    ports: dict[str, str] = field(default_factory=dict)  # more interfaces: interface -> port
    macs: dict[str, str] = field(default_factory=dict)  # interface -> the MAC it was made with

    @property
    def mac(self) -> str:
        return self.link_mac(self.interface)

    def link_mac(self, interface: str) -> str:
        out = ip("-n", self.netns, "-o", "link", "show", interface)
        return out.split("link/ether", 1)[1].split()[0]

    @property
    def all_ports(self) -> dict[str, str]:
        """Every interface of the member on a bridge, the first one first -> its port."""
        return {self.interface: self.port, **self.ports}


@dataclass
class Segment:
    """A bridge and its member namespaces. Use as a context manager."""

    prefix: str = field(default_factory=lambda: "ipr" + secrets.token_hex(3))
    members: dict[str, Member] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    _janitor: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.switch = f"{self.prefix}-sw"

    # --- building ----------------------------------------------------------------------------

    def __enter__(self) -> Segment:
        self._janitor = _start_janitor(self.prefix)
        try:
            self._add_netns(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            # Flood multicast to every port: CARP adverts must reach every member at once.
            ip("-n", self.switch, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            ip("-n", self.switch, "link", "set", "br0", "up")
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

    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def add(self, name: str, host_octet: int, interface: str = "eth1") -> Member:
        """A namespace plugged into the bridge as `interface`, with 198.51.100.<host_octet>/24."""
        ns = f"{self.prefix}-{name}"[:32]
        port = f"p{len(self.members)}"
        self._add_netns(ns)
        m = Member(name, ns, port, interface, f"{HOST_NET}.{host_octet}", host_address6(host_octet))
        self._cable(m, f"{self.prefix}{len(self.members)}"[:15])
        self.members[name] = m
        return m

    def _cable(self, m: Member, tmp: str) -> None:
        """The member's first interface: a veth to its bridge port, its address, the VIP route.
        Made again (after `delete_interface`) with the MAC it had, so the client's view of who
        answers keeps its names."""
        mac = ["address", m.macs[m.interface]] if m.interface in m.macs else []
        ip("link", "add", tmp, *mac, "netns", m.netns, "type", "veth", "peer", "name", m.port,
           "netns", self.switch)  # fmt: skip
        ip("-n", m.netns, "link", "set", tmp, "name", m.interface)
        ip("-n", m.netns, "addr", "add", f"{m.address}/24", "dev", m.interface)
        # nodad: usable at once (duplicate address detection would hold it tentative a second).
        ip("-n", m.netns, "addr", "add", f"{m.address6}/64", "dev", m.interface, "nodad")
        ip("-n", m.netns, "link", "set", m.interface, "up")
        # VIPs are on-link for every member (the client ARPs for them, or solicits, directly).
        ip("-n", m.netns, "route", "add", VIP_NET, "dev", m.interface)
        ip("-n", m.netns, "-6", "route", "add", VIP_NET6, "dev", m.interface)
        ip("-n", self.switch, "link", "set", m.port, "master", "br0")
        ip("-n", self.switch, "link", "set", m.port, "up")
        m.macs[m.interface] = m.mac

    def plug(self, name: str, interface: str, address: str, bridge: str = "br0") -> str:
        """A second interface for member `name`, plugged into `bridge` (made on first use) with
        `address` (CIDR); the port's name."""
        if not ip("-n", self.switch, "-o", "link", "show", "dev", bridge, check=False):
            ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", bridge, "type", "bridge", "mcast_snooping", "0")
            ip("-n", self.switch, "link", "set", bridge, "up")
        m = self.members[name]
        n = sum(len(x.ports) for x in self.members.values())
        port, tmp = f"q{n}", f"{self.prefix}q{n}"[:15]
        ip("link", "add", tmp, "netns", m.netns, "type", "veth", "peer", "name", port,
           "netns", self.switch)  # fmt: skip
        ip("-n", m.netns, "link", "set", tmp, "name", interface)
        ip("-n", m.netns, "addr", "add", address, "dev", interface)
        ip("-n", m.netns, "link", "set", interface, "up")
        ip("-n", self.switch, "link", "set", port, "master", bridge)
        ip("-n", self.switch, "link", "set", port, "up")
        m.ports[interface] = port
        m.macs[interface] = m.link_mac(interface)
        return port

    # --- faults ------------------------------------------------------------------------------

    def link(self, name: str, up: bool, interface: str | None = None) -> None:
        """Pull (or plug back) the member's cable (of `interface`, default its first one): its
        interface loses carrier."""
        m = self.members[name]
        port = m.all_ports[interface or m.interface]
        ip("-n", self.switch, "link", "set", port, "up" if up else "down")

    def partition(self, name: str, cut: bool, interface: str | None = None) -> None:
        """Cut the member's port (of `interface`, default its first one) off the bridge (carrier
        stays up) or join it back."""
        m = self.members[name]
        port = m.all_ports[interface or m.interface]
        if cut:
            ip("-n", self.switch, "link", "set", port, "nomaster")
        else:
            ip("-n", self.switch, "link", "set", port, "master", "br0")

    def delete_interface(self, name: str) -> None:
        """Delete the member's first interface (its bridge port, the veth's peer, goes too)."""
        m = self.members[name]
        ip("-n", m.netns, "link", "del", m.interface)

    def create_interface(self, name: str) -> None:
        """Create the deleted first interface again as it was: same name, MAC, address, route
        and bridge port; a new ifindex (what a driver reload or a hot-plugged NIC gives)."""
        m = self.members[name]
        self._cable(m, f"{self.prefix}r{list(self.members).index(name)}"[:15])

    def recreate(self, name: str, gap: float = 0.0) -> None:
        """Delete the member's interface and, `gap` seconds later, create it again."""
        self.delete_interface(name)
        time.sleep(gap)
        self.create_interface(name)

    # --- processes ---------------------------------------------------------------------------

    def spawn(
        self, name: str, argv: Sequence[str], log: str | None = None, **kw: object
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside the member's namespace; tracked so close() stops it by PID.

        `ip netns exec` execs the command itself, so the Popen PID is the process's own."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.members[name].netns, *argv],
                stdout=kw.pop("stdout", out),
                stderr=out,
                stdin=subprocess.DEVNULL,
                # Out of the terminal's process group: Ctrl-C or a closing terminal reaches the
                # lab, which stops its processes itself, in order.
                start_new_session=True,
                **kw,  # type: ignore[arg-type]
            )
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.procs.append(p)
        return p

    def run(self, name: str, *argv: str, check: bool = True) -> str:
        """Run a short command in the member's namespace and return its output."""
        r = subprocess.run(
            ["ip", "netns", "exec", self.members[name].netns, *argv], capture_output=True, text=True
        )
        if check and r.returncode != 0:
            raise NetnsError(f"{name}: {' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    @staticmethod
    def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Signal one process by its PID and reap it (SIGKILL if it outlives `timeout`)."""
        if p.poll() is not None:
            return
        try:
            os.kill(p.pid, sig)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        except ProcessLookupError:
            pass

    def addresses(self, name: str, interface: str | None = None, family: int = 4) -> list[str]:
        """The addresses (with prefix) of one family (4, 6; 0: both) on the member's interface
        (none if it is gone). IPv6: global ones only (not the kernel's link-local)."""
        m = self.members[name]
        dev = interface or m.interface
        fam = {4: ["-4"], 6: ["-6"], 0: []}[family]
        scope = ["scope", "global"] if family != 4 else []
        out = ip("-n", m.netns, "-o", *fam, "addr", "show", "dev", dev, *scope, check=False)
        return [line.split()[3] for line in out.splitlines()]

    # --- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every tracked process by PID, then delete every namespace made. Idempotent."""
        for p in self.procs:
            self.stop(p, signal.SIGTERM, timeout=3.0)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            self._kill_leftovers(ns)
            ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        self.members.clear()
        if self._janitor is not None:
            self.stop(self._janitor, signal.SIGTERM, timeout=3.0)
            self._janitor = None

    @staticmethod
    def _kill_leftovers(ns: str) -> None:
        """Processes still inside a namespace we made (children of what we started, such as a
        daemonized ucarp) are ours: `ip netns pids` names them by PID."""
        for _ in range(2):
            pids = [int(x) for x in ip("netns", "pids", ns, check=False).split()]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def _start_janitor(prefix: str) -> subprocess.Popen[bytes]:
    """A process that removes the segment if we die without cleaning up (iprotate.lab.janitor)."""
    argv = [sys.executable, "-m", "iprotate.lab.janitor", "--pid", str(os.getpid())]
    return subprocess.Popen(
        [*argv, "--prefix", prefix],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a closing terminal must not take it down with us
    )
