"""Which BGP speaker holds iprotate's sessions: BIRD 2 or ExaBGP, measured side by side.

Two namespaces on one throw-away segment (iprotate.lab.netns): a router running Debian's BIRD 2
(198.51.100.254, AS 64512) and a host (198.51.100.1, AS 64513) running the speaker under test.
For each speaker it measures, reading the router's own table (`birdc show route`) as the truth:

- session: from starting the speaker to the router showing the session Established;
- announce / MED change / withdraw: from the host's command (BIRD: rewrite the config and
  `birdc configure`; ExaBGP: one line on its process API) to the router's table showing it;
- dead speaker: SIGKILL, and SIGSTOP (frozen: only BFD or the hold time can tell), until the
  router drops the route.

    sudo python bench/bgp_speakers.py [--rounds 5] [--out bench/results/bgp_speakers.json]

It only ever talks BGP between the two namespaces it creates, with private ASNs and lab addresses.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from iprotate.lab.netns import Segment

ROUTER_AS, HOST_AS = 64512, 64513
ROUTER, HOST = "198.51.100.254", "198.51.100.1"
VIP = "203.0.113.10/32"

ROUTER_CONF = """
router id {router};
log "{d}/router.log" all;
protocol device {{ scan time 10; }}
protocol bfd {{
    interface "*" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }};
}}
protocol bgp h1 {{
    local {router} as {router_as};
    neighbor {host} as {host_as};
    hold time {hold};
    connect delay time 1;
    connect retry time 2;
    error wait time 1, 10;
    bfd {bfd};
    ipv4 {{ import all; export none; }};
}}
"""

HOST_BIRD_CONF = """
router id {host};
log "{d}/host.log" all;
protocol device {{ scan time 10; }}
protocol bfd {{
    interface "*" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }};
}}
protocol static vips {{
    ipv4;
{routes}
}}
protocol bgp r1 {{
    local {host} as {host_as};
    neighbor {router} as {router_as};
    hold time {hold};
    connect delay time 1;
    connect retry time 2;
    error wait time 1, 10;
    graceful restart off;
    bfd {bfd};
    ipv4 {{ import none; export all; next hop self; }};
}}
"""

EXA_CONF = """
process feed {{
    run {python} -u {d}/feed.py;
    encoder text;
}}
neighbor {router} {{
    router-id {host};
    local-address {host};
    local-as {host_as};
    peer-as {router_as};
    hold-time {hold};
    api {{ processes [ feed ]; }}
}}
"""

# ExaBGP's process API: the feeder copies lines from a FIFO to its stdout (ExaBGP reads it).
FEED = """
import sys
while True:
    with open({fifo!r}) as f:
        for line in f:
            sys.stdout.write(line); sys.stdout.flush()
"""


def birdc(seg: Segment, member: str, sock: str, *cmd: str) -> str:
    return seg.run(member, "birdc", "-s", sock, *cmd, check=False)


def router_route(seg: Segment, sock: str) -> str | None:
    """The router's route for VIP with its MED ('none' without one), or None if it has none."""
    out = birdc(seg, "router", sock, "show", "route", "for", VIP.split("/")[0], "all")
    if VIP not in out:
        return None
    for line in out.splitlines():
        if "BGP.med:" in line:
            return line.split(":", 1)[1].strip()
    return "none"


def wait_for(pred, timeout: float = 30.0, step: float = 0.005) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return float("nan")


def established(seg: Segment, sock: str) -> bool:
    return "Established" in birdc(seg, "router", sock, "show", "protocols", "h1")


