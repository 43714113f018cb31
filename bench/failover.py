"""Failover benchmark: the same cluster run by iprotate, ucarp and keepalived, side by side.

    sudo .venv/bin/python bench/failover.py [--engines iprotate,ucarp,keepalived,...] [--repeat N]

One lab (network namespaces on one bridge, iprotate.lab) per engine, one after the other, each with
3 hosts and 12 VIPs planned by iprotate:

- iprotate            `iprotate run` on every host (advbase 1);
- ucarp               Debian's ucarp on every host, the lines `iprotate ucarp` generates;
- keepalived          Debian's keepalived, one vrrp_instance per VIP, priorities in plan order
                      (bench/keepalived.py);
- iprotate-subsecond  `iprotate run` with advbase 0 (owner 62 ms, first backup 187 ms).

iprotate runs with `--hold-down 0 --stagger 0` so that its fail-back is measured raw, like the
others' (its default waits 3 s after a host comes back, on purpose).

In each lab a client namespace pings every VIP every 10 ms (bench/pinger.py) and notes which host's
MAC answered each ping; a second client namespace runs `iprotate.probe` (ARP: who claims each VIP)
every 50 ms without touching the first client's ARP cache. Scenarios, on the host owning the most
VIPs (ties rotate over the repeats), each once the cluster has settled:

- hard:     the engine SIGKILLed and the host's cable pulled (Lab.kill);
- failback: cable back, engine started again (Lab.restore);
- stop:     a clean stop, SIGTERM (then restored, unmeasured).

For every VIP that changes hands: seconds from the fault to the first ping answered by its new
holder (the client's own ARP cache and the engine's gratuitous ARPs included), and to the first ARP
answer from it; and for every VIP the pings lost (sent after the fault, never answered). Writes
bench/results/failover.{md,json,png} (--out to change); logs and raw files go to bench/out/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tabulate import tabulate

from iprotate.lab import CLIENT, Lab
from iprotate.timing import master_down

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # the sibling modules, also when imported from the tests
from keepalived import KEEPALIVED, KeepalivedLab, priority  # noqa: E402
from keepalived import master_down as vrrp_master_down  # noqa: E402

HOSTS = 3
VIPS = 12
PING_INTERVAL = 0.01
ARP_PERIOD = 0.05
WATCH = "watch"  # the ARP watcher's namespace: a second client, so its ARP traffic never
WATCH_OCTET = 201  # updates the pinging client's neighbour cache
RAW_FAILBACK = ("--hold-down", "0", "--stagger", "0")
SCENARIOS = ("hard", "failback", "stop")
STEADY = 1.0  # seconds the cluster must look settled (hosts and client) before a fault
TAIL = 1.0  # seconds watched after it has settled again: late flaps show up here
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
            note="advbase 0, advskew 16/48/112",
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
    t0 = time.monotonic()
    since: float | None = None
    while time.monotonic() - t0 < timeout:
        client.poll()
        now = time.monotonic()
        if settled(lab, client, down):
            since = now if since is None else since
            if now - since >= hold:
                return True
        else:
            since = None
        time.sleep(0.05)
    return False


def watch(client: Client, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        client.poll()
        time.sleep(0.05)


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


def segments(rs: list[Reply], t0: float, start: float, end: float) -> list[list[Any]]:
    """Runs of consecutive pings answered by one host, as [from, to, host] seconds after t0, for
    the plot. A gap longer than three ping intervals ends a run."""
    out: list[list[Any]] = []
    for r in rs:
        if not start <= r.t <= end:
            continue
        x = r.t - t0
        if out and out[-1][2] == r.host and x - out[-1][1] <= 3 * PING_INTERVAL:
            out[-1][1] = x
        else:
            out.append([x, x, r.host])
    for s in out:
        s[0], s[1] = round(s[0], 4), round(s[1] + PING_INTERVAL, 4)
    return out


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
    ok = wait_settled(lab, client, down_after, timeout, 0.0)
    watch(client, TAIL)
    t_end = time.monotonic()

    before = {str(v.ip): v.holder(down_before) for v in lab.plan.vips}
    after = {str(v.ip): v.holder(down_after) for v in lab.plan.vips}
    moved = [ip for ip in before if before[ip] != after[ip]]
    rounds = [s for s, t in client.sent.items() if t0 <= t <= t_end - 0.3]
    vips: dict[str, Any] = {}
    for ip in before:
        rs = [r for r in client.replies[ip] if t0 <= r.t <= t_end]
        answered = {r.seq for r in client.replies[ip]}
        first = next((r.t - t0 for r in rs if r.host == after[ip]), None)
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
        others = (
            sum(1 for r in rs if r.t - t0 > first and r.host != after[ip])
            if first is not None
            else None
        )
        vips[ip] = {
            "from": before[ip],
            "to": after[ip],
            "moved": ip in moved,
            "answer_s": None if first is None else round(first, 4),
            "arp_s": None if arp is None else round(arp, 4),
            "arp_alone_s": None if alone is None else round(alone, 4),
            "lost": sum(1 for s in rounds if s not in answered),
            "sent": len(rounds),
            "arp_multi_s": round(multi * ARP_PERIOD, 3),
            "other_host_replies_after": others,
            "timeline": segments(client.replies[ip], t0, t0 - 0.5, t_end),
        }
    return {
        "scenario": kind,
        "victim": victim,
        "settled": ok,
        "fault_call_s": round(t_fault, 4),
        "window_s": round(t_end - t0, 3),
        "vips": vips,
    }


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
    other VIP it holds, silently (measured with ucarp and with iprotate's drain; keepalived sets
    the flag on its interfaces itself)."""
    for name in lab.names:
        iface = lab.plan.cluster.host(name).vip_interface
        lab.seg.run(name, "sysctl", "-q", "-w", "net.ipv4.conf.all.promote_secondaries=1",
                    f"net.ipv4.conf.{iface}.promote_secondaries=1")  # fmt: skip


