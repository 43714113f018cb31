"""Failover benchmark: the same cluster run by iprotate, ucarp and keepalived, side by side.

    sudo .venv/bin/python bench/failover.py [--engines iprotate,ucarp,keepalived,...] [--repeat N]

One lab (network namespaces on one bridge, iprotate.lab.lab) per engine, one after the other,
each with 3 hosts and 12 VIPs planned by iprotate:

- iprotate            `iprotate run` on every host (advbase 1);
- ucarp               Debian's ucarp on every host, the lines `iprotate ucarp` generates;
- keepalived          Debian's keepalived, one vrrp_instance per VIP, priorities in plan order
                      (bench/keepalived.py);
- iprotate-subsecond  `iprotate run` with advbase 0 (owner 62 ms, first backup 187 ms);
- iprotate-ipv6       `iprotate run`, the same 12 VIPs as IPv6 addresses (2001:db8:113::/64);
- keepalived-ipv6     keepalived on those IPv6 VIPs: VRRPv3 (keepalived's only choice for IPv6),
                      one instance per VIP, the same plan-derived priorities.

iprotate runs with `--hold-down 0 --stagger 0` so that its fail-back is measured raw, like the
others' (its default waits 3 s after a host comes back, on purpose).

In each lab a client namespace pings every VIP every 10 ms (bench/pinger.py) and notes which host's
MAC answered each ping; a second client namespace runs `iprotate.lab.probe` (ARP: who claims
each VIP) every 50 ms without touching the first client's ARP cache. Scenarios, on the host
owning the most VIPs (ties rotate over the repeats), each once the cluster has settled:

- hard:     the engine SIGKILLed and the host's cable pulled, as one instant (`hard_fail`);
- failback: cable back, engine started again (Lab.restore);
- stop:     a clean stop, SIGTERM to all the host's engine processes (then restored, unmeasured).

For every VIP that changes hands: seconds from the fault to the first ping answered by its new
holder (the client's own ARP cache and the engine's gratuitous ARPs included) and to when it stays
there, which other hosts answered meanwhile, and the ARP view; for every VIP the pings lost (sent
after the fault, never answered). Writes bench/results/failover.{md,json,png} (--out to change);
logs and raw files go to bench/out/<engine>/. `--replot FILE.json` redraws table and plot only.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tabulate import tabulate

from iprotate.lab.lab import CLIENT, Lab
from iprotate.lab.netns import Segment, host_address6
from iprotate.plan.timing import master_down

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # the sibling modules, also when imported from the tests
from keepalived import KEEPALIVED, KeepalivedLab, priority  # noqa: E402
from keepalived import master_down as vrrp_master_down  # noqa: E402
from timeline import runs  # noqa: E402

HOSTS = 3
VIPS = 12
PING_INTERVAL = 0.01
ARP_PERIOD = 0.05
WATCH = "watch"  # the ARP watcher's namespace: a second client, so its ARP traffic never
WATCH_OCTET = 201  # updates the pinging client's neighbour cache
RAW_FAILBACK = ("--hold-down", "0", "--stagger", "0")
SCENARIOS = ("hard", "failback", "stop")
STEADY = 1.0  # seconds the cluster must look settled (hosts and client) before a fault
STABLE = 1.0  # seconds it must stay settled after a fault for the scenario to end
STREAK = 5  # consecutive pings from the expected host for a VIP to count as settled


@dataclass(frozen=True)
class Engine:
    """How one engine's lab is built."""

    name: str
    lab: type[Lab]
    legacy: int = 0
    advbase: int = 1
    run_args: tuple[str, ...] = ()
    note: str = ""
    ipv6: bool = False  # the VIPs are IPv6 addresses (the same count), not IPv4 ones


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            "iprotate", Lab, run_args=RAW_FAILBACK, note="`iprotate run --hold-down 0 --stagger 0`"
        ),
        Engine("ucarp", Lab, legacy=HOSTS, note="ucarp 1.5.2, lines from `iprotate ucarp`"),
        Engine("keepalived", KeepalivedLab, note="keepalived VRRPv2, priorities 250/200/150"),
        Engine(
            "iprotate-subsecond",
            Lab,
            advbase=0,
            run_args=RAW_FAILBACK,
            note="advbase 0 (advskew 16/48/112), `--hold-down 0 --stagger 0`",
        ),
        Engine(
            "iprotate-ipv6",
            Lab,
            run_args=RAW_FAILBACK,
            note="IPv6 VIPs, `iprotate run --hold-down 0 --stagger 0`",
            ipv6=True,
        ),
        Engine(
            "keepalived-ipv6",
            KeepalivedLab,
            note="IPv6 VIPs, keepalived VRRPv3, priorities 250/200/150",
            ipv6=True,
        ),
    )
}


