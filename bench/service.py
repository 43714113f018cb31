"""Service-failure benchmark: the service behind the VIPs dies on their owner; how soon do clients
get served by the next host, under iprotate's `[[checks]]` and under keepalived's `track_script`?

    sudo .venv/bin/python bench/service.py [--engines iprotate,keepalived] [--repeat N]

One lab per engine (network namespaces on one bridge, iprotate.lab.lab), 3 hosts and 6 VIPs
planned by iprotate; every host runs the same small TCP service (bench/service_io.py serve: the
host's name at once, `bye` and the close 0.1 s later). A client namespace opens a new TCP
connection to every VIP every 10 ms (bench/service_io.py client) and notes who served it.

- iprotate: `iprotate run` with a `tcp` check of 127.0.0.1:8080 (interval 0.2 s, timeout 0.2 s,
  fall 2, rise 2) and, per host, a drain-aware `exec` check (bench/service-check FLAG: fails while
  the flag file exists), same interval;
- keepalived: the plan-derived keepalived.conf of the failover bench (bench/keepalived.py) plus a
  `vrrp_script` running bench/service-check FLAG 8080 (the flag and the same TCP connect), tracked
  by every instance (weight 0: a failed script puts the instance in FAULT). keepalived 2.2
  takes whole seconds only for a script's interval and timeout (`interval 0.2` is refused:
  "must be between 1 and 4294"), so it runs at 1 s, its fastest, fall 2, rise 2;
- keepalived-file: the same check at 0.2 s, fall 2, rise 2, run by a checker process per host
  (bench/service_io.py watch) that writes its state to a file every instance tracks
  (`track_file`, weight 0): how a keepalived user gets a sub-second check.

Scenarios, on the host owning the most VIPs (ties rotate over the repeats), each once every VIP is
served by its owner:

- kill:  the service on the owner SIGKILLed (the host and its HA engine live on);
- drain: "take the host out before you stop the service": the stop procedure creates the host's
  flag file, waits until its check has failed and the VIPs have moved (fall x interval + 1 s),
  then stops the service (SIGTERM).

Per VIP that moves: seconds from the fault (the kill; for drain, the flag) to the first connection
served by the next host; connections that were never served (refused, reset, timed out) among
those opened after the fault; connections cut (served a name, then closed or reset before `bye`)
that were open at the time. Writes bench/results/service.{md,json,png} (--out to change); logs and
raw files go to bench/out/service-<engine>/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from iprotate.lab.lab import CLIENT, Lab
from iprotate.lab.netns import Segment

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # the sibling modules, also when imported from the tests
from failover import (  # noqa: E402
    commit,
    dumps,
    engine_names,
    held,
    new_doc,
    percentile,
    promote_secondaries,
    run_each,
    version,
)
from keepalived import KEEPALIVED, KeepalivedLab  # noqa: E402
from timeline import runs  # noqa: E402

HOSTS = 3
VIPS = 6
PORT = 8080
EVERY = 0.01  # the client opens a connection to every VIP this often
HOLD = 0.1  # seconds each connection stays open after the service's answer
CHECK = BENCH / "service-check"
INTERVAL = 0.2  # iprotate's check interval (the target's)
FALL = 2
RISE = 2
KEEPALIVED_INTERVAL = 1  # keepalived 2.2's fastest vrrp_script interval (whole seconds)
TARGET = 0.6  # every VIP served by the next host within this many seconds of the kill
SCENARIOS = ("kill", "drain")
STEADY = 1.0
STABLE = 1.0
STREAK = 5


# --- the engines -------------------------------------------------------------------------------


def iprotate_checks(workdir: Path, names: list[str], interval: float = INTERVAL) -> str:
    """The [[checks]] of the iprotate lab: the service's TCP port, and one drain flag per host."""
    common = [f"interval = {interval}", f"timeout = {interval}", f"fall = {FALL}", f"rise = {RISE}"]
    out = ["[[checks]]", 'name = "service"', f'tcp = "127.0.0.1:{PORT}"', *common, ""]
    for n in names:
        flag = workdir / f"{n}.drain"
        out += [
            "[[checks]]",
            f'name = "drain-{n}"',
            f"exec = {json.dumps([str(CHECK), str(flag)])}",
        ]
        out += [f'hosts = ["{n}"]', *common, ""]
    return "\n".join(out)


