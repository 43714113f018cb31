"""Helpers for the tests that run a lab (namespaces, real daemons, a client)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from iprotate.lab.lab import CLIENT, Lab
from iprotate.plan.timing import master_down

WIRE_TOOL = str(Path(__file__).with_name("wire_tool.py"))


def wait_for(what: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until `what()` is true; fails the test after `timeout`."""
    t0 = time.monotonic()
    while True:
        if what():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not true after {timeout:.2f} s")
        time.sleep(step)


def settled(lab: Lab, down: set[str] | frozenset[str] = frozenset()) -> Callable[[], bool]:
    """Every VIP configured on exactly the live host the plan says, with `down` failed (a killed
    host's leftovers do not count: its cable is out)."""
    want = {str(v.ip): [v.holder(down)] for v in lab.plan.vips}

    def check() -> bool:
        seen = {ip: [h for h in hs if h not in down] for ip, hs in lab.holders().items()}
        return seen == want

    return check


def takeover_bound(lab: Lab, failed: str) -> float:
    """The protocol's bound for the failed host's VIPs: the slowest first backup's timeout."""
    c = lab.plan.cluster
    return max(
        master_down(c.advbase, v.advskew[1], c.dead_ratio)
        for v in lab.plan.vips
        if v.owner == failed
    )


def client_mac(lab: Lab, vip: IPv4Address) -> str | None:
    out = lab.seg.run(CLIENT, "ip", "neigh", "show", str(vip), "dev", "eth0")
    m = re.search(r"lladdr (\S+)", out)
    return m.group(1) if m else None


def status_counters(lab: Lab, host: str) -> dict[str, int]:
    """Ask a running daemon for its counters (SIGUSR1 logs them) and read them from its log."""
    (proc,) = lab.procs[host]
    log = lab.workdir / f"{host}.log"
    before = log.read_text().count("status counters:")
    os.kill(proc.pid, signal.SIGUSR1)
    wait_for(lambda: log.read_text().count("status counters:") > before, 2.0)
    line = log.read_text().rsplit("status counters:", 1)[1].splitlines()[0]
    return {k: int(n) for k, n in (kv.split("=") for kv in line.split() if "=" in kv)}