# --- what the clients see ----------------------------------------------------------------------


@dataclass
class Reply:
    t: float  # monotonic time it arrived
    seq: int
    host: str  # the host whose MAC sent it (the MAC itself if it is no host's)


@dataclass
class Client:
    """Tails the pinger's and the ARP watcher's files and keeps everything they saw."""

    vips: list[str]
    macs: dict[str, str]  # MAC -> host
    ping_file: Path
    arp_file: Path
    sent: dict[int, float] = field(default_factory=dict)  # round -> time sent
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    errors: int = 0
    arp: list[tuple[float, dict[str, list[str]]]] = field(default_factory=list)
    _pos: dict[Path, int] = field(default_factory=dict)
    _buf: dict[Path, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.replies = {v: [] for v in self.vips}

    def _lines(self, path: Path) -> list[bytes]:
        try:
            with path.open("rb") as f:
                f.seek(self._pos.get(path, 0))
                data = f.read()
        except FileNotFoundError:
            return []
        self._pos[path] = self._pos.get(path, 0) + len(data)
        *lines, self._buf[path] = (self._buf.get(path, b"") + data).split(b"\n")
        return lines

    def poll(self) -> None:
        """Read what arrived since the last call."""
        for line in self._lines(self.ping_file):
            f = line.split()
            if f[0] == b"s":
                self.sent[int(f[1])] = float(f[2])
            elif f[0] == b"r":
                mac = f[4].decode()
                vip = self.vips[int(f[1])]
                self.replies[vip].append(Reply(float(f[3]), int(f[2]), self.macs.get(mac, mac)))
            elif f[0] == b"e":
                self.errors += 1
        for line in self._lines(self.arp_file):
            r = json.loads(line)
            view = {v: sorted(self.macs.get(m, m) for m in ms) for v, ms in r["macs"].items()}
            self.arp.append((r["t"], view))

    def answering(self, vip: str, now: float) -> str | None:
        """The host answering `vip` right now: the last STREAK pings came from it, the last one
        less than 0.1 s ago."""
        rs = self.replies[vip][-STREAK:]
        if len(rs) < STREAK or now - rs[-1].t > 0.1 or len({r.host for r in rs}) != 1:
            return None
        return rs[-1].host


def settled(lab: Lab, client: Client, down: set[str]) -> bool:
    """Every VIP configured on exactly its planned live holder (a killed host's leftovers do not
    count: its cable is out), and the client's pings answered by that host."""
    now = time.monotonic()
    want = {str(v.ip): v.holder(down) for v in lab.plan.vips}
    if any(client.answering(ip, now) != h for ip, h in want.items()):
        return False
    seen = {ip: [h for h in hs if h not in down] for ip, hs in lab.holders().items()}
    return seen == {ip: [h] for ip, h in want.items()}


def wait_settled(lab: Lab, client: Client, down: set[str], timeout: float, hold: float) -> bool:
    """Poll until `settled` has held for `hold` seconds; False on timeout."""
    return held(lambda: settled(lab, client, down), client.poll, timeout, hold)


def held(
    check: Callable[[], bool], poll: Callable[[], object], timeout: float, hold: float
) -> bool:
    """Poll (`poll`, then `check`, every 50 ms) until `check` has held for `hold` seconds; False
    after `timeout` (the failover and service benchmarks' wait for a settled cluster)."""
    t0 = time.monotonic()
    since: float | None = None
    while time.monotonic() - t0 < timeout:
        poll()
        now = time.monotonic()
        if check():
            since = now if since is None else since
            if now - since >= hold:
                return True
        else:
            since = None
        time.sleep(0.05)
    return False


# --- one scenario ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile, linear between closest ranks (numpy's default); None if empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def segments(
    rs: list[Reply], sent: dict[int, float], t0: float, start: float, end: float
) -> list[list[Any]]:
    """Runs of consecutive pings answered by one host, as [from, to, host] in seconds after t0 by
    the time each ping was sent (a lost ping is a gap where it was sent, however late the
    replies around it were read), for the plot. A gap over three ping intervals ends a run."""
    seen: set[int] = set()
    events = []
    for r in rs:
        t = sent.get(r.seq)
        if t is None or r.seq in seen:
            continue
        seen.add(r.seq)
        events.append((t, r.host))
    return runs(events, t0, start, end, PING_INTERVAL)