def script_path_insecure(path: Path) -> str | None:
    """Why keepalived's `enable_script_security` would refuse `path` (a part of it owned by or
    writable for someone other than root), or None."""
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid != 0:
            return f"{p} is not owned by root"
        if st.st_mode & 0o022 and not (p.is_dir() and st.st_mode & 0o1000):
            return f"{p} is writable by a group or others"
    return None


class ServiceKeepalivedLab(KeepalivedLab):
    """The failover bench's keepalived lab, every instance tracking the service's check script."""

    def start(self, name: str) -> None:
        insecure = script_path_insecure(CHECK)
        if insecure:
            # keepalived would log SECURITY VIOLATION and never run the script: the benchmark
            # would measure a check that does not exist.
            raise RuntimeError(f"keepalived refuses to run {CHECK} as root: {insecure}")
        super().start(name)

    def conf(self, name: str) -> str:
        text = super().conf(name)
        flag = self.workdir / f"{name}.drain"
        script = [
            "vrrp_script chk_service {",
            f'    script "{CHECK} {flag} {PORT}"',
            f"    interval {KEEPALIVED_INTERVAL}",
            f"    timeout {KEEPALIVED_INTERVAL}",
            f"    fall {FALL}",
            f"    rise {RISE}",
            "}",
        ]
        # Scripts run as root only with script security on and a root-owned path to the script.
        text = text.replace(
            "global_defs {\n",
            "global_defs {\n    enable_script_security\n    script_user root\n",
            1,
        )
        text = text.replace("\n}\n", "\n}\n\n" + "\n".join(script) + "\n", 1)
        return text.replace(
            "\n    }\n}", "\n    }\n    track_script {\n        chk_service\n    }\n}"
        )


class FileKeepalivedLab(ServiceKeepalivedLab):
    """keepalived with the same check at iprotate's interval: a checker per host
    (bench/service_io.py watch) runs it every 0.2 s with fall/rise and writes the state to a file
    that every instance tracks (`track_file`, weight 0: non-zero is FAULT)."""

    def conf(self, name: str) -> str:
        text = KeepalivedLab.conf(self, name)
        block = [
            "track_file service_state {",
            f'    file "{self.state_file(name)}"',
            "    weight 0",
            "}",
        ]
        text = text.replace("\n}\n", "\n}\n\n" + "\n".join(block) + "\n", 1)
        return text.replace(
            "\n    }\n}", "\n    }\n    track_file {\n        service_state\n    }\n}"
        )

    def state_file(self, name: str) -> Path:
        return self.workdir / f"{name}.state"

    def start_checker(self, name: str) -> None:
        argv = [sys.executable, str(BENCH / "service_io.py"), "watch"]
        argv += [
            "--state",
            str(self.state_file(name)),
            "--flag",
            str(self.workdir / f"{name}.drain"),
        ]
        argv += ["--port", str(PORT), "--interval", str(INTERVAL), "--fall", str(FALL)]
        argv += ["--rise", str(RISE)]
        self.seg.spawn(name, argv, log=str(self.workdir / f"{name}.checker.log"))
        for _ in range(100):
            if self.state_file(name).exists():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name}: the checker did not start")


@dataclass(frozen=True)
class Engine:
    name: str
    note: str
    interval: float  # the check's interval, for the drain wait and the report


ENGINES = {
    e.name: e
    for e in (
        Engine(
            "iprotate",
            f"`[[checks]]` tcp + drain exec, interval {INTERVAL:g} s, fall {FALL}, rise {RISE}",
            INTERVAL,
        ),
        Engine(
            "keepalived",
            f"`track_script` (service-check: flag + TCP connect), interval {KEEPALIVED_INTERVAL} s "
            f"(keepalived's fastest), fall {FALL}, rise {RISE}",
            KEEPALIVED_INTERVAL,
        ),
        Engine(
            "keepalived-file",
            f"`track_file` written by a checker doing the same check (flag + TCP connect) every "
            f"{INTERVAL:g} s, fall {FALL}, rise {RISE}: keepalived's way to a sub-second check",
            INTERVAL,
        ),
    )
}


