"""Scale benchmark: one `iprotate run` with 1, 256, 1,000 and 4,000 VIPs, beside ucarp processes
for the same VIPs up to 1,000 (above that ucarp is extrapolated from its measured per-process
figures, and the page says so), in the same run.

    sudo .venv/bin/python bench/scale.py [--sizes 1,256,1000,4000] [--window 40] [--quick]
    sudo .venv/bin/python bench/scale.py --sizes 1000 --engines iprotate --profile
    .venv/bin/python bench/scale.py --render          # scale.md again from scale.json

Per size, two throw-away segments run side by side, each with two hosts: `alpha` (198.51.100.1)
owns every VIP (`owner = "alpha"` pins), `bravo` (198.51.100.2) is the survivor.

- iprotate segment: `python -m iprotate run FILE --host NAME ... --hold-down 0` on both hosts,
  each with a NOTIFY_SOCKET of ours (start-up to READY) and its own control socket.
- ucarp segment: on both hosts one Debian ucarp process per VIP, the lines `iprotate ucarp`
  generates (`iprotate.export.ucarp.instances` + `command(..., daemonize=False)`), with the
  repository's contrib up/down scripts.

VIPs are /32s from 198.18.0.0/15 (RFC 2544's benchmarking range; DESIGN.md "Addresses in labs and
tests": more than the 256 addresses of 203.0.113.0/24 are needed), only ever added inside this
bench's own namespaces: 250 per multicast group (vhids 1..250 from the last octet), group g being
224.0.0.(18 + g) with VIPs 198.18.g.1 ..; 1 VIP in 1 group, 256 in 2, 1,000 in 4, 4,000 in 16.

The wire (`--wire napi`, the default): every veth end of a segment gets GRO with
rx-udp-gro-forwarding and threaded NAPI (`napi_wire`), so the bridge and the receiver's kernel
work run on NAPI kernel threads, not in the sending daemon's context as with plain veths (on a
real segment the receiving machine does that work); those threads' run time over the window is
the wire's own cost. `--wire veth` keeps the plain veths, for comparison with older figures.

Steady state: the owners come up first (they take every VIP after D), then the survivors; after a
warm-up, each process's own run time (/proc/PID/schedstat; utime+stime beside it) over `--window`
seconds and VmRSS/Pss at its end. Then, iprotate only: a `status` request on each host and a
reload that changes one VIP (and one that changes it back), timed through the control socket.
Takeover, one segment after the other: the owner's bridge port goes down (the cable is pulled: no
advert leaves after that instant) and its processes get SIGKILL; a monitor in the survivor's
namespace (this script, `--monitor`) timestamps every VIP address the survivor's kernel adds
(netlink) and the last advert it heard from the owner for each vhid. Per VIP, past D = address
added minus (last advert heard + D), D = advbase * dead_ratio + advskew/256 of the survivor;
the target is every VIP within D + 100 ms at 1,000 VIPs and D + 250 ms at 4,000. Then the
fail-back (iprotate): the owner's cable back, its daemon started again, and when it holds the
first VIP, half of them and all of them again.

`--profile`: iprotate alone under cProfile (both hosts), stopped cleanly after the steady-state
window; the top lines by own time go to scale-profile.json, and scale.md shows them.

Writes scale.json (JSON lines) and scale.md into --out (default bench/results). The machine is
shared (2 cores, other jobs running): the page gives the load average of the windows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pstats
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from provenance import machine, revision

from iprotate.cluster.loader import load_cluster
from iprotate.engine import control
from iprotate.engine.wire import CarpSocket
from iprotate.export.ucarp import DEFAULT_UCARP, UcarpOptions, command, instances
from iprotate.lab.netns import Segment
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan
from iprotate.plan.timing import master_down

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CONTRIB = ROOT / "contrib" / "ucarp"
VIP_NET = "198.18"
OWNER, SURVIVOR = "alpha", "bravo"
OCTETS = {OWNER: 1, SURVIVOR: 2}
INTERFACE = "eth1"
PASSWORD = "bench-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RSS_MB = 64.0
TARGET_CPU_PCT = 2.0
TARGET_PAST_D = 0.100
UCARP_MAX = 1000  # ucarp runs up to this many VIPs (2 processes per VIP); above, extrapolated
# What happened when ucarp was run at 1,000 VIPs on this project's 2-core machine (shown on the
# page when a run used --ucarp-max below 1,000).
UCARP_1000 = (
    "ucarp was started at 1,000 VIPs too (2,000 processes, 1,000 per host; 2026-11-30, at "
    "3f250ae, issue 12's first round) and did not reach a steady state: each ucarp process "
    "reads every advert of the "
    "segment through its own pcap handle (1,000 processes x 1,000 adverts a second per host), "
    "the 1-minute load average rose past 1,200 within eight minutes, the up/down scripts ran in "
    "loops (a hundred and more at once: VIPs flapping) and the other jobs on the machine stalled, "
    "so the run was stopped by hand before its window. Its row at 1,000 and 4,000 is therefore "
    "extrapolated from the 256-VIP run, per process: a lower bound of what ucarp costs there."
)


# --- cluster files -------------------------------------------------------------------------------


def split(first: int, count: int, parts: int) -> list[tuple[int, int]]:
    """`count` consecutive numbers from `first` in `parts` contiguous (first, last) ranges."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    out, at = [], first
    for i in range(parts):
        n = size + (1 if i < extra else 0)
        out.append((at, at + n - 1))
        at += n
    return out


PER_GROUP = 250  # VIPs per multicast group: vhids 1..250 from the last octet
MAX_GROUPS = 64  # 224.0.0.18 .. 224.0.0.81; VIPs 198.18.0.x .. 198.18.63.x