def stable_since(rs: list[Reply], rounds: list[int], holder: str | None) -> float | None:
    """When the final unbroken run of pings answered by `holder` began (the reply time of its
    first ping), or None if the last round was not answered by it: the VIP has moved for good."""
    by_seq: dict[int, Reply] = {}
    for r in rs:
        by_seq.setdefault(r.seq, r)
    first: Reply | None = None
    for seq in sorted(rounds, reverse=True):
        r = by_seq.get(seq)
        if r is None or r.host != holder:
            break
        first = r
    return None if first is None else first.t


def measure(
    lab: Lab,
    client: Client,
    kind: str,
    victim: str,
    down_before: set[str],
    down_after: set[str],
    fault: Callable[[], object],
    timeout: float,
) -> dict[str, Any]:
    """Run `fault` once the cluster is steady, wait until it settles again, and measure."""
    if not wait_settled(lab, client, down_before, timeout, STEADY):
        raise RuntimeError(f"{kind} on {victim}: the cluster did not settle before the fault")
    client.poll()
    t0 = time.monotonic()
    fault()
    t_fault = time.monotonic() - t0
    # Settled for STABLE seconds on end: a VIP that reaches its new holder and then flaps away
    # again (ucarp's second backup) restarts the clock.
    ok = wait_settled(lab, client, down_after, timeout, STABLE)
    t_end = time.monotonic()

    before = {str(v.ip): v.holder(down_before) for v in lab.plan.vips}
    after = {str(v.ip): v.holder(down_after) for v in lab.plan.vips}
    moved = [ip for ip in before if before[ip] != after[ip]]
    rounds = sorted(s for s, t in client.sent.items() if t0 <= t <= t_end - 0.3)
    vips: dict[str, Any] = {}
    for ip in before:
        rs = [r for r in client.replies[ip] if t0 <= r.t <= t_end]
        answered = {r.seq for r in client.replies[ip]}
        first = next((r.t - t0 for r in rs if r.host == after[ip]), None)
        stable = stable_since(rs, rounds, after[ip])
        arp = next(
            (t - t0 for t, view in client.arp if t >= t0 and after[ip] in view.get(ip, [])), None
        )
        # A killed host's leftover addresses answer ARP the moment its cable is back, before its
        # engine has started (and cleaned them): the VIP has moved for good when the new holder
        # answers alone.
        alone = next((t - t0 for t, view in client.arp if t >= t0 and view.get(ip) == [after[ip]]),
                     None)  # fmt: skip
        # Rounds in which the watcher saw two or more hosts answer ARP for the VIP.
        multi = sum(1 for t, view in client.arp if t0 <= t <= t_end and len(view.get(ip, [])) > 1)
        # Pings answered by a host that neither held the VIP before nor should hold it after:
        # a backup further down the order took over too (or first).
        wrong = sum(1 for r in rs if r.host not in (before[ip], after[ip]))
        vips[ip] = {
            "from": before[ip],
            "to": after[ip],
            "moved": ip in moved,
            "answer_s": None if first is None else round(first, 4),
            "stable_s": None if stable is None else round(stable - t0, 4),
            "arp_s": None if arp is None else round(arp, 4),
            "arp_alone_s": None if alone is None else round(alone, 4),
            "lost": sum(1 for s in rounds if s not in answered),
            "sent": len(rounds),
            "arp_multi_s": round(multi * ARP_PERIOD, 3),
            "wrong_host_replies": wrong,
            "timeline": segments(client.replies[ip], client.sent, t0, t0 - 0.5, t_end),
        }
    # Stretches in which the client itself sent nothing (a busy machine stalls it): gaps across
    # every VIP in the plot that are no outage, and no lost ping either.
    sends = sorted(t for t in client.sent.values() if t0 - 0.5 <= t <= t_end)
    stalls = [
        [round(a - t0 + PING_INTERVAL, 4), round(b - t0, 4)]
        for a, b in itertools.pairwise(sends)
        if b - a > 3 * PING_INTERVAL
    ]
    return {
        "scenario": kind,
        "victim": victim,
        "settled": ok,
        "client_stalls": stalls,
        "fault_call_s": round(t_fault, 4),
        "window_s": round(t_end - t0, 3),
        "vips": vips,
    }


# --- faults ------------------------------------------------------------------------------------


def engine_pids(lab: Lab, name: str) -> list[int]:
    """The PIDs of the host's engine processes (keepalived: its VRRP child too, first)."""
    if isinstance(lab, KeepalivedLab):
        return lab.pids(name)
    return [p.pid for p in lab.procs.get(name, []) if p.poll() is None]