# --- the client's view -------------------------------------------------------------------------


@dataclass
class Conn:
    start: float
    served: float  # -1: never served
    end: float
    host: str
    outcome: str


@dataclass
class Client:
    vips: list[str]
    path: Path
    conns: dict[str, list[Conn]] = field(default_factory=dict)
    _pos: int = 0
    _buf: bytes = b""

    def __post_init__(self) -> None:
        self.conns = {v: [] for v in self.vips}

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return
        self._pos += len(data)
        *lines, self._buf = (self._buf + data).split(b"\n")
        for line in lines:
            i, ts, tv, te, host, outcome = line.decode().split()
            c = Conn(float(ts), float(tv), float(te), host, outcome)
            self.conns[self.vips[int(i)]].append(c)

    def serving(self, vip: str, now: float) -> str | None:
        """The host serving `vip` now: the last STREAK connections (by start) served by it, the
        last one started less than 0.5 s ago."""
        cs = sorted(self.conns[vip][-4 * STREAK :], key=lambda c: c.start)[-STREAK:]
        if len(cs) < STREAK or now - cs[-1].start > 0.5 or any(c.served < 0 for c in cs):
            return None
        hosts = {c.host for c in cs}
        return hosts.pop() if len(hosts) == 1 else None


def settled(lab: Lab, client: Client, down: set[str]) -> bool:
    now = time.monotonic()
    return all(client.serving(str(v.ip), now) == v.holder(down) for v in lab.plan.vips)


def wait_settled(lab: Lab, client: Client, down: set[str], timeout: float, hold: float) -> bool:
    return held(lambda: settled(lab, client, down), client.poll, timeout, hold)


def timeline(conns: list[Conn], t0: float, start: float, end: float) -> list[list[Any]]:
    """Runs of consecutive connections with one result (the host that served them, or `failed`),
    as [from, to, who] in seconds after t0 by the time each was opened, for the plot."""
    ordered = sorted(conns, key=lambda c: c.start)
    return runs(((c.start, c.host if c.served >= 0 else "failed") for c in ordered), t0, start,
                end, EVERY)  # fmt: skip


# --- one scenario ------------------------------------------------------------------------------


def measure(
    lab: Lab,
    client: Client,
    kind: str,
    victim: str,
    fault: Any,
    timeout: float,
) -> dict[str, Any]:
    """Wait until every VIP is served by its owner, run `fault` (which returns the time of the
    service's stop), wait until the victim's VIPs are served by the next hosts, and measure."""
    if not wait_settled(lab, client, set(), timeout, STEADY):
        raise RuntimeError(f"{kind} on {victim}: the VIPs were not served by their owners before")
    client.poll()
    t0 = time.monotonic()
    t_stop = fault()
    ok = wait_settled(lab, client, {victim}, timeout, STABLE)
    t_end = time.monotonic()
    time.sleep(READ_GRACE)  # the last connections' lines
    client.poll()
    vips: dict[str, Any] = {}
    for v in lab.plan.vips:
        ip = str(v.ip)
        before, after = v.holder(set()), v.holder({victim})
        cs = client.conns[ip]
        after_fault = [c for c in cs if t0 <= c.start <= t_end]
        first = min((c.served - t0 for c in cs if c.host == after and c.served >= t0), default=None)
        failed = [c for c in after_fault if c.served < 0]
        cut = [c for c in cs if c.outcome == "cut" and c.start <= t_end and c.end >= t0]
        reasons: dict[str, int] = {}
        for c in failed:
            reasons[c.outcome] = reasons.get(c.outcome, 0) + 1
        vips[ip] = {
            "from": before,
            "to": after,
            "moved": before != after,
            "served_next_s": None if first is None else round(first, 4),
            "opened": len(after_fault),
            "failed": len(failed),
            "failed_why": reasons,
            "cut": len(cut),
            "timeline": timeline(cs, t0, t0 - 0.5, t_end),
        }
    return {
        "scenario": kind,
        "victim": victim,
        "settled": ok,
        "service_stopped_s": round(t_stop - t0, 4),
        "window_s": round(t_end - t0, 3),
        "vips": vips,
    }