def run_speaker(kind: str, bfd: bool, rounds: int) -> dict[str, object]:
    d = tempfile.mkdtemp(prefix="iprotate-bgp-")
    os.chmod(d, 0o755)
    hold = 3
    fmt = dict(router=ROUTER, host=HOST, router_as=ROUTER_AS, host_as=HOST_AS, d=d, hold=hold,
               bfd="on" if bfd else "off", python=sys.executable, routes="")  # fmt: skip
    rs, hs = f"{d}/router.ctl", f"{d}/host.ctl"
    res: dict[str, list[float]] = {k: [] for k in ("session", "announce", "med", "withdraw")}
    res |= {"killed": [], "frozen": []}
    with Segment() as seg:
        seg.add("router", 254)
        seg.add("host", 1)
        Path(f"{d}/router.conf").write_text(ROUTER_CONF.format(**fmt))
        seg.spawn("router", ["bird", "-f", "-c", f"{d}/router.conf", "-s", rs, "-P", f"{d}/r.pid"])
        for rnd in range(rounds):
            proc, send = start_host(seg, kind, fmt, hs)
            res["session"].append(wait_for(lambda: established(seg, rs)))
            for key, cmd, want in (
                ("announce", ("announce", 100), "100"),
                ("med", ("announce", 200), "200"),
                ("withdraw", ("withdraw", 0), None),
            ):
                t0 = time.monotonic()
                send(*cmd)
                wait_for(lambda w=want: router_route(seg, rs) == w)
                res[key].append(time.monotonic() - t0)
            send("announce", 100)
            wait_for(lambda: router_route(seg, rs) == "100")
            fault = "killed" if rnd % 2 == 0 else "frozen"
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
            wait_for(lambda: router_route(seg, rs) is None, timeout=hold * 3)
            res[fault].append(time.monotonic() - t0)
            if fault == "frozen":
                os.kill(proc.pid, signal.SIGKILL)
                os.kill(proc.pid, signal.SIGCONT)
            proc.wait()
            wait_for(lambda: not established(seg, rs))
    out: dict[str, object] = {"speaker": kind, "bfd": bfd, "hold_time": hold}
    for k, v in res.items():
        out[k] = {"p50_ms": round(statistics.median(v) * 1000, 1),
                  "max_ms": round(max(v) * 1000, 1), "n": len(v)} if v else None  # fmt: skip
    return out


def start_host(seg: Segment, kind: str, fmt: dict[str, object], hs: str):  # type: ignore[no-untyped-def]
    d = fmt["d"]
    if kind == "bird":
        conf = Path(f"{d}/host.conf")
        conf.write_text(HOST_BIRD_CONF.format(**fmt))
        p = seg.spawn("host", ["bird", "-f", "-c", str(conf), "-s", hs, "-P", f"{d}/h.pid"])
        wait_for(lambda: os.path.exists(hs))

        def send(op: str, med: int) -> None:
            route = f"    route {VIP} blackhole {{ bgp_med = {med}; }};"
            routes = route if op == "announce" else ""
            conf.write_text(HOST_BIRD_CONF.format(**(fmt | {"routes": routes})))
            birdc(seg, "host", hs, "configure")

        return p, send
    # A fresh FIFO per start: the feeder of a killed ExaBGP may live on, reading the old one.
    fifo = f"{d}/feed{time.monotonic_ns()}.fifo"
    os.mkfifo(fifo)
    Path(f"{d}/feed.py").write_text(FEED.format(fifo=fifo))
    Path(f"{d}/exa.conf").write_text(EXA_CONF.format(**fmt))
    env = os.environ | {"exabgp_daemon_user": "root", "exabgp_log_destination": f"{d}/exa.log"}
    exa = str(Path(sys.executable).with_name("exabgp"))
    p = seg.spawn("host", [exa, "server", f"{d}/exa.conf"], log=f"{d}/exa.out", env=env)
    w = open(fifo, "w")  # noqa: SIM115 - held for the speaker's life

    def send_exa(op: str, med: int) -> None:
        line = f"announce route {VIP} next-hop self med {med}" if op == "announce" else ""
        w.write((line or f"withdraw route {VIP} next-hop self") + "\n")
        w.flush()

    return p, send_exa


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default="bench/results/bgp_speakers.json")
    a = ap.parse_args()
    results = [run_speaker(k, b, a.rounds) for k, b in (("bird", False), ("bird", True),
                                                       ("exabgp", False))]  # fmt: skip
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