def hard_fail(lab: Lab, name: str) -> None:
    """Lab.kill as one instant for every engine: SIGSTOP every engine process of the host (a
    frozen process sends nothing and cannot react to the carrier loss, so no farewell and no
    clean-up get out), pull the cable, then SIGKILL them, children first.

    Lab.kill SIGKILLs and reaps one process after another, then pulls the cable: for ucarp's
    twelve processes that took 0.4 s on a loaded machine, during which the host kept answering
    for the VIPs whose process was still alive, and the cable was still in."""
    pids = engine_pids(lab, name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    lab.seg.link(name, False)
    procs = {p.pid: p for p in lab.procs.pop(name, [])}
    for pid in pids:
        if pid in procs:
            Segment.stop(procs.pop(pid), signal.SIGKILL)
        else:  # keepalived's VRRP child: not ours to reap, its parent (killed next) does
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for p in procs.values():
        Segment.stop(p, signal.SIGKILL)


def clean_stop(lab: Lab, name: str) -> None:
    """Lab.stop with every process signalled at once (SIGTERM), then reaped, as an init system
    stopping the host's units together would; Lab.stop waits for each before the next."""
    procs = lab.procs.pop(name, [])
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        Segment.stop(p, signal.SIGTERM)


# --- one engine --------------------------------------------------------------------------------


def bound(lab: Lab, engine: Engine, victim: str) -> float:
    """The protocol's bound D for the victim's VIPs after a hard failure: the slowest first
    backup's master-down timeout (CARP: advbase * dead_ratio + advskew/256; VRRP:
    3 * advert_int + (256 - priority)/256)."""
    c = lab.plan.cluster
    mine = [v for v in lab.plan.vips if v.owner == victim]
    if engine.lab is KeepalivedLab:
        return max(vrrp_master_down(c.advbase, priority(1, len(v.order))) for v in mine)
    return max(master_down(c.advbase, v.advskew[1], c.dead_ratio) for v in mine)


def victims(lab: Lab, repeat: int) -> list[str]:
    """The host owning the most VIPs for each repeat; equal owners take turns (by name)."""
    load = lab.plan.load()
    top = sorted(h for h, n in load.items() if n == max(load.values()))
    return [top[i % len(top)] for i in range(repeat)]


def promote_secondaries(lab: Lab) -> None:
    """Set net.ipv4.conf.{all,eth1}.promote_secondaries = 1 in every host's namespace, as
    systemd's sysctl.d/50-default.conf does on a Debian host.

    A new namespace has the kernel's 0: the VIPs share a /24, the first one added is the primary
    and the others its secondaries, and deleting the primary deletes the secondaries with it. An
    engine that releases one VIP (fail-back, drain, a ucarp flap at start-up) can then lose every
    other VIP it holds, silently (measured with ucarp and with iprotate's drain; keepalived only
    sets the flag with its opt-in `promote_secondaries` keyword)."""
    for name in lab.names:
        iface = lab.plan.cluster.host(name).vip_interface
        # /proc/sys/net belongs to the namespace of the process that writes it; sh rather than
        # sysctl, which a minimal Debian may lack (procps).
        paths = [f"/proc/sys/net/ipv4/conf/{i}/promote_secondaries" for i in ("all", iface)]
        lab.seg.run(name, "sh", "-c", 'for f; do echo 1 > "$f"; done', "sh", *paths)


def run_engine(
    engine: Engine,
    workdir: Path,
    repeat: int,
    promote: bool = True,
    hosts: int = HOSTS,
    vips: int = VIPS,
) -> dict[str, Any]:
    """Build the engine's lab, run every scenario `repeat` times, tear everything down."""
    shutil.rmtree(workdir, ignore_errors=True)
    lab = engine.lab(
        workdir,
        hosts=hosts,
        vips=0 if engine.ipv6 else vips,
        vips6=vips if engine.ipv6 else 0,
        legacy=engine.legacy,
        advbase=engine.advbase,
        run_args=engine.run_args,
    )
    timeout = 20.0
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with lab:
        print(f"  namespaces {lab.seg.prefix}-*, logs in {workdir}", flush=True)
        lab.seg.add(WATCH, WATCH_OCTET, "eth0")
        if promote:
            promote_secondaries(lab)
        addrs = [str(v.ip) for v in lab.plan.vips]
        client = Client(addrs, dict(lab.macs), workdir / "pings.txt", workdir / "arp.jsonl")
        pinger = [sys.executable, str(BENCH / "pinger.py"), "--interface", "eth0"]
        pinger += ["--interval", str(PING_INTERVAL), "--out", str(client.ping_file), *addrs]
        lab.seg.spawn(CLIENT, pinger, log=str(workdir / "pinger.log"))
        probe = [sys.executable, "-m", "iprotate.lab.probe", "--interface", "eth0"]
        probe += ["--src", f"198.51.100.{WATCH_OCTET}", "--src6", host_address6(WATCH_OCTET)]
        probe += ["--period", str(ARP_PERIOD), *addrs]
        with client.arp_file.open("wb") as out:
            lab.seg.spawn(WATCH, probe, log=str(workdir / "probe.log"), stdout=out)
        t_start = time.monotonic()
        lab.start_all()
        if not wait_settled(lab, client, set(), 30.0, STEADY):
            raise RuntimeError(f"{engine.name}: the cluster did not settle after start")
        startup = time.monotonic() - t_start - STEADY
        for i, victim in enumerate(victims(lab, repeat)):
            print(f"  {engine.name} run {i + 1}/{repeat}: victim {victim}", flush=True)
            d = bound(lab, engine, victim)
            one = {victim}
            steps: list[tuple[str, set[str], set[str], Callable[[], object]]] = [
                ("hard", set(), one, lambda v=victim: hard_fail(lab, v)),
                ("failback", one, set(), lambda v=victim: lab.restore(v)),
                ("stop", set(), one, lambda v=victim: clean_stop(lab, v)),
            ]
            res = [
                measure(lab, client, kind, victim, before, after, fault, timeout)
                for kind, before, after, fault in steps
            ]
            res[0]["bound_s"] = round(d, 4)
            for r in res:
                print(f"    {r['scenario']:9} {summary_line(r)}", flush=True)
            lab.restore(victim)
            if not wait_settled(lab, client, set(), timeout, STEADY):
                raise RuntimeError(f"{engine.name}: {victim} did not come back after the stop")
            if i > 0:  # the plot draws the first run; keep the committed JSON small
                for r in res:
                    for v in r["vips"].values():
                        del v["timeline"]
            runs.append({"victim": victim, "scenarios": res})
        client.poll()
        errors = client.errors
    return {
        "engine": engine.name,
        "note": engine.note,
        "advbase": engine.advbase,
        "run_args": list(engine.run_args),
        "promote_secondaries": promote,
        "netns_prefix": lab.seg.prefix,
        "startup_settle_s": round(startup, 3),
        "send_errors": errors,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
    }


def summary_line(r: dict[str, Any]) -> str:
    moved = [v for v in r["vips"].values() if v["moved"]]
    times = [v["answer_s"] for v in moved if v["answer_s"] is not None]
    lost = sum(v["lost"] for v in r["vips"].values())
    worst = max(times) if len(times) == len(moved) and times else float("nan")
    return f"{len(moved)} VIPs moved, last answered from new holder at {worst:.3f} s, {lost} lost"


# --- report ------------------------------------------------------------------------------------


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """One row per engine and scenario, pooled over the repeats."""
    rows = []
    for e in results:
        for kind in SCENARIOS:
            scen = [s for run in e["runs"] for s in run["scenarios"] if s["scenario"] == kind]
            if not scen:
                continue
            moved = [v for s in scen for v in s["vips"].values() if v["moved"]]
            unmoved = [v for s in scen for v in s["vips"].values() if not v["moved"]]
            times = [v["answer_s"] for v in moved if v["answer_s"] is not None]
            stables = [v["stable_s"] for v in moved if v["stable_s"] is not None]
            never = len(moved) - len(times)
            lost_runs = [sum(v["lost"] for v in s["vips"].values()) for s in scen]
            mean_lost = sum(lost_runs) / len(lost_runs)
            d = scen[0].get("bound_s")
            unsettled = sum(1 for s in scen if not s["settled"])
            rows.append(
                [
                    e["engine"],
                    kind + (f" ({unsettled}/{len(scen)} unsettled)" if unsettled else ""),
                    f"{len(moved) // len(scen)}" + (f" ({never} never)" if never else ""),
                    fmt(d),
                    fmt(percentile(times, 50)),
                    fmt(percentile(times, 99)),
                    fmt(max(times) if times else None),
                    fmt(max(stables) if stables else None),
                    f"{mean_lost:.{0 if mean_lost >= 10 else 1}f}",
                    str(max((v["lost"] for v in moved), default=0)),
                    str(sum(v["lost"] for v in unmoved)),
                    f"{sum(1 for v in moved if v['wrong_host_replies'])}/{len(moved)}",
                    fmt(max((v["arp_multi_s"] for v in moved), default=None)),
                ]
            )
    return rows


HEADERS = [
    "engine",
    "scenario",
    "VIPs moved",
    "D (s)",
    "p50 (s)",
    "p99 (s)",
    "max (s)",
    "stable max (s)",
    "lost/run",
    "lost max/VIP",
    "lost unmoved",
    "wrong host",
    "ARP 2 hosts (s)",
]


def version(cmd: list[str]) -> str:
    """The first line `cmd` prints (a tool's version); "missing" if it cannot run."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except OSError:
        return "missing"
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else "?"


def environment(argv: list[str]) -> dict[str, Any]:
    return {
        "command": " ".join(["python bench/failover.py", *argv]),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "keepalived": version([KEEPALIVED, "--version"]),
        "ucarp": "ucarp " + version(["dpkg-query", "-W", "-f", "${Version}", "ucarp"]),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def commit() -> str:
    """The repository's commit, marked when iprotate's own code (not the benchmarks) has local
    changes: that is what the figures measure."""

    def git(*args: str) -> str:
        try:
            r = subprocess.run(["git", "-C", str(BENCH), *args], capture_output=True, text=True)
        except OSError:
            return ""
        return r.stdout.strip() if r.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "?"
    local = git("status", "--porcelain", "--", "../iprotate", "../contrib")
    return head + (" + local changes to iprotate/ or contrib/" if local else "")


def markdown(doc: dict[str, Any]) -> str:
    """The results as the markdown page bench/results/failover.md."""
    env = doc["environment"]
    table = tabulate(table_rows(doc["results"]), HEADERS, tablefmt="github")
    engines = "\n".join(
        f"- **{e['engine']}**: {e['note']}; the cluster settled {e['startup_settle_s']:.1f} s "
        f"after start; load average {e['loadavg_before'][0]:.2f} → {e['loadavg_after'][0]:.2f}"
        for e in doc["results"]
    )
    promote = all(e.get("promote_secondaries", True) for e in doc["results"])
    promoted = "set to 1, as systemd sets it on Debian" if promote else "left at the kernel's 0"
    argv = " ".join(doc["argv"])
    errors = "".join(
        f"- **{e['engine']}**: no result, {e['error']}\n" for e in doc.get("errors", [])
    )
    return f"""# Failover benchmark: iprotate, ucarp and keepalived, side by side

    sudo .venv/bin/python bench/failover.py{" " + argv if argv else ""}

Run {env["date"]} on Linux {env["kernel"]}, {env["cpus"]} CPUs, Python {env["python"]},
{env["keepalived"]}, {env["ucarp"]}. The machine runs other jobs at times (load averages
below): take the figures as indicative; the protocol timers dominate them anyway.

The same cluster, 3 hosts and 12 VIPs planned by iprotate (each host owns 4), run by each engine
in its own set of network namespaces, one engine after the other. A client namespace pings every
VIP every 10 ms and notes which host's MAC answered; {doc["repeat"]} run(s) per engine, the fault
hitting each time a host owning the most VIPs (all own 4: the victim rotates).

- **hard**: every engine process of the host frozen (SIGSTOP), its cable pulled, then SIGKILL;
- **failback**: the cable back in and the engine started again;
- **stop**: a clean stop, SIGTERM to every engine process of the host at once.

The *-ipv6* rows run the same plan with the 12 VIPs as IPv6 addresses (2001:db8:113::10 to ::1b,
/64): iprotate speaking CARP over IPv6 from each host's address6, keepalived speaking VRRPv3 (its
only protocol for IPv6; with advert_int 1 s its timers are VRRPv2's). The client pings them with
ICMPv6, resolving them through its own neighbour cache, and learns moves from the engines'
unsolicited neighbour advertisements; the second client solicits them instead of ARPing.

Columns: *VIPs moved* per run; *D*, the protocol's bound for a hard failure (the first backup's
master-down timeout: CARP advbase × dead_ratio + advskew/256, VRRP 3 × advert_int +
(256 − priority)/256); *p50/p99/max*, seconds from the fault to the first ping answered by the
VIP's new holder, pooled over the VIPs that moved and the runs (the client's own ARP cache and
the engine's gratuitous ARPs included); *stable max*, the latest time a VIP reached its new holder
for good (after any flap); *lost/run*, pings sent after the fault never answered, summed over the
VIPs, mean per run; *lost max/VIP*, the worst VIP; *lost unmoved*, pings lost by VIPs that should
not have been touched; *wrong host*, moved VIPs answered at some point by a host that is neither
their old nor their new holder; *ARP 2 hosts*, the longest time (in 50 ms rounds of a second
client's ARP probe) during which two hosts answered ARP for one moved VIP.

{table}

{engines}
{errors}
![Which host answered each VIP's pings, first run of each engine and scenario](failover.png)

How to read it:

- A hard failure takes the dead owner's VIPs to their first backups after D less the time since
  the owner's last advert, so anywhere in [D − interval, D]. ucarp adds its pcap lag (0 to 1 s,
  CARP.md), and because its backups' timeouts differ by less than that lag (advskew steps of
  64/256 s), the second backup often takes a VIP too, and the client, sent there by that host's
  gratuitous ARP, loses pings again when it steps back: *wrong host* and *stable max*.