READ_GRACE = 2.5  # > READ_TIMEOUT of the client: every connection of the window has its line


# --- one engine --------------------------------------------------------------------------------


@dataclass
class Services:
    """The service on every host, started and stopped by PID."""

    lab: Lab
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        argv = [sys.executable, str(BENCH / "service_io.py"), "serve", "--name", name]
        argv += ["--port", str(PORT), "--hold", str(HOLD)]
        log = str(self.lab.workdir / f"{name}.service.log")
        self.procs[name] = self.lab.seg.spawn(name, argv, log=log)
        for _ in range(100):
            if f":{PORT} " in self.lab.seg.run(name, "ss", "-Hltn", check=False):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name}: the service did not start (see {log})")

    def stop(self, name: str, sig: int) -> float:
        """Signal the host's service; the time it was signalled."""
        p = self.procs.pop(name)
        t = time.monotonic()
        Segment.stop(p, sig)
        return t


def victims(lab: Lab, repeat: int) -> list[str]:
    load = lab.plan.load()
    top = sorted(h for h, n in load.items() if n == max(load.values()))
    return [top[i % len(top)] for i in range(repeat)]


def run_engine(
    engine: Engine, workdir: Path, repeat: int, hosts: int = HOSTS, vips: int = VIPS
) -> dict[str, Any]:
    """Build the engine's lab, run both scenarios `repeat` times, tear everything down."""
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    if engine.name == "iprotate":
        names = [f"{n}" for n in _names(hosts)]
        lab: Lab = Lab(
            workdir,
            hosts=hosts,
            vips=vips,
            extra_toml=iprotate_checks(workdir, names, engine.interval),
            run_args=("--hold-down", "1"),
        )
    elif engine.name == "keepalived-file":
        lab = FileKeepalivedLab(workdir, hosts=hosts, vips=vips)
    else:
        lab = ServiceKeepalivedLab(workdir, hosts=hosts, vips=vips)
    timeout = 20.0
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with lab:
        print(f"  namespaces {lab.seg.prefix}-*, logs in {workdir}", flush=True)
        promote_secondaries(lab)
        services = Services(lab)
        for n in lab.names:
            services.start(n)
            if isinstance(lab, FileKeepalivedLab):
                lab.start_checker(n)
        addrs = [str(v.ip) for v in lab.plan.vips]
        client = Client(addrs, workdir / "connections.txt")
        argv = [sys.executable, str(BENCH / "service_io.py"), "client", "--out", str(client.path)]
        argv += ["--port", str(PORT), "--every", str(EVERY), *addrs]
        client_proc = lab.seg.spawn(CLIENT, argv, log=str(workdir / "client.log"))
        lab.start_all()
        if not wait_settled(lab, client, set(), 30.0, STEADY):
            raise RuntimeError(f"{engine.name}: the VIPs were not served after start")
        drain_wait = FALL * engine.interval + 1.0
        for i, victim in enumerate(victims(lab, repeat)):
            print(f"  {engine.name} run {i + 1}/{repeat}: victim {victim}", flush=True)
            flag = workdir / f"{victim}.drain"

            def kill(v: str = victim) -> float:
                return services.stop(v, signal.SIGKILL)

            def drain(v: str = victim, f: Path = flag) -> float:
                f.touch()
                time.sleep(drain_wait)
                return services.stop(v, signal.SIGTERM)

            res = []
            for kind, fault in (("kill", kill), ("drain", drain)):
                r = measure(lab, client, kind, victim, fault, timeout)
                print(f"    {kind:6} {summary_line(r)}", flush=True)
                res.append(r)
                flag.unlink(missing_ok=True)
                services.start(victim)
            if i > 0:
                for r in res:
                    for v in r["vips"].values():
                        del v["timeline"]
            runs.append({"victim": victim, "scenarios": res})
        if not wait_settled(lab, client, set(), timeout, STEADY):
            raise RuntimeError(f"{engine.name}: the VIPs did not come back at the end")
        Segment.stop(client_proc)
    return {
        "engine": engine.name,
        "note": engine.note,
        "interval": engine.interval,
        "netns_prefix": lab.seg.prefix,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
    }