def groups_for(vips: int) -> int:
    """Groups for `vips` VIPs: 250 at most in each, and two at least beyond one VIP (so every
    size exercises more than one group): 1 -> 1, 256 -> 2, 1,000 -> 4, 4,000 -> 16."""
    return 1 if vips == 1 else max(2, -(-vips // PER_GROUP))


def group_address(g: int) -> str:
    return f"224.0.0.{18 + g}"


def vip_address(g: int, i: int) -> str:
    """The i-th VIP (0-based) of group g: 198.18.g.(i + 1), inside 198.18.0.0/15 (RFC 2544's
    benchmarking range: only ever added inside this bench's own namespaces)."""
    return f"{VIP_NET}.{g}.{i + 1}"


def is_vip(address: str) -> bool:
    return address.startswith(VIP_NET + ".")


def cluster_toml(
    vips: int,
    groups: int,
    advbase: int = 1,
    dead_ratio: int = 3,
    owners: Sequence[str] = (OWNER,),
) -> str:
    """`vips` VIPs, each a /32 of 198.18.0.0/15, split into `groups` contiguous ranges, one
    multicast group each (group g: 198.18.g.1 ..). A vhid derives from the last octet (1..250),
    so they are distinct within a group. The owners are pinned in turn (`owners`): alpha alone by
    default, every VIP owned by alpha. One `address` entry per VIP: a /32 pool needs one entry
    per address anyway."""
    if not 1 <= groups <= MAX_GROUPS or -(-vips // groups) > PER_GROUP or vips < 1:
        raise ValueError(
            f"{vips} VIPs in {groups} groups: 1..{MAX_GROUPS} groups of at most {PER_GROUP} VIPs"
        )
    lines = [
        "# Written by bench/scale.py.",
        "[cluster]",
        f'interface = "{INTERFACE}"',
        'password_file = "password"',
        f"advbase = {advbase}",
        f"dead_ratio = {dead_ratio}",
    ]
    for name, octet in OCTETS.items():
        lines += ["", "[[hosts]]", f'name = "{name}"', f'address = "198.51.100.{octet}"']
    at = 0
    for g, (first, last) in enumerate(split(0, vips, groups)):
        for i in range(last - first + 1):
            owner = owners[at % len(owners)]
            at += 1
            lines += ["", "[[vips]]", f'address = "{vip_address(g, i)}/32"']
            lines += [f'group = "{group_address(g)}"', f'owner = "{owner}"']
    return "\n".join(lines) + "\n"


def write_password(workdir: Path) -> None:
    pw = workdir / "password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)


# --- /proc ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def run_seconds(pid: int) -> float:
    """Time spent on a CPU by one process, in seconds, from /proc/PID/schedstat (nanoseconds,
    exact; utime+stime are sampled at the tick and read 0 for processes that wake briefly)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) of one process in kB; Pss shares libc & co. fairly between processes."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        m = re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
        rss = int(m.group(1)) if m else 0
    with contextlib.suppress(OSError):
        m = re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M)
        pss = int(m.group(1)) if m else 0
    return rss, pss


@dataclass
class Usage:
    """What a set of processes used over a window."""

    processes: int
    rss_mb: float
    pss_mb: float
    cpu_s: float  # utime + stime
    run_s: float  # schedstat
    window_s: float

    def to_json(self) -> dict[str, Any]:
        per_min = 60.0 / self.window_s
        return {
            "processes": self.processes,
            "rss_mb": round(self.rss_mb, 1),
            "pss_mb": round(self.pss_mb, 1),
            "cpu_s_per_min": round(self.cpu_s * per_min, 3),
            "cpu_pct_of_core": round(self.cpu_s / self.window_s * 100, 2),
            "sched_cpu_s_per_min": round(self.run_s * per_min, 3),
            "sched_cpu_pct_of_core": round(self.run_s / self.window_s * 100, 2),
        }


def measure(groups: dict[str, list[int]], window: float) -> dict[str, Usage]:
    """CPU of each group of PIDs over `window` seconds, and its memory at the end."""
    before = {k: sum(cpu_seconds(p) for p in pids) for k, pids in groups.items()}
    before_run = {k: sum(run_seconds(p) for p in pids) for k, pids in groups.items()}
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    out = {}
    for k, pids in groups.items():
        cpu = sum(cpu_seconds(p) for p in pids) - before[k]
        run = sum(run_seconds(p) for p in pids) - before_run[k]
        mem = [memory_kb(p) for p in pids]
        rss = sum(r for r, _ in mem) / 1024
        pss = sum(p for _, p in mem) / 1024
        out[k] = Usage(len(pids), rss, pss, cpu, run, elapsed)
    return out


# --- the monitor, inside the survivor's namespace ------------------------------------------------

RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWADDR, RTM_DELADDR = 20, 21
IFA_ADDRESS, IFA_LOCAL = 1, 2


def _netlink_addresses(data: bytes) -> Iterator[tuple[str, str]]:
    """(op, address) for every RTM_NEWADDR/RTM_DELADDR of IPv4 in one netlink datagram."""
    at = 0
    while at + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, at)
        if length < 16:
            return
        if kind in (RTM_NEWADDR, RTM_DELADDR) and data[at + 16] == socket.AF_INET:
            attrs: dict[int, bytes] = {}
            a = at + 16 + 8  # nlmsghdr, ifaddrmsg
            while a + 4 <= at + length:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                attrs[atype] = data[a + 4 : a + alen]
                a += (alen + 3) & ~3
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is not None and len(raw) == 4:
                yield ("add" if kind == RTM_NEWADDR else "del"), socket.inet_ntoa(raw)
        at += (length + 3) & ~3


def monitor(interface: str, me: str, owner: str, groups: Sequence[str]) -> None:
    """Print a JSON line per VIP address added or removed here (wall-clock time of receipt); on
    SIGUSR1 print when the last advert from `owner` was heard for each (group, vhid); stop on
    SIGTERM. `me` is this namespace's address (the group memberships need it). Only listens:
    it sends nothing."""
    dump = stop = False

    def on_usr1(*_: object) -> None:
        nonlocal dump
        dump = True

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    nl.bind((0, RTMGRP_IPV4_IFADDR))
    index = socket.if_nametoindex(interface)
    # One socket for the interface, joined to every group, as the daemon has; a packet is keyed by
    # its own destination.
    carp = CarpSocket(interface, index, IPv4Address(me), [IPv4Address(owner)])
    for g in groups:
        carp.join(IPv4Address(g))
    socks = [carp.sock]
    owner_raw = socket.inet_aton(owner)
    last: dict[str, float] = {}
    print(json.dumps({"ready": True}), flush=True)
    while not stop:
        ready, _, _ = select.select([nl, *socks], [], [], 0.1)
        now = time.time()
        for s in ready:
            if s is nl:
                for op, addr in _netlink_addresses(nl.recv(1 << 16)):
                    if is_vip(addr):
                        print(json.dumps({"t": now, "op": op, "ip": addr}), flush=True)
                continue
            with contextlib.suppress(BlockingIOError):
                while True:
                    data = s.recv(2048)
                    ihl = (data[0] & 0x0F) * 4
                    if data[12:16] == owner_raw and len(data) > ihl + 1:
                        last[f"{socket.inet_ntoa(data[16:20])}/{data[ihl + 1]}"] = now
        if dump:
            dump = False
            print(json.dumps({"last_advert": last}), flush=True)


@dataclass
class Monitor:
    """The parent's handle on a running monitor."""

    proc: subprocess.Popen[bytes]
    events: list[dict[str, Any]] = field(default_factory=list)
    last_advert: dict[str, float] | None = None
    ready: bool = False
    _buf: bytes = b""

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)

    def poll(self, timeout: float = 0.0) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError):
                self._buf += os.read(fd, 1 << 20)
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            doc = json.loads(line)
            if "ready" in doc:
                self.ready = True
            elif "last_advert" in doc:
                self.last_advert = doc["last_advert"]
            elif "t" in doc:
                self.events.append(doc)

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the monitor did not start (see its monitor.log)")
            self.poll(0.1)

    def added_since(self, t0: float) -> dict[str, float]:
        """The first time each VIP was added at or after t0."""
        out: dict[str, float] = {}
        for e in self.events:
            if e["op"] == "add" and e["t"] >= t0 and e["ip"] not in out:
                out[e["ip"]] = e["t"]
        return out

    def ask_last_advert(self, timeout: float = 5.0) -> dict[str, float]:
        self.last_advert = None
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while self.last_advert is None and time.monotonic() < deadline:
            self.poll(0.1)
        if self.last_advert is None:
            raise RuntimeError("the monitor did not report its adverts")
        return self.last_advert


# --- the wire ------------------------------------------------------------------------------------

WIRES = ("napi", "veth")
KTHREAD = 0x00200000  # PF_KTHREAD in /proc/PID/stat's flags: a kernel thread


class WireError(Exception):
    """The NAPI wire cannot be set up on this machine; the bench stops (`--wire veth` runs the
    old wire). Not a RuntimeError: a size's errors are recorded and the run goes on, this one
    must not be."""


def veth_ends(seg: Segment) -> list[tuple[str, str]]:
    """(namespace, device) of every veth end of the segment: each member's interfaces in its
    namespace and their bridge ports in the switch namespace."""
    out = []
    for m in seg.members.values():
        for interface, port in m.all_ports.items():
            out += [(m.netns, interface), (seg.switch, port)]
    return out


def _in_netns(ns: str, *argv: str, timeout: float = 30.0) -> str:
    """Run a short command in namespace `ns`; its stdout. WireError if it fails or hangs."""
    try:
        r = subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise WireError(f"{ns}: {' '.join(argv)}: no answer in {timeout:.0f} s") from None
    if r.returncode != 0:
        raise WireError(f"{ns}: {' '.join(argv)}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


def napi_wire(seg: Segment) -> dict[str, list[tuple[int, int]]]:
    """Make the segment's veths carry packets as a real wire does: the receiver's kernel work
    done off the sender's process. A plain veth hands a packet to its peer's netif_rx and the
    softirq runs in the sender's context: the bridge, the second veth, the receiving
    namespace's IP receive path and raw-socket delivery (waking the receiver included) are
    charged to the sending daemon (8.8-10.4 us per 56-byte advert; on a real segment the
    other machine does that work). With GRO and rx-udp-gro-forwarding on every end (what makes
    a raw socket's skb eligible for veth's NAPI path) and threaded NAPI, veth queues to the
    peer's NAPI and the `napi/<dev>-<id>` kernel threads do it. And a queue on every end, as a
    NIC has (pfifo of 1,000 packets, a NIC's default txqueuelen): veth has none (noqueue) and
    its NAPI ring holds 256 packets, so a burst longer than that (a grid point's adverts, one
    per VIP) lost its tail without a word, the same VIPs every second, and the survivor took
    them over from a live owner; with a queue the kernel holds them back instead. Returns
    `wire_threads(seg)`; raises WireError if ethtool, the features or threaded NAPI are
    missing (no fallback)."""
    if shutil.which("ethtool") is None:
        raise WireError("ethtool not found (Debian package ethtool, ./setup installs it)")
    for ns, dev in veth_ends(seg):
        _in_netns(ns, "ethtool", "-K", dev, "gro", "on", "rx-udp-gro-forwarding", "on")
        features = _in_netns(ns, "ethtool", "-k", dev)
        for feature in ("generic-receive-offload", "rx-udp-gro-forwarding"):
            if f"{feature}: on" not in features:
                raise WireError(f"{ns} {dev}: ethtool could not turn {feature} on")
        threaded = f"/sys/class/net/{dev}/threaded"
        try:
            now = _in_netns(ns, "sh", "-c", f"echo 1 > {threaded} && cat {threaded}").strip()
        except WireError as e:
            raise WireError(f"threaded NAPI unavailable: {e}") from None
        if now in ("", "0"):
            raise WireError(f"{ns} {dev}: threaded NAPI did not turn on ({threaded}: {now!r})")
        _in_netns(ns, "tc", "qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "1000")
    return wire_threads(seg)


def wire_threads(seg: Segment) -> dict[str, list[tuple[int, int]]]:
    """'namespace/device' -> [(NAPI id, PID of its kernel thread)] for every veth end.

    The mapping comes from the kernel itself: the netdev netlink family's napi-get, asked
    inside each namespace (`--napi-threads`), gives each NAPI instance of a device with the
    PID of its thread. Names alone would not do: every member's `eth1` makes a
    `napi/eth1-<id>` thread, in this run and in the labs other jobs run at the same time, and
    the set of `napi/*` threads new since a moment also catches theirs. Each PID is checked
    to be a kernel thread whose name is `napi/<dev>-<id>` (so a reused PID is never counted)."""
    out: dict[str, list[tuple[int, int]]] = {}
    by_ns: dict[str, list[str]] = {}
    for ns, dev in veth_ends(seg):
        by_ns.setdefault(ns, []).append(dev)
    for ns, devs in by_ns.items():
        argv = [sys.executable, str(Path(__file__).resolve()), "--napi-threads", ",".join(devs)]
        found = json.loads(_in_netns(ns, *argv))
        for dev in devs:
            pairs = [(int(i), int(p)) for i, p in found.get(dev, [])]
            if not pairs:
                raise WireError(f"{ns} {dev}: no threaded NAPI instance (kernel too old?)")
            for napi_id, pid in pairs:
                if not is_napi_thread(pid, dev, napi_id):
                    raise WireError(f"{ns} {dev}: PID {pid} is not napi/{dev}-{napi_id}")
            out[f"{ns}/{dev}"] = pairs
    return out


def is_napi_thread(pid: int, dev: str, napi_id: int) -> bool:
    """Is PID the kernel thread of NAPI instance `napi_id` of `dev` (its comm, 15 bytes)?"""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        flags = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[6])
    except (OSError, ValueError, IndexError):
        return False
    return bool(flags & KTHREAD) and comm == f"napi/{dev}-{napi_id}"[:15]


NETLINK_GENERIC, GENL_ID_CTRL, CTRL_CMD_GETFAMILY = 16, 0x10, 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
NETDEV_CMD_NAPI_GET = 11  # include/uapi/linux/netdev.h
NETDEV_A_NAPI_IFINDEX, NETDEV_A_NAPI_ID, NETDEV_A_NAPI_PID = 1, 2, 4
NLM_F_REQUEST, NLM_F_DUMP, NLMSG_ERROR, NLMSG_DONE = 1, 0x300, 2, 3


def _genl(
    sock: socket.socket, family: int, cmd: int, attrs: bytes, flags: int
) -> list[dict[int, bytes]]:
    """One generic-netlink request; the attributes of every message answered."""
    body = struct.pack("=BBH", cmd, 1, 0) + attrs
    sock.send(struct.pack("=IHHII", 16 + len(body), family, NLM_F_REQUEST | flags, 1, 0) + body)
    msgs: list[dict[int, bytes]] = []
    while True:
        data = sock.recv(1 << 16)
        at = 0
        while at + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, at)
            if length < 16 or kind == NLMSG_DONE:
                return msgs
            if kind == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, at + 16)
                if err:
                    raise OSError(-err, os.strerror(-err))
                return msgs
            msg, a = {}, at + 20  # nlmsghdr, genlmsghdr
            while a + 4 <= at + length:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                msg[atype & 0x3FFF] = data[a + 4 : a + alen]
                a += (alen + 3) & ~3
            msgs.append(msg)
            at += (length + 3) & ~3
        if not flags & NLM_F_DUMP:
            return msgs