- Fail-back: a returning host starts as a backup and preempts on the first advert it hears from
  the current holder, so it takes its VIPs back its start-up time (iprotate: a Python process,
  about 0.3 s) plus up to one advert interval after the restart. iprotate runs with
  `--hold-down 0 --stagger 0` here to measure that raw; by default it waits 3 s on purpose, so a
  flapping host does not drag VIPs back and forth. ucarp hears the advert 0 to 1 s late.
  keepalived's returning backup ignores the lower-priority adverts (RFC 3768) and only takes
  over when its master-down timer expires.
  The old holder keeps the address until it hears the new one, so fail-back loses little, but
  the two hosts claim the VIP together meanwhile (*ARP 2 hosts*): ucarp for up to its 1 s lag;
  and a host that was SIGKILLed still has its VIPs configured when its cable comes back, so it
  answers ARP for them until its engine starts and removes them (iprotate's start-up clean-up,
  ucarp's down script at start; keepalived cleans up at once).
- Clean stop: iprotate's farewell advert makes the backups take over at once; keepalived sends
  priority 0 and its backups wait only their skew time (about 0.2 s); ucarp (`-z`) runs its down
  script but sends nothing, so its backups wait a whole master-down timeout, as after a crash.
- Sub-second iprotate (advbase 0: owner every 62 ms, first backup's timeout 187 ms) cuts the
  hard failure below a quarter of a second.
- IPv6 behaves as IPv4, with one trap: the kernel puts a new (nodad) IPv6 address in service from
  a worker, up to a few milliseconds after the add returns, so an NA sent at once moves clients
  to a host that still drops their packets. iprotate holds a fresh IPv6 VIP's NA and first advert
  until the kernel reports the address (before it did, its clean stop and fail-back lost about
  one ping per run here).
- In every host namespace net.ipv4.conf.all.promote_secondaries is
  {promoted}: at 0, deleting the
  first VIP added to an interface deletes every other VIP of the same /24 with it (seen with ucarp
  flapping at start-up, and with `iprotate drain --vip`); keepalived has an opt-in
  `promote_secondaries` keyword for it.

In the plot, grey bands are moments the client itself sent nothing (the machine was busy): no
outage, and no ping counted lost.

Raw data: [failover.json](failover.json) (per VIP: times, losses, ARP view, and the timeline
drawn above).
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES), help="Comma-separated, in run order.")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="Runs of the three scenarios per engine; the victim rotates over the hosts that own "
        "the most VIPs (3: each of the three hosts once).",
    )
    ap.add_argument("--out", type=Path, default=BENCH / "results", help="Table, JSON and plot.")
    ap.add_argument("--workdir", type=Path, default=BENCH / "out", help="Logs and raw data.")
    ap.add_argument(
        "--kernel-secondaries",
        action="store_true",
        help="Leave promote_secondaries at the kernel's 0 in the hosts' namespaces (see "
        "promote_secondaries()): engines may then lose VIPs and never settle.",
    )
    ap.add_argument("--replot", type=Path, help="Only redraw the plot and table from this JSON.")
    args = ap.parse_args(argv)
    if args.replot:
        doc = json.loads(args.replot.read_text())
        write_outputs(doc, args.out)
        return 0
    names = engine_names("failover", args.engines, ENGINES)
    if names is None:
        return 2
    doc = new_doc(argv, args.repeat, environment(argv))
    run_each(
        doc,
        names,
        lambda n: run_engine(
            ENGINES[n], args.workdir / n, args.repeat, not args.kernel_secondaries
        ),
    )
    write_outputs(doc, args.out)
    print(tabulate(table_rows(doc["results"]), HEADERS))
    return 1 if doc["errors"] else 0