def _names(n: int) -> list[str]:
    from iprotate.lab.lab import NAMES

    return list(NAMES[:n])


def summary_line(r: dict[str, Any]) -> str:
    moved = [v for v in r["vips"].values() if v["moved"]]
    times = [v["served_next_s"] for v in moved if v["served_next_s"] is not None]
    worst = max(times) if times and len(times) == len(moved) else float("nan")
    failed = sum(v["failed"] for v in r["vips"].values())
    cut = sum(v["cut"] for v in r["vips"].values())
    return (
        f"{len(moved)} VIPs moved, last served by the next host at {worst:.3f} s, "
        f"{failed} connections failed, {cut} cut"
    )


# --- report ------------------------------------------------------------------------------------


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


HEADERS = [
    "engine",
    "scenario",
    "VIPs moved",
    "served by next p50 (s)",
    "max (s)",
    f"within {TARGET:g} s",
    "failed/run",
    "failed max/VIP",
    "failed unmoved",
    "cut/run",
]


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for e in results:
        for kind in SCENARIOS:
            scen = [s for run in e["runs"] for s in run["scenarios"] if s["scenario"] == kind]
            if not scen:
                continue
            moved = [v for s in scen for v in s["vips"].values() if v["moved"]]
            unmoved = [v for s in scen for v in s["vips"].values() if not v["moved"]]
            times = [v["served_next_s"] for v in moved if v["served_next_s"] is not None]
            never = len(moved) - len(times)
            # For drain the clock starts at the flag, the service stops later: the target is
            # for the kill.
            within = sum(1 for t in times if t <= TARGET)
            failed = [sum(v["failed"] for v in s["vips"].values()) for s in scen]
            cut = [sum(v["cut"] for v in s["vips"].values()) for s in scen]
            unsettled = sum(1 for s in scen if not s["settled"])
            rows.append(
                [
                    e["engine"],
                    kind + (f" ({unsettled}/{len(scen)} unsettled)" if unsettled else ""),
                    f"{len(moved) // len(scen)}" + (f" ({never} never)" if never else ""),
                    fmt(percentile(times, 50)),
                    fmt(max(times) if times else None),
                    f"{within}/{len(moved)}" if kind == "kill" else "",
                    f"{sum(failed) / len(failed):.1f}",
                    str(max((v["failed"] for v in moved), default=0)),
                    str(sum(v["failed"] for v in unmoved)),
                    f"{sum(cut) / len(cut):.1f}",
                ]
            )
    return rows