def run_engine(engine: Engine, workdir: Path, repeat: int, promote: bool = True) -> dict[str, Any]:
    """Build the engine's lab, run every scenario `repeat` times, tear everything down."""
    shutil.rmtree(workdir, ignore_errors=True)
    lab = engine.lab(
        workdir,
        hosts=HOSTS,
        vips=VIPS,
        legacy=engine.legacy,
        advbase=engine.advbase,
        run_args=engine.run_args,
    )
    timeout = 20.0
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with lab:
        lab.seg.add(WATCH, WATCH_OCTET, "eth0")
        if promote:
            promote_secondaries(lab)
        vips = [str(v.ip) for v in lab.plan.vips]
        client = Client(vips, dict(lab.macs), workdir / "pings.txt", workdir / "arp.jsonl")
        pinger = [sys.executable, str(BENCH / "pinger.py"), "--interface", "eth0"]
        pinger += ["--interval", str(PING_INTERVAL), "--out", str(client.ping_file), *vips]
        lab.seg.spawn(CLIENT, pinger, log=str(workdir / "pinger.log"))
        probe = [sys.executable, "-m", "iprotate.probe", "--interface", "eth0"]
        probe += ["--src", f"198.51.100.{WATCH_OCTET}", "--period", str(ARP_PERIOD), *vips]
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
            res = [
                measure(lab, client, "hard", victim, set(), one, lambda v=victim: lab.kill(v),
                        timeout),
                measure(lab, client, "failback", victim, one, set(),
                        lambda v=victim: lab.restore(v), timeout),
                measure(lab, client, "stop", victim, set(), one, lambda v=victim: lab.stop(v),
                        timeout),
            ]  # fmt: skip
            res[0]["bound_s"] = round(d, 4)
            for r in res:
                print(f"    {r['scenario']:9} {summary_line(r)}", flush=True)
            lab.restore(victim)
            if not wait_settled(lab, client, set(), timeout, STEADY):
                raise RuntimeError(f"{engine.name}: {victim} did not come back after the stop")
            runs.append({"victim": victim, "scenarios": res})
        client.poll()
        errors = client.errors
    return {
        "engine": engine.name,
        "note": engine.note,
        "advbase": engine.advbase,
        "run_args": list(engine.run_args),
        "promote_secondaries": promote,
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
            arps = [v["arp_alone_s"] for v in moved if v["arp_alone_s"] is not None]
            never = len(moved) - len(times)
            lost_runs = [sum(v["lost"] for v in s["vips"].values()) for s in scen]
            d = scen[0].get("bound_s")
            rows.append(
                [
                    e["engine"],
                    kind,
                    f"{len(moved) // len(scen)}" + (f" ({never} never)" if never else ""),
                    fmt(d),
                    fmt(percentile(times, 50)),
                    fmt(percentile(times, 99)),
                    fmt(max(times) if times else None),
                    fmt(percentile(arps, 50)),
                    f"{sum(lost_runs) / len(lost_runs):.0f}",
                    str(max((v["lost"] for v in moved), default=0)),
                    str(sum(v["lost"] for v in unmoved)),
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
    "ARP p50 (s)",
    "lost/run",
    "lost max/VIP",
    "lost unmoved",
]


def environment(argv: list[str]) -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        except OSError:
            return "missing"
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr) else "?"

    return {
        "command": "python bench/failover.py " + " ".join(argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "keepalived": version([KEEPALIVED, "--version"]),
        "ucarp": "ucarp 1.5.2 (Debian)",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    table = tabulate(table_rows(doc["results"]), HEADERS, tablefmt="github")
    notes = "\n".join(f"- {e['engine']}: {e['note']}" for e in doc["results"])
    loads = ", ".join(
        f"{e['engine']} {e['loadavg_before'][0]:.2f}→{e['loadavg_after'][0]:.2f}"
        for e in doc["results"]
    )
    return f"""# Failover benchmark

    sudo .venv/bin/python bench/failover.py {" ".join(doc["argv"])}

{env["date"]}, Linux {env["kernel"]}, {env["cpus"]} CPUs, {env["keepalived"]}. Load average (1 min)
over each engine's run: {loads}. Other jobs shared the machine: take the figures as indicative.

3 hosts, 12 VIPs, {doc["repeat"]} run(s) per engine; the fault hits the host owning the most VIPs.
Times are seconds from the fault to the first ping answered by the VIP's new holder (pooled over
the VIPs that moved and the runs); D is the protocol's bound for a hard failure (the first backup's
master-down timeout); "ARP p50" is when the new holder first answered ARP. Lost: pings (every 10 ms
per VIP) sent after the fault and never answered; "lost unmoved" counts those of VIPs that should
not have been touched.

{table}

{notes}

![timeline](failover.png)
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES), help="Comma-separated, in run order.")
    ap.add_argument("--repeat", type=int, default=1, help="Runs of the three scenarios per engine.")
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
    if os.geteuid() != 0:
        print("failover: needs root (network namespaces)", file=sys.stderr)
        return 2
    names = [n for n in args.engines.split(",") if n]
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        print(f"failover: unknown engine(s) {unknown}; known: {list(ENGINES)}", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {
        "argv": argv,
        "repeat": args.repeat,
        "environment": environment(argv),
        "results": [],
    }
    with terminate_as_interrupt():
        for n in names:
            print(f"{n}:", flush=True)
            doc["results"].append(
                run_engine(ENGINES[n], args.workdir / n, args.repeat, not args.kernel_secondaries)
            )
    write_outputs(doc, args.out)
    print(tabulate(table_rows(doc["results"]), HEADERS))
    return 0


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "failover.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "failover.md").write_text(markdown(doc))
    try:
        from timeline import plot
    except ImportError as e:  # matplotlib is the `bench` extra
        print(f"failover: no plot ({e}); pip install matplotlib", file=sys.stderr)
        return
    plot(doc, out / "failover.png")
    print(f"failover: wrote {out}/failover.md, .json, .png")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every lab's context manager tears it down."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