def engine_names(tool: str, spec: str, engines: Mapping[str, Any]) -> list[str] | None:
    """The engines `--engines` names, in run order; None (said on stderr) without root or with an
    unknown one (the failover and service benchmarks' checks)."""
    if os.geteuid() != 0:
        print(f"{tool}: needs root (network namespaces)", file=sys.stderr)
        return None
    names = [n for n in spec.split(",") if n]
    unknown = [n for n in names if n not in engines]
    if unknown:
        print(f"{tool}: unknown engine(s) {unknown}; known: {list(engines)}", file=sys.stderr)
        return None
    return names


def new_doc(argv: list[str], repeat: int, env: dict[str, Any]) -> dict[str, Any]:
    """The results document a run fills in."""
    return {"argv": argv, "repeat": repeat, "environment": env, "results": [], "errors": []}


def run_each(doc: dict[str, Any], names: list[str], run: Callable[[str], dict[str, Any]]) -> None:
    """`run` each engine in turn into `doc`; a signal tears the labs down and exits 130."""
    with terminate_as_interrupt(), interrupted_exit():
        for n in names:
            print(f"{n}:", flush=True)
            try:
                res = run(n)
            except RuntimeError as e:  # one engine that never settles must not hide the others
                print(f"  {n}: {e}", file=sys.stderr)
                doc["errors"].append({"engine": n, "error": str(e)})
                continue
            doc["results"].append(res)