def environment(argv: list[str]) -> dict[str, Any]:
    import platform

    return {
        "command": " ".join(["python bench/service.py", *argv]),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "keepalived": version([KEEPALIVED, "--version"]),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    table = tabulate(table_rows(doc["results"]), HEADERS, tablefmt="github")
    engines = "\n".join(
        f"- **{e['engine']}**: {e['note']}; load average {e['loadavg_before'][0]:.2f} → "
        f"{e['loadavg_after'][0]:.2f}"
        for e in doc["results"]
    )
    errors = "".join(f"- **{e['engine']}**: no result, {e['error']}\n" for e in doc["errors"])
    argv = " ".join(doc["argv"])
    return f"""# Service-failure benchmark: iprotate `[[checks]]` and keepalived `track_script`

    sudo .venv/bin/python bench/service.py{" " + argv if argv else ""}

Run {env["date"]} at {env["commit"]} on Linux {env["kernel"]}, {env["cpus"]} CPUs, Python
{env["python"]}, {env["keepalived"]}. The machine is shared with other jobs (2 CPUs, load averages
below): take the figures as indicative; the check intervals dominate them.

3 hosts and 6 VIPs planned by iprotate, the same plan under each engine, each in its own network
namespaces; every host runs the same TCP service (the host's name at once, `bye` and the close
{HOLD:g} s later). A client namespace opens a new connection to every VIP every {EVERY * 1000:g}
ms. {doc["repeat"]} run(s) per engine, on the host owning the most VIPs.

- **kill**: the service on the owner SIGKILLed; its host and HA engine live on.
- **drain**: "take the host out before you stop the service": the host's flag file is created,
  the check fails on it, the VIPs move (make-before-break for iprotate), and fall × interval +
  1 s after the flag the service is stopped (SIGTERM). Times count from the flag.

{engines}
{errors}
Columns: *served by next*, seconds from the fault to the first connection served by the VIP's
next host (pooled over the moved VIPs and the runs); *within {TARGET:g} s*, moved VIPs served by
the next host within {TARGET:g} s of the kill (the target, with interval 0.2 s and fall 2);
*failed*, connections opened after the fault that were never served (refused, reset, timed out),
summed over the VIPs, mean per run; *failed unmoved*, the same for VIPs that should not have
been touched; *cut*, connections served a name and then closed or reset before `bye`
(open when the service died or the address moved), mean per run.

{table}

![Which host served each VIP's connections, first run](service.png)

How to read it:

- A killed service refuses connections at once (the kernel answers the SYN with a reset) until
  the check has failed `fall` times and the address has moved: iprotate checks every 0.2 s and
  hands the address over make-before-break, as a drain does; keepalived cannot run a script
  more often than once a second, so its VIPs stay on the dead service for 1 to 2 s, then its
  instances go to FAULT and send priority 0, and the next host takes over after its skew time
  (about 0.2 s, during which nobody holds the address). Fed by a checker at 0.2 s through a
  `track_file`, keepalived detects as fast as iprotate and still adds that gap.
- Drain: the check fails on the flag while the service still answers, the VIPs move, and only
  then does the service stop. iprotate hands each address over make-before-break (the next host
  holds it before this one lets go): no connection fails. keepalived's instance in FAULT drops
  the address at once and the next host takes it after its skew time, so connections opened in
  between (about 0.2 s) fail. Connections open at the instant an address moves are cut either
  way (the next host knows nothing of them and resets them): the service keeps each one
  {HOLD:g} s here; a real service with long connections wants its own drain.
- A connection opened at the very instant an address moves can have its handshake split over
  the two hosts (the SYN answered by the old one, the ACK sent to the new one after its
  gratuitous ARP): it hangs, and counts as failed (`timeout` in the JSON). It is rare (about one
  in a few thousand connections to a moving VIP here) and no engine that moves addresses avoids
  it.
- White gaps across every VIP in the plot are moments the client opened nothing (the machine was
  busy): no outage, and no connection counted failed.

Raw data: [service.json](service.json) (per VIP: times, failures by reason, the timeline drawn
above).
"""


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "service.json").write_text(dumps(doc) + "\n")
    (out / "service.md").write_text(markdown(doc))
    if doc["results"]:
        try:
            from timeline import plot_service, pyplot

            pyplot()
        except ImportError as e:  # matplotlib is the `bench` extra
            print(f"service: no plot ({e}); pip install matplotlib", file=sys.stderr)
        else:
            plot_service(doc, out / "service.png", SCENARIOS)
    print(f"service: wrote {out}/service.md, .json, .png")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES), help="Comma-separated, in run order.")
    ap.add_argument("--repeat", type=int, default=3, help="Runs of both scenarios per engine.")
    ap.add_argument("--out", type=Path, default=BENCH / "results", help="Table, JSON and plot.")
    ap.add_argument("--workdir", type=Path, default=BENCH / "out", help="Logs and raw data.")
    ap.add_argument("--replot", type=Path, help="Only redraw the plot and table from this JSON.")
    args = ap.parse_args(argv)
    if args.replot:
        write_outputs(json.loads(args.replot.read_text()), args.out)
        return 0
    names = engine_names("service", args.engines, ENGINES)
    if names is None:
        return 2
    doc = new_doc(argv, args.repeat, environment(argv))
    run_each(
        doc, names, lambda n: run_engine(ENGINES[n], args.workdir / f"service-{n}", args.repeat)
    )
    write_outputs(doc, args.out)
    print(tabulate(table_rows(doc["results"]), HEADERS))
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