def napi_threads(devs: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
    """In this namespace: device -> [(NAPI id, thread PID)] of its threaded NAPI instances, from
    the netdev family's napi-get dump (Linux 6.8 and later report the PID)."""
    index = {socket.if_nametoindex(d): d for d in devs}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as s:
        s.bind((0, 0))
        name = b"netdev\0"
        pad = b"\0" * (-len(name) % 4)
        attr = struct.pack("=HH", 4 + len(name), CTRL_ATTR_FAMILY_NAME) + name + pad
        (fam,) = _genl(s, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, attr, 0)
        (family,) = struct.unpack("=H", fam[CTRL_ATTR_FAMILY_ID])
        out: dict[str, list[tuple[int, int]]] = {d: [] for d in devs}
        for m in _genl(s, family, NETDEV_CMD_NAPI_GET, b"", NLM_F_DUMP):
            u32 = {k: struct.unpack("=I", v)[0] for k, v in m.items() if len(v) == 4}
            dev = index.get(u32.get(NETDEV_A_NAPI_IFINDEX, 0))
            if dev is not None and NETDEV_A_NAPI_PID in u32:
                out[dev].append((u32[NETDEV_A_NAPI_ID], u32[NETDEV_A_NAPI_PID]))
    return out


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Side:
    """One segment: an engine's owner and survivor."""

    engine: str  # "iprotate" or "ucarp"
    seg: Segment
    workdir: Path
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    monitor: Monitor | None = None
    profile: bool = False  # run iprotate under cProfile (host.prof in workdir, at a clean stop)
    # The NAPI wire's threads ('namespace/device' -> [(NAPI id, PID)]); empty: the plain veths.
    wire: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    notify: dict[str, socket.socket] = field(default_factory=dict)
    started_at: dict[str, float] = field(default_factory=dict)

    def start(self, host: str, cluster_file: Path, plan: Plan) -> None:
        """Start `host`'s engine. iprotate gets a NOTIFY_SOCKET of ours (sd_notify), so that
        `ready_after` can tell when it reported READY."""
        self.started_at[host] = time.monotonic()
        if self.engine == "iprotate":
            argv = [sys.executable]
            if self.profile:
                argv += ["-m", "cProfile", "-o", str(self.workdir / f"{host}.prof")]
            argv += ["-m", "iprotate", "run", str(cluster_file), "--host", host]
            argv += ["--control-socket", self.control(host)]
            argv += ["--state-dir", str(self.workdir / "state"), "--hold-down", "0"]
            log = str(self.workdir / f"{host}.log")
            path = self.workdir / f"{host}.notify"
            path.unlink(missing_ok=True)
            if host in self.notify:
                self.notify.pop(host).close()
            n = self.notify[host] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            n.bind(str(path))
            env = {**os.environ, "NOTIFY_SOCKET": str(path)}
            self.procs[host] = [self.seg.spawn(host, argv, log=log, env=env)]
        else:
            self.procs[host] = [self.seg.spawn(host, argv) for argv in ucarp_argvs(plan, host)]

    def control(self, host: str) -> str:
        return str(self.workdir / f"{host}.sock")

    def ready_after(self, host: str, timeout: float = 120.0) -> float | None:
        """Seconds from `start` to the daemon's READY=1 (None: not within `timeout`)."""
        n = self.notify[host]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            n.settimeout(left)
            try:
                data = n.recv(4096)
            except TimeoutError:
                return None
            if b"READY=1" in data.split(b"\n"):
                return time.monotonic() - self.started_at[host]
        return None

    def pids(self, host: str) -> list[int]:
        return [p.pid for p in self.procs.get(host, [])]

    def wire_groups(self) -> dict[str, list[int]]:
        """`measure` groups: per veth end ('ENGINE.wire:namespace/device'), the PIDs of its NAPI
        kernel threads (only ever read, never signalled)."""
        return {
            f"{self.engine}.wire:{key}": [pid for _, pid in pairs]
            for key, pairs in self.wire.items()
        }

    def wire_usage(self, usage: dict[str, Usage]) -> dict[str, Any]:
        """The wire's run time over the window, summed and per veth end, as the hosts' figures
        are given; `kept`: every thread was still the same NAPI thread at the end (the sums
        cover the whole window)."""
        kept = all(
            is_napi_thread(pid, key.split("/", 1)[1], napi_id)
            for key, pairs in self.wire.items()
            for napi_id, pid in pairs
        )
        ends = {k: usage[f"{self.engine}.wire:{k}"] for k in self.wire}
        if not kept:  # a thread gone reads 0: its sum would be short, even negative
            return {"napi_threads": sum(u.processes for u in ends.values()), "kept": False}
        run = sum(u.run_s for u in ends.values())
        window = next(iter(ends.values())).window_s
        return {
            "napi_threads": sum(u.processes for u in ends.values()),
            "sched_cpu_s_per_min": round(run * 60.0 / window, 3),
            "sched_cpu_pct_of_core": round(run / window * 100, 2),
            "per_end": {
                k: {
                    "napi_ids": [i for i, _ in self.wire[k]],
                    "sched_cpu_pct_of_core": u.to_json()["sched_cpu_pct_of_core"],
                }
                for k, u in ends.items()
            },
            "kept": kept,
        }

    def held(self, host: str) -> set[str]:
        return {a.split("/")[0] for a in self.seg.addresses(host) if is_vip(a)}

    def kill(self, host: str) -> float:
        """Pull the cable (its bridge port down), then SIGKILL every process; the pull's time."""
        t = time.time()
        self.seg.link(host, False)
        procs = self.procs.pop(host, [])
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
        return t

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every process by PID at once, then reap them (SIGKILL after `timeout`)."""
        procs = [p for ps in self.procs.values() for p in ps]
        if self.monitor is not None:
            procs.append(self.monitor.proc)
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        for n in self.notify.values():
            n.close()
        self.notify.clear()


def ucarp_argvs(plan: Plan, host: str) -> list[list[str]]:
    """The generated ucarp lines for `host`, in the foreground, as `Lab.ucarp_argvs` builds them."""
    opts = UcarpOptions(
        ucarp=shutil.which("ucarp") or DEFAULT_UCARP,
        passfile=str(Path(plan.cluster.path).parent / "password"),
        upscript=str(CONTRIB / "vip-up.sh"),
        downscript=str(CONTRIB / "vip-down.sh"),
    )
    return [list(command(i, daemonize=False)) for i in instances(plan, host, opts)]


def wait_until(what: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(step)
    return bool(what())


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def takeover(side: Side, plan: Plan, d: float, advbase: float, extra: float) -> dict[str, Any]:
    """Kill the owner of `side`; per VIP, when the survivor's kernel got the address."""
    assert side.monitor is not None
    mon = side.monitor
    vips = {str(v.ip): v for v in plan.vips}
    mon.poll()
    t_kill = side.kill(OWNER)
    deadline = time.monotonic() + d + extra
    while time.monotonic() < deadline:
        mon.poll(0.05)
        if len(mon.added_since(t_kill)) >= len(vips):
            break
    added = mon.added_since(t_kill)
    last = mon.ask_last_advert()
    served = {ip: t - t_kill for ip, t in added.items() if ip in vips}
    past_d = []
    for ip, t in added.items():
        v = vips.get(ip)
        heard = last.get(f"{v.group}/{v.vhid}") if v else None
        if heard is not None:
            past_d.append(t - (heard + d))
    held = side.held(SURVIVOR)
    out: dict[str, Any] = {
        "D_s": round(d, 4),
        "T_s": advbase,
        "served": len(served),
        "of": len(vips),
        "held_after": len(held & set(vips)),
    }
    if served:
        vals = list(served.values())
        out["kill_to_served_s"] = {
            "min": round(min(vals), 4),
            "p50": round(statistics.median(vals), 4),
            "p99": round(percentile(vals, 0.99), 4),
            "max": round(max(vals), 4),
        }
        out["last_minus_first_s"] = round(max(vals) - min(vals), 4)
    if past_d:
        out["past_D_s"] = {
            "min": round(min(past_d), 4),
            "p50": round(statistics.median(past_d), 4),
            "p99": round(percentile(past_d, 0.99), 4),
            "max": round(max(past_d), 4),
        }
        out["within_D_plus_100ms"] = sum(1 for x in past_d if x <= TARGET_PAST_D)
        out["within_target"] = sum(1 for x in past_d if x <= target_past_d(len(vips)))
    return out


@dataclass
class Tracked:
    """What this run made, to check at the end that none of it is left."""

    prefixes: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


def run_size(
    vips: int,
    groups: int,
    window: float,
    warmup: float,
    tmp: Path,
    track: Tracked,
    engines: Sequence[str] = ("iprotate", "ucarp"),
    profile: bool = False,
    profile_takeover: bool = False,
    wire: str = "napi",
) -> dict[str, Any]:
    """One size: the engines side by side, steady state, then a takeover each; each segment on
    the NAPI wire (`napi_wire`) unless `wire` is "veth". With `profile`,
    iprotate runs under cProfile and, after the steady-state window, both hosts are stopped
    cleanly (no takeover) and their profiles' top lines returned; with `profile_takeover` too,
    the owner is killed first (its profile is lost), the survivor takes over, is stopped, and
    its profile (steady state and takeover) is returned with the takeover's figures."""
    workdir = tmp / f"v{vips}"
    workdir.mkdir(parents=True)
    write_password(workdir)
    cluster_file = workdir / "cluster.toml"
    cluster_file.write_text(cluster_toml(vips, groups))
    plan = make_plan(load_cluster(cluster_file))
    c = plan.cluster
    d = max(master_down(c.advbase, v.advskew_of(SURVIVOR), c.dead_ratio) for v in plan.vips)
    used_groups = sorted({str(v.group) for v in plan.vips})
    result: dict[str, Any] = {
        "bench": "scale",
        "vips": vips,
        "groups": used_groups,
        "layout": layout(plan),
        "window_s": window,
        "wire": wire,
        "machine": machine(),
        "revision": revision(),
    }
    wanted = {str(v.ip) for v in plan.vips}
    with contextlib.ExitStack() as stack:
        sides = []
        for engine in engines:
            seg = stack.enter_context(Segment())
            track.prefixes.append(seg.prefix)
            side = Side(engine, seg, workdir / engine, profile=profile)
            side.workdir.mkdir()
            stack.callback(side.stop_all)
            for name, octet in OCTETS.items():
                seg.add(name, octet, INTERFACE)
            if wire == "napi":
                side.wire = napi_wire(seg)
            argv = [sys.executable, str(Path(__file__).resolve()), "--monitor"]
            argv += ["--owner", f"198.51.100.{OCTETS[OWNER]}", "--mcast", ",".join(used_groups)]
            argv += ["--me", f"198.51.100.{OCTETS[SURVIVOR]}"]
            log = str(side.workdir / "monitor.log")
            mon = Monitor(seg.spawn(SURVIVOR, argv, log=log, stdout=subprocess.PIPE))
            side.monitor = mon
            track.pids.append(mon.proc.pid)
            mon.wait_ready()
            sides.append(side)
        # Owners first: they take every VIP after D; then the survivors join as backups.
        t0 = time.monotonic()
        ready: dict[str, float | None] = {}
        for side in sides:
            side.start(OWNER, cluster_file, plan)
            if side.engine == "iprotate":  # before ucarp's processes are spawned
                ready[OWNER] = side.ready_after(OWNER)
        for side in sides:
            if not wait_until(lambda s=side: s.held(OWNER) == wanted, d + 20):
                raise RuntimeError(f"{side.engine}: {OWNER} did not take all {vips} VIPs")
        result["owner_up_s"] = round(time.monotonic() - t0, 2)
        survivor_t0 = time.monotonic()
        for side in sides:
            side.start(SURVIVOR, cluster_file, plan)
            if side.engine == "iprotate":
                ready[SURVIVOR] = side.ready_after(SURVIVOR)
            track.pids += side.pids(OWNER) + side.pids(SURVIVOR)
        time.sleep(warmup)
        pids = {}
        for side in sides:
            for host in (OWNER, SURVIVOR):
                pids[f"{side.engine}.{host}"] = side.pids(host)
            if side.wire:
                pids.update(side.wire_groups())
        load0 = os.getloadavg()[0]
        usage = measure(pids, window)
        result["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        for side in sides:
            assert side.monitor is not None
            side.monitor.poll()
            flaps = [e for e in side.monitor.events if e["op"] == "add"]
            ok = side.held(OWNER) == wanted and not side.held(SURVIVOR)
            result[side.engine] = {
                "owner": usage[f"{side.engine}.{OWNER}"].to_json(),
                "survivor": usage[f"{side.engine}.{SURVIVOR}"].to_json(),
                "steady": ok,
                "survivor_adds_before_kill": len(flaps),
            }
            if side.wire:
                result[side.engine]["wire"] = side.wire_usage(usage)
            if side.engine == "iprotate":
                up = time.monotonic() - survivor_t0
                result["iprotate"]["survivor_counters"] = status_counters(side, SURVIVOR)
                result["iprotate"]["survivor_up_s"] = round(up, 1)
                result["iprotate"]["ready_s"] = {h: _round(t, 3) for h, t in ready.items()}
        if profile:
            if profile_takeover:
                for side in sides:
                    result[side.engine]["takeover"] = takeover(side, plan, d, c.advbase, 3.0)
            for side in sides:
                side.stop_all(timeout=30.0)
            for host in (OWNER, SURVIVOR):
                prof = workdir / "iprotate" / f"{host}.prof"
                result["iprotate"][f"{host}_profile"] = profile_top(prof) if prof.exists() else []
            return result
        for side in sides:
            if side.engine == "iprotate":
                result["iprotate"]["control"] = control_calls(side, cluster_file, plan, d)
        # Takeovers one after the other, each while the other segment runs.
        for side in sides:
            extra = 3.0 if side.engine == "iprotate" else 5.0  # ucarp: D + 0..1 s, scripts
            result[side.engine]["takeover"] = takeover(side, plan, d, c.advbase, extra)
        for side in sides:
            if side.engine == "iprotate":
                result["iprotate"]["fail_back"] = fail_back(side, cluster_file, plan)
        if "iprotate" in engines:
            log = (workdir / "iprotate" / f"{SURVIVOR}.log").read_text()
            result["iprotate"]["survivor_log_to_master"] = log.count("BACKUP -> MASTER")
    return result


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def timed_request(path: str, payload: dict[str, Any]) -> tuple[float, dict[str, Any], int]:
    """(seconds, answer, answer bytes) of one control request, connection included."""
    t = time.perf_counter()
    answer = control.request(path, payload, timeout=60.0)
    return time.perf_counter() - t, answer, len(json.dumps(answer))


def control_calls(side: Side, cluster_file: Path, plan: Plan, d: float) -> dict[str, Any]:
    """A `status` call on each host; then a reload that changes one VIP (the last one gets
    another address, so another vhid) on both hosts, and one that changes it back; each timed
    as the control socket answers it. Waits until the owner serves every VIP again."""
    out: dict[str, Any] = {}
    for host in (OWNER, SURVIVOR):
        secs, answer, size = timed_request(side.control(host), {"cmd": "status"})
        out[f"status_{host}_s"] = round(secs, 4)
        out[f"status_{host}_bytes"] = size
        out[f"status_{host}_level"] = answer.get("status", {}).get("level")
    original = cluster_file.read_text()
    last = plan.vips[-1]
    moved = f"{last.ip.packed[0]}.{last.ip.packed[1]}.{last.ip.packed[2]}.251"
    changed = original.replace(f'address = "{last.ip}/32"', f'address = "{moved}/32"')
    assert changed != original
    for name, text in (("reload_one_vip", changed), ("reload_back", original)):
        cluster_file.write_text(text)
        for host in (OWNER, SURVIVOR):
            secs, answer, _ = timed_request(side.control(host), {"cmd": "reload"})
            out[f"{name}_{host}_s"] = round(secs, 4)
            out[f"{name}_{host}_answer"] = answer
    wanted = {str(v.ip) for v in plan.vips}
    t = time.monotonic()
    back = wait_until(lambda: side.held(OWNER) == wanted, d + 10, step=0.2)
    out["owner_serves_all_again_s"] = round(time.monotonic() - t, 2) if back else None
    return out


def fail_back(side: Side, cluster_file: Path, plan: Plan, timeout: float = 60.0) -> dict[str, Any]:
    """After the takeover: the owner's cable back, its daemon started again (hold-down 0, the
    default stagger); when it is READY, and when it holds the first VIP, half, and all of them
    again (polled every 0.25 s)."""
    side.seg.link(OWNER, True)
    side.start(OWNER, cluster_file, plan)
    ready = side.ready_after(OWNER)
    t0 = side.started_at[OWNER]
    wanted = {str(v.ip) for v in plan.vips}
    marks: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(side.held(OWNER) & wanted)
        now = time.monotonic() - t0
        if n >= 1:
            marks.setdefault("first", now)
        if n >= len(wanted) / 2:
            marks.setdefault("half", now)
        if n == len(wanted):
            marks["all"] = now
            break
        time.sleep(0.25)
    return {
        "vips": len(wanted),
        "ready_s": _round(ready, 3),
        **{f"{k}_back_s": round(v, 2) for k, v in marks.items()},
        "survivor_still_holds": len(side.held(SURVIVOR) & wanted),
    }


def profile_top(path: Path, lines: int = 25) -> list[str]:
    """The top of a cProfile dump, by own time (tottime), as pstats prints it."""
    out = io.StringIO()
    st = pstats.Stats(str(path), stream=out)
    st.sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    body = text[text.index("ncalls") :] if "ncalls" in text else text
    head = [ln.strip() for ln in text.splitlines() if "function calls" in ln]
    return head + [ln.rstrip() for ln in body.splitlines() if ln.strip()]


def layout(plan: Plan) -> dict[str, Any]:
    """Per group, the VIPs' range, count and vhids; and the VIPs whose vhid is pinned."""
    per: dict[str, list[Any]] = {}
    for v in plan.vips:
        per.setdefault(str(v.group), []).append(v)
    out: dict[str, Any] = {}
    for g, vs in sorted(per.items()):
        ips = sorted(v.address.ip for v in vs)
        vhids = sorted(v.vhid for v in vs)
        out[g] = {
            "vips": len(vs),
            "range": f"{ips[0]}-{ips[-1]}/{vs[0].address.network.prefixlen}",
            "vhids": f"{vhids[0]}..{vhids[-1]}",
            "distinct_vhids": len(set(vhids)),
            "pinned": [
                f"{v.address.ip} vhid {v.vhid}" for v in vs if v.vhid != v.address.ip.packed[3]
            ],
        }
    return out


def status_counters(side: Side, host: str, timeout: float = 3.0) -> dict[str, int]:
    """An iprotate daemon's counters: SIGUSR1 makes it log them (as tests/labtools does)."""
    (proc,) = side.procs[host]
    log = side.workdir / f"{host}.log"
    before = log.read_text().count("status counters:")
    os.kill(proc.pid, signal.SIGUSR1)
    if not wait_until(lambda: log.read_text().count("status counters:") > before, timeout):
        return {}
    line = log.read_text().rsplit("status counters:", 1)[1].splitlines()[0]
    return {k: int(n) for k, n in (kv.split("=") for kv in line.split() if "=" in kv)}


# --- estimates ----------------------------------------------------------------------------------


def extrapolate_ucarp(results: list[dict[str, Any]], n: int) -> dict[str, Any] | None:
    """ucarp at `n` VIPs, not run: the largest measured ucarp size's figures per process (one
    process per VIP per host) times `n`. An estimate, said so wherever it is shown."""
    runs = [r for r in results if r.get("bench") == "scale" and "ucarp" in r and "error" not in r]
    if not runs:
        return None
    base = max(runs, key=lambda r: r["vips"])
    k = base["vips"]
    out: dict[str, Any] = {"from_vips": k}
    for role in ("owner", "survivor"):
        u = base["ucarp"][role]
        out[role] = {
            "processes": n,
            "rss_mb": round(u["rss_mb"] / k * n, 1),
            "pss_mb": round(u["pss_mb"] / k * n, 1),
            "sched_cpu_pct_of_core": round(u["sched_cpu_pct_of_core"] / k * n, 2),
        }
    return out


# --- output --------------------------------------------------------------------------------------

# What each cut bought, measured on the way: 1,000 VIPs in 4 groups, own run time (schedstat) over
# 30 s of the owner and the survivor, and the takeover's worst VIP past D. The machine was shared
# with other jobs: +-0.2 points. (commits, cut, owner %, survivor %, past D max s or None)
CUTS: list[tuple[str, str, float, float, float | None]] = [
    (
        "6ec6d6e",
        "main plus: address events find their VIP by an index, not a scan of every VIP (N x N "
        "at a takeover: under cProfile main's survivor spent 3.6 s in it, missed adverts, took "
        "936 VIPs from a live master and flapped; main was not measured without the profiler)",
        3.83,
        4.25,
        0.319,
    ),
    (
        "ff964dd ada26a2 fa04c15",
        "one-shot HMACs, adverts packed without an intermediate object, each group's sendto "
        "destination made once, the timer armed once per batch of packets read",
        3.14,
        4.12,
        None,
    ),
    (
        "f120017",
        "the node's host and group addresses hash once (ipaddress computes hex(int) per hash)",
        2.81,
        3.12,
        None,
    ),
    (
        "bb2dbee 5779199 79509d6",
        "netlink requests packed by hand (pyroute2 took 0.1 ms each at a takeover); the native "
        "tag's fixed parts and VipPlan.ip made once",
        2.98,
        3.13,
        0.115,
    ),
    (
        "5f5f970 300b0fc 807b991 1caaa63 e82012d 4f128c5 b429d82",
        "received adverts built without re-checking struct's output, one-pass native check, "
        "Seen updated in place, one live timer-heap entry per machine (a backup's deadline "
        "re-queued when due, not pushed per advert), priority check in place, state-change "
        "lines of a mass takeover logged after its effects",
        2.75,
        2.48,
        0.106,
    ),
]


# Round two (issue 12 again), from main after the IPv6, checks and BGP merges: 1,000 and 4,000
# VIPs, own run time over 20 to 30 s windows, takeover worst VIP past D. None: not measured at
# that commit. (commits, cut, 1,000: owner %, survivor %, past D max s, 4,000: the same)
CUTS2: list[tuple[str, str, tuple[float | None, ...]]] = [
    (
        "eda5acf",
        "main today, before round two (the merges added the planned-skew lookup per advert, "
        "IPv6 branches; the takeover had regressed: masters advertised in step, see Phase)",
        (3.03, 2.70, 0.135, 12.36, 10.10, 1.648),
    ),
    (
        "e2079b0 173697a 65c2132 abdbd91 c69e8b4",
        "receive path: decoded without address objects, one route lookup per advert (VIP, "
        "digest prefix, planned skews by source), HMACs through _hashlib directly, adverts "
        "filled in with one dict update, D computed once per advert; no address hashed per "
        "advert sent, nothing built for a backup's empty effects; address events built from "
        "packed bytes",
        (2.75, 2.01, 0.177, 12.52, 8.33, 0.926),
    ),
    (
        "b585f51 694f7d9",
        "one AdvertEncoder per VIP (checks and digest prefix once); each VIP's adverts at its "
        "own phase of the interval: takeover spread, but an event-loop wake-up per advert",
        (10.54, 8.33, 0.024, 25.64, 18.81, 0.331),
    ),
    (
        "d7102d6",
        "adverts on a grid of 16 points of the interval: 16 batches a second, spread over it "
        "(the full run of this page at d7102d6; 256 VIPs: 1.41 / 1.10 %, round one 0.72 / 0.67)",
        (3.65, 2.70, 0.011, 13.82, 9.42, 0.105),
    ),
    (
        "0afff93",
        "one point of the grid per 250 VIPs of the node (1 to 250 VIPs: one batch, 1,000: 4, "
        "4,000: 16); a 4-point trial at 1,000 VIPs: 3.27 / 2.49 %, max 0.038 s past D",
        (3.67, 2.81, 0.073, 15.15, 10.52, 0.064),
    ),
]

# Round three (issue 12, the CPU targets), on a quiet machine (no other job running during the
# windows, 1-minute load below 1): 1,000 VIPs, own run time over 40 s windows, a row per
# measured step, some steps measured more than once (each run given). (commits, cut, runs of
# (owner %, survivor %, past D max s or None: not kept)).
CUTS3: list[tuple[str, str, list[tuple[float, float, float | None]]]] = [
    (
        "9a72c03",
        "main before round three, plain veths (the receiving side's kernel work charged to the "
        "sender: see the wire above)",
        [(3.85, 3.00, 0.027), (3.46, 2.89, None)],
    ),
    (
        "49c6098",
        "an advert of a known (sender, VIP) pair found by one lookup of its raw bytes (the "
        "routing checks once per pair); marks per VIP for the native tag; the checksum as one "
        "big-integer remainder; a batch's adverts encoded first, then sent back to back (each "
        "sendto between two encodings woke the receiving side again: 24 us a sendto under "
        "cProfile, 12 us in a tight loop); plain veths",
        [(2.71, 1.62, 0.061)],
    ),
    (
        "49c6098 + the NAPI wire",
        "the same code on the wire above (the bench's change): the sender no longer pays for "
        "the receiver's kernel work",
        [(2.26, 1.74, 0.067)],
    ),
    (
        "a8527fc",
        "the timer heap holds a slot per machine (its queued time and seal), not keys hashed "
        "five times an advert; HMACs from keyed states copied per MAC (OpenSSL 3's one-shot "
        "HMAC sets the key up each call: 1.3-1.5 us against 0.7)",
        [(1.87, 1.31, 0.059)],
    ),
    (
        "c460374",
        "fewer calls per advert sent: advskew without nested properties, VipPlan.group made "
        "once, the digest inlined in the encoder",
        [(2.27, 1.50, 0.060), (1.79, 1.37, None), (1.76, 1.43, None)],
    ),
    (
        "afa105e",
        "slotted dataclasses (machine, config, actions, marks, Seen); a master's advert action "
        "reused while its values stay; adverts_sent counted per batch",
        [(1.78, 1.48, 0.027), (2.03, 1.61, 0.050)],
    ),
    (
        "823486d f59d98e 80f8733",
        "the node encodes each advert it seals (the shell only sends); HMACs from copied inner "
        "and outer hash states, the copies inlined where every advert passes; the checksum "
        "summed from the fields; one timer-heap entry per time, not per machine (the slots due "
        "then kept in order: a grid point's hundreds of machines share a time)",
        [(1.36, 1.18, None), (1.90, 1.53, None), (1.56, 1.29, None), (1.59, 1.48, None)],
    ),
    (
        "f0145d6",
        "the CARP sockets' send buffer sized as the receive buffer, and a queue on every veth "
        "end of the wire: from the NAPI wire on, every run above lost the tail of the largest "
        "burst in veth's 256-packet ring (the survivor heard 44,842 to 44,990 adverts of "
        "45,000 and took 2 to 22 VIPs from the live owner for a few seconds); this page's run "
        "heard all 45,250 and took none",
        [(1.91, 1.48, 0.066)],
    ),
]


# Round four (issue 12, the 4,000-VIP CPU target): 4,000 VIPs, `--sizes 4000 --engines iprotate
# --window 30`, a run per figure, the same layout as round three. Found on the way: the owner's
# profile (py-spy, perf) showed the send path formatting the group's address on every advert.
CUTS4: list[tuple[str, str, list[tuple[float, float, float | None]]]] = [
    ("5551d8f", "main at the start of round four", [(7.81, 5.90, 0.056)]),
    (
        "5e0049c b5fc034",
        "one group object per group address (the send path's socket-address cache is keyed by "
        "identity and held 1,024 entries: 4,000 VIPs had 4,000 group objects, so every advert "
        "formatted its group's address again); a master's periodic advert without timer's "
        "list and checks (CarpMachine.periodic_advert)",
        [(6.70, 5.64, None)],
    ),
    (
        "e0c907b",
        "per-VIP keyed hash states after each VIP's fixed bytes (only the seq and counter "
        "hashed per advert): faster for one VIP in a tight loop, slower at 4,000 (4,000 states' "
        "memory against one hot state; reverted in the next row); Effect a named tuple and the "
        "sealed advert built without the frozen dataclass's __init__",
        [(7.13, 6.00, None)],
    ),
    ("f435574", "the per-VIP states reverted, the rest kept", [(6.30, 5.19, 0.069)]),
    (
        "6377d29",
        "SendAdvert a named tuple, its bytes on the Effect: both made from tuple free lists "
        "(the sealed dataclass's instance dicts were 6 % of the owner's time under py-spy); the "
        "first figure is this page's run (60 s window), the second a run at a load of 0.7",
        [(6.51, 6.03, 0.065), (7.10, 6.77, 0.125)],
    ),
]


def cuts_runs_table(
    rows: list[tuple[str, str, list[tuple[float, float, float | None]]]], size: str
) -> list[str]:
    """Rounds three and four: a row per step, each run's figures side by side."""
    out = [
        f"| commits | cut | {size}: owner % | survivor % | past D max s |",
        "|---|---|---:|---:|---:|",
    ]
    for commits, cut, runs in rows:
        owner = " / ".join(_p(o) for o, _, _ in runs)
        survivor = " / ".join(_p(v) for _, v, _ in runs)
        past = " / ".join(_s(d) for _, _, d in runs if d is not None)
        out.append(f"| {commits} | {cut} | {owner} | {survivor} | {past or '-'} |")
    return out


def cuts2_table() -> list[str]:
    out = [
        "| commits | cut | 1,000: owner % | survivor % | past D max s "
        "| 4,000: owner % | survivor % | past D max s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for commits, cut, v in CUTS2:
        o1, s1, d1, o4, s4, d4 = v
        cells = [_p(o1), _p(s1), _s(d1), _p(o4), _p(s4), _s(d4)]
        out.append(f"| {commits} | {cut} | " + " | ".join(cells) + " |")
    return out


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def cuts_table() -> list[str]:
    out = [
        "| commits | cut | owner % of a core | survivor % of a core | takeover past D, max s |",
        "|---|---|---:|---:|---:|",
    ]
    for commits, cut, owner, survivor, past_d in CUTS:
        out.append(f"| {commits} | {cut} | {owner:.2f} | {survivor:.2f} | {_s(past_d)} |")
    return out


def _pct(d: dict[str, Any] | None, key: str = "sched_cpu_pct_of_core") -> str:
    return "-" if not d or key not in d else f"{d[key]:.2f}"


def _mb(d: dict[str, Any] | None) -> str:
    return "-" if not d or "rss_mb" not in d else f"{d['rss_mb']:.1f}"


def _s(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def target_past_d(vips: int) -> float:
    """The takeover target past D: 100 ms up to 1,000 VIPs, 250 ms above (issue 12)."""
    return TARGET_PAST_D if vips <= 1000 else 0.250


def target_rss_cpu(vips: int) -> tuple[float, float]:
    return (TARGET_RSS_MB, TARGET_CPU_PCT) if vips <= 1000 else (96.0, 6.0)


def markdown(results: list[dict[str, Any]], command: str, profile: list[str] | None) -> str:
    """The results as a markdown page."""
    ucarp_max = max((r["vips"] for r in results if "ucarp" in r), default=UCARP_MAX)
    runs = [r for r in results if r.get("bench") == "scale" and "error" not in r]
    failed = [r for r in results if r.get("bench") == "scale" and "error" in r]
    rev = runs[0]["revision"] if runs else revision()
    mach = runs[0]["machine"] if runs else machine()
    loads = [x for r in runs for x in r.get("loadavg_1m", [])]
    lines = [
        "# Scale: one `iprotate run` with 1 to 4,000 VIPs, beside ucarp",
        "",
        f"Command: `{command}`. Revision {rev}. Machine: {mach}, a virtual machine (1-minute "
        f"load average {min(loads, default=0):.1f} to {max(loads, default=0):.1f} during the "
        "windows, the ucarp segment's processes included): CPU% of a process is its own run "
        "time (/proc/PID/schedstat) over the window. Between runs of the same code it moves "
        "by about 10 % (round four below).",
        "",
        "Per size two segments run side by side, each with two hosts: alpha owns every VIP "
        "(`owner` pins), bravo is the survivor. One runs `iprotate run` on both hosts, the other "
        "one ucarp process per VIP per host (the lines `iprotate ucarp` generates), up to "
        f"{ucarp_max:,} VIPs; above that ucarp is **extrapolated** from its measured per-process "
        "figures, not run. VIPs are /32s from 198.18.0.0/15 (the benchmarking range, inside the "
        "bench's own namespaces only), 250 per multicast group (vhids 1..250): 1 VIP in 1 "
        "group, 256 in 2, 1,000 in 4, 4,000 in 16. advbase 1, dead_ratio 3, survivor advskew "
        "from the plan: D = 3.25 s.",
        "",
        wire_sentence({r.get("wire", "veth") for r in runs}),
        "",
        "## Steady state (owner holds every VIP, survivor is backup of every VIP)",
        "",
        *([UCARP_1000, ""] if ucarp_max < 1000 else []),
        "load: the machine's 1-minute load average before and after the window (other "
        "engineers' test runs share the machine).",
        "",
        "| VIPs | groups | engine | processes | owner RSS MB | owner PSS MB | owner % of a core "
        "| survivor RSS MB | survivor % of a core | wire % of a core | load |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        for eng in ("iprotate", "ucarp"):
            e = r.get(eng)
            if e is None:
                continue
            lines.append(
                f"| {r['vips']:,} | {len(r['groups'])} | {eng} | {e['owner']['processes']} | "
                f"{_mb(e['owner'])} | {e['owner']['pss_mb']:.1f} | {_pct(e['owner'])} | "
                f"{_mb(e['survivor'])} | {_pct(e['survivor'])} | {_pct(e.get('wire'))} | "
                f"{' -> '.join(f'{x:.1f}' for x in r.get('loadavg_1m', []))} |"
            )
        x = r.get("ucarp_extrapolated")
        if x:
            lines.append(
                f"| {r['vips']:,} | {len(r['groups'])} | ucarp (extrapolated from "
                f"{x['from_vips']:,}, not run) | {x['owner']['processes']} | "
                f"{_mb(x['owner'])} | {x['owner']['pss_mb']:.1f} | {_pct(x['owner'])} | "
                f"{_mb(x['survivor'])} | {_pct(x['survivor'])} | - | - |"
            )
    lines += [
        "",
        "## Takeover after a hard kill of the owner (cable pulled, then SIGKILL)",
        "",
        "served: the survivor's kernel has the address (netlink, in its namespace). past D: "
        "address added minus (the last advert the survivor heard for that vhid + D), the "
        "protocol's own bound. Target: every VIP within D + 100 ms at 1,000 VIPs, D + 250 ms at "
        "4,000. ucarp reacts 0..1 s late (libpcap's 1 s timeout, CARP.md) and runs a script per "
        "VIP.",
        "",
        "| VIPs | engine | served | kill -> served p50 s | max s | past D p50 s | p99 s | max s "
        "| within target |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        for eng in ("iprotate", "ucarp"):
            t = (r.get(eng) or {}).get("takeover")
            if not t:
                continue
            ks, pd = t.get("kill_to_served_s", {}), t.get("past_D_s", {})
            limit = target_past_d(r["vips"])
            within = t.get("within_target", "-")
            lines.append(
                f"| {r['vips']:,} | {eng} | {t['served']}/{t['of']} | {_s(ks.get('p50'))} | "
                f"{_s(ks.get('max'))} | {_s(pd.get('p50'))} | {_s(pd.get('p99'))} | "
                f"{_s(pd.get('max'))} | {within}/{t['of']} (D + {limit * 1000:.0f} ms) |"
            )
    lines += [
        "",
        "## Start-up, status, reload, fail-back (iprotate)",
        "",
        "READY: from the spawn of `python -m iprotate run` (interpreter start included) to its "
        "sd_notify READY=1. status: one `status` request through the control socket, answered "
        "(connection included). reload: a reload that changes one VIP (the last VIP gets "
        "another address, so another vhid: one VIP removed, one added), on the owner. "
        "fail-back: the killed owner's cable back and its daemon started again (hold-down 0, "
        "stagger 0.1 s in a 10 s window): when it holds the first VIP, half of them, and all "
        "again, from its spawn.",
        "",
        "| VIPs | owner READY s | survivor READY s | status owner ms | status bytes "
        "| reload one VIP ms | fail-back READY s | first back s | half back s | all back s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        ip = r.get("iprotate")
        if not ip:
            continue
        rd, ctl, fb = ip.get("ready_s", {}), ip.get("control", {}), ip.get("fail_back", {})

        def ms(x: float | None) -> str:
            return "-" if x is None else f"{x * 1000:.0f}"

        lines.append(
            f"| {r['vips']:,} | {_s(rd.get('alpha'), 2)} | {_s(rd.get('bravo'), 2)} | "
            f"{ms(ctl.get('status_alpha_s'))} | {ctl.get('status_alpha_bytes', '-'):,} | "
            f"{ms(ctl.get('reload_one_vip_alpha_s'))} | {_s(fb.get('ready_s'), 2)} | "
            f"{_s(fb.get('first_back_s'), 2)} | {_s(fb.get('half_back_s'), 2)} | "
            f"{_s(fb.get('all_back_s'), 2)} |"
        )
    lines += [
        "",
        "## Targets (iprotate)",
        "",
        "| VIPs | groups | RSS (owner, survivor) | CPU (owner, survivor) | takeover: every VIP "
        "within |",
        "|---:|---:|---|---|---|",
    ]
    for r in runs:
        ip = r.get("iprotate")
        if not ip:
            continue
        rss_t, cpu_t = target_rss_cpu(r["vips"])
        o, v = ip["owner"], ip["survivor"]
        rss_ok = max(o["rss_mb"], v["rss_mb"]) < rss_t
        cpu_ok = max(o["sched_cpu_pct_of_core"], v["sched_cpu_pct_of_core"]) < cpu_t
        t = ip.get("takeover", {})
        limit = target_past_d(r["vips"])
        ok = t.get("within_target") == t.get("of") and t.get("served") == t.get("of")
        lines.append(
            f"| {r['vips']:,} | {len(r['groups'])} | {_yes(rss_ok)}: {o['rss_mb']:.1f}, "
            f"{v['rss_mb']:.1f} < {rss_t:.0f} MB | {_yes(cpu_ok)}: "
            f"{o['sched_cpu_pct_of_core']:.2f}%, {v['sched_cpu_pct_of_core']:.2f}% < "
            f"{cpu_t:.0f}% | {_yes(ok)}: D + {limit * 1000:.0f} ms, "
            f"{t.get('within_target', '-')}/{t.get('of', '-')} |"
        )
    lines += [
        "",
        "## Receive path of the survivor (its counters since its start)",
        "",
        "| VIPs | seconds up | adverts_received | per VIP per second | drops |",
        "|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        ip = r.get("iprotate")
        if not ip or not ip.get("survivor_counters"):
            continue
        c = ip["survivor_counters"]
        up = ip.get("survivor_up_s", 0) or 1
        drops = {k: n for k, n in c.items() if k.startswith("drop_")}
        lines.append(
            f"| {r['vips']:,} | {up} | {c.get('adverts_received', 0)} | "
            f"{c.get('adverts_received', 0) / r['vips'] / up:.2f} | {drops or 'none'} |"
        )
    lines += ["", "## What each cut bought", "", "Round one:", "", *cuts_table(), ""]
    lines += ["Round two (1,000 and 4,000 VIPs):", "", *cuts2_table(), ""]
    lines += [
        "Round three (1,000 VIPs; a run per figure):",
        "",
        *cuts_runs_table(CUTS3, "1,000"),
        "",
    ]
    lines += [
        "Round four (4,000 VIPs; a run per figure):",
        "",
        *cuts_runs_table(CUTS4, "4,000"),
        "",
    ]
    if profile:
        lines += [
            "## Where the time goes now (cProfile, 1,000 VIPs)",
            "",
            "`python bench/scale.py --sizes 1000 --engines iprotate --profile`: both daemons "
            "under cProfile for the steady-state window (start-up included), by own time; "
            "`poll` is the event loop waiting.",
            "",
            "```",
            *profile,
            "```",
            "",
        ]
    for r in failed:
        lines += [f"**{r['vips']} VIPs failed**: {r['error']}", ""]
    return "\n".join(lines).rstrip() + "\n"


def wire_sentence(wires: set[str]) -> str:
    """What the segments' wire was, for the page's header."""
    if wires == {"napi"}:
        return (
            "The wire: on every veth end (members' interfaces, bridge ports) GRO with "
            "rx-udp-gro-forwarding and threaded NAPI, so the bridge and the receiver's kernel "
            "work (IP receive, raw-socket delivery, the wake-up) run on the receiving end's "
            "`napi/<dev>-<id>` kernel threads, as on a real segment the receiving machine does "
            "it; a plain veth runs it in the sender's context and charges it to the sending "
            "process. wire % of a core: those threads' run time over "
            "the window, summed per segment (both segments have this wire). `--wire veth` gives "
            "the old wire and its figures."
        )
    return (
        "The wire: plain veths (`--wire veth`, or a run before the NAPI wire): the bridge and "
        "the receiver's kernel work run in the sender's context and are charged to the sending "
        "process, which on a real segment the receiving machine does; "
        "the default wire moves that work to NAPI kernel threads and measures them."
    )


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def leftovers(prefixes: Sequence[str], pids: Sequence[int]) -> dict[str, Any]:
    """Namespaces with our prefixes and processes of ours still alive (both should be none)."""
    names = [line.split()[0] for line in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True
    ).stdout.splitlines() if line.strip()]  # fmt: skip
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and _is_ours(p)]
    return {
        "namespaces_left": [n for n in names if any(n.startswith(p) for p in prefixes)],
        "processes_left": alive,
    }


def _is_ours(pid: int) -> bool:
    """A PID still alive and still ucarp, iprotate or this script (not a reused PID)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(w in cmd for w in (b"ucarp", b"iprotate", b"scale.py"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1,256,1000,4000", help="VIP counts")
    ap.add_argument("--window", type=float, default=40.0, help="steady-state window, seconds")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    ap.add_argument("--engines", default="iprotate,ucarp", help="which segments to run")
    ap.add_argument(
        "--ucarp-max",
        type=int,
        default=UCARP_MAX,
        help="largest size ucarp runs at; above it ucarp is extrapolated",
    )
    ap.add_argument("--quick", action="store_true", help="sizes 1,64, 10 s window")
    ap.add_argument(
        "--profile", action="store_true", help="iprotate only, under cProfile: the top lines"
    )
    ap.add_argument(
        "--profile-takeover",
        action="store_true",
        help="with --profile: kill the owner after the window; the survivor's profile then "
        "covers its takeover (use a short --window)",
    )
    ap.add_argument(
        "--wire",
        choices=WIRES,
        default="napi",
        help="napi (default): the veths' receive work on NAPI kernel threads, as a real wire "
        "does it off the sender, and measured; veth: plain veths, the old wire (the receiver's "
        "kernel work charged to the sender)",
    )
    ap.add_argument("--keep", help="work in this directory and keep it (logs, cluster files)")
    ap.add_argument("--render", action="store_true", help="only write scale.md from scale.json")
    ap.add_argument("--out", default=str(RESULTS), help="where scale.json and scale.md go")
    ap.add_argument("--monitor", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--owner", help=argparse.SUPPRESS)
    ap.add_argument("--me", help=argparse.SUPPRESS)
    ap.add_argument("--mcast", default="", help=argparse.SUPPRESS)
    ap.add_argument("--napi-threads", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.napi_threads:
        try:
            print(json.dumps(napi_threads(args.napi_threads.split(","))))
        except OSError as e:  # no netdev family (Linux < 6.8), no such device
            sys.exit(f"netdev napi-get: {e}")
        return
    if args.monitor:
        monitor(INTERFACE, args.me, args.owner, [g for g in args.mcast.split(",") if g])
        return
    if args.render:
        out = Path(args.out)
        results = [json.loads(x) for x in (out / "scale.json").read_text().splitlines() if x]
        (out / "scale.md").write_text(markdown(results, _command(results), _profile(out)))
        return
    if os.geteuid() != 0:
        sys.exit("bench/scale.py needs root (network namespaces)")
    sizes = [1, 64] if args.quick else [int(x) for x in args.sizes.split(",")]
    for n in sizes:
        try:
            cluster_toml(n, groups_for(n))
        except ValueError as e:
            ap.error(f"--sizes {n}: {e}")
    window = 10.0 if args.quick else args.window
    results: list[dict[str, Any]] = []
    track = Tracked()
    with contextlib.ExitStack() as keep:
        if args.keep:
            tmp = args.keep
            Path(tmp).mkdir(parents=True, exist_ok=False)
        else:
            tmp = keep.enter_context(tempfile.TemporaryDirectory(prefix="iprotate-scale-"))
        for n in sizes:
            engines = [e for e in args.engines.split(",") if e in ("iprotate", "ucarp")]
            if args.profile or n > args.ucarp_max:
                engines = [e for e in engines if e == "iprotate"]
            try:
                r = run_size(
                    n,
                    groups_for(n),
                    window,
                    args.warmup,
                    Path(tmp),
                    track,
                    engines,
                    args.profile,
                    args.profile_takeover,
                    args.wire,
                )
            except WireError as e:
                sys.exit(f"bench/scale.py: the NAPI wire: {e}; `--wire veth` runs the old wire")
            except (RuntimeError, OSError) as e:  # NetnsError is a RuntimeError
                r = {"bench": "scale", "vips": n, "error": str(e)}
            print(json.dumps(r), flush=True)
            results.append(r)
    for r in results:
        if r.get("bench") == "scale" and "error" not in r and r["vips"] > args.ucarp_max:
            r["ucarp_extrapolated"] = extrapolate_ucarp(results, r["vips"])
    left = leftovers(track.prefixes, track.pids)
    print(json.dumps({"bench": "cleanup", **left}), flush=True)
    if left["namespaces_left"] or left["processes_left"]:
        print(f"warning: left behind: {left}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.profile_takeover:
        (out / "scale-profile-takeover.json").write_text(
            "".join(json.dumps(r) + "\n" for r in results)
        )
        return
    if args.profile:
        (out / "scale-profile.json").write_text("".join(json.dumps(r) + "\n" for r in results))
        return
    results.append({"bench": "cleanup", **left})
    command = ("python bench/scale.py " + " ".join(sys.argv[1:])).strip()
    results.append({"bench": "command", "command": command})
    (out / "scale.json").write_text("".join(json.dumps(r) + "\n" for r in results))
    (out / "scale.md").write_text(markdown(results, command, _profile(out)))


def _command(results: list[dict[str, Any]]) -> str:
    return next((r["command"] for r in results if r.get("bench") == "command"), "?")


def _profile(out: Path) -> list[str] | None:
    """The top lines of both hosts' profiles from scale-profile.json, if a --profile run left
    one in `out`."""
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        prof = json.loads((out / "scale-profile.json").read_text().splitlines()[0])
        lines = [f"--- {OWNER} (owner) ---", *prof["iprotate"][f"{OWNER}_profile"][:18]]
        lines += [f"--- {SURVIVOR} (survivor) ---", *prof["iprotate"][f"{SURVIVOR}_profile"][:18]]
        return lines
    return None


if __name__ == "__main__":
    main()