def dumps(doc: Any, indent: str = "") -> str:
    """JSON with one line per leaf object (a dict holding no dict, e.g. one VIP's figures and
    timeline) and per list of such lines, so the file reads, and diffs, by VIP."""
    inner = indent + " "
    if isinstance(doc, dict) and any(isinstance(v, dict | list) for v in doc.values()):
        if not any(isinstance(v, dict) for v in doc.values()) and len(json.dumps(doc)) < 400:
            return json.dumps(doc, ensure_ascii=False)
        items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in doc.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(doc, list) and any(isinstance(v, dict | list) for v in doc):
        if all(isinstance(v, list) for v in doc):
            return json.dumps(doc, ensure_ascii=False)
        return "[\n" + ",\n".join(inner + dumps(v, inner) for v in doc) + f"\n{indent}]"
    return json.dumps(doc, ensure_ascii=False)


README = BENCH / "README.md"
BEGIN, END = (
    "<!-- failover: begin (bench/failover.py writes this block) -->",
    "<!-- failover: end -->",
)


def readme_block(doc: dict[str, Any], out: Path) -> str:
    """The failover section of bench/README.md: the command, the table and the plot."""
    argv = " ".join(doc["argv"])
    rel = os.path.relpath(out, BENCH)
    table = tabulate(table_rows(doc["results"]), HEADERS, tablefmt="github")
    return f"""{BEGIN}
## Failover: iprotate, ucarp and keepalived side by side

    sudo .venv/bin/python bench/failover.py{" " + argv if argv else ""}

3 hosts, 12 VIPs; a client pings every VIP every 10 ms. Times in seconds from the fault to the
first ping answered by the VIP's new holder; lost = pings never answered. Measured
{doc["environment"]["date"]} at {doc["environment"].get("commit", "?")}; what each column means,
how the faults are made and why the engines differ: [{rel}/failover.md]({rel}/failover.md).

{table}

![Which host answered each VIP's pings]({rel}/failover.png)
{END}"""


def update_readme(doc: dict[str, Any], out: Path) -> None:
    """Replace the failover block of bench/README.md (other sections are left as they are), or
    append it."""
    block = readme_block(doc, out)
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(text)


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() == (BENCH / "results").resolve() and doc["results"]:
        update_readme(doc, out)
    (out / "failover.json").write_text(dumps(doc) + "\n")
    (out / "failover.md").write_text(markdown(doc))
    try:
        from timeline import plot, pyplot

        pyplot()
    except ImportError as e:  # matplotlib is the `bench` extra
        print(f"failover: no plot ({e}); pip install matplotlib", file=sys.stderr)
        return
    if doc["results"]:
        plot(doc, out / "failover.png")
    print(f"failover: wrote {out}/failover.md, .json, .png")


class Interrupted(SystemExit):
    """Leaves main with status 130 once the labs are torn down."""


@contextlib.contextmanager
def interrupted_exit() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt as e:
        print(f"failover: interrupted ({e or 'Ctrl-C'}); labs removed", file=sys.stderr)
        raise Interrupted(130) from None


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP unwind as KeyboardInterrupt, so every lab's context manager tears
    it down (processes stopped by PID, namespaces deleted)."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starting us in the background leaves it ignored.
    old = {
        s: signal.signal(s, raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
