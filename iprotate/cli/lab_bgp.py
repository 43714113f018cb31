"""`iprotate lab --bgp`: hosts in BGP mode, a BIRD 2 router, a client; the router's table shown."""

from __future__ import annotations

import signal
import time

import click
from tabulate import tabulate

from iprotate.cli import lab_loop
from iprotate.cluster.loader import load_cluster
from iprotate.lab.bgplab import BgpLab
from iprotate.plan.bgp import prefix_of
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

HELP = "commands: fail NAME (kill) | start NAME | drain NAME | undrain NAME | quit"


def table(lab: BgpLab, plan: Plan, note: str = "") -> str:
    """The router's view: per VIP the best path, every path's MED, against the plan."""
    routes = lab.routes()
    drift = lab.drift()
    rows = []
    for v in plan.vips:
        prefix = prefix_of(v)  # /32, or /128 for an IPv6 VIP
        paths = routes.get(prefix, [])
        best = next((p.host for p in paths if p.best), None)
        flag = "UNSERVED" if best is None else ("home" if best == v.owner else "moved")
        if prefix in drift:
            flag += " DRIFT (hosts run different plans)"
        meds = " ".join(f"{p.host}:{p.med}" for p in sorted(paths, key=lambda p: p.med or 0))
        rows.append([prefix, v.owner, best or "-", meds or "-", flag])
    up = set(lab.sessions_up())
    state = "  ".join(f"{n}:{'up' if n in up else 'DOWN'}" for n in lab.names)
    if lab.vips6:
        up6 = set(lab.sessions6_up())
        state += "  IPv6 " + "  ".join(f"{n}:{'up' if n in up6 else 'DOWN'}" for n in lab.names)
    head = f"[{time.strftime('%H:%M:%S')}] sessions {state}" + (f"  -- {note}" if note else "")
    return (
        head
        + "\n"
        + tabulate(rows, headers=["prefix", "owner", "router's best", "paths (med)", ""])
    )


def _settled(lab: BgpLab, plan: Plan, down: set[str]) -> float | None:
    want = {prefix_of(v): v.holder(down) for v in plan.vips}
    try:
        return lab.wait(lambda: lab.best() == want, timeout=lab.hold_time + 15)
    except TimeoutError:
        return None


def demo(lab: BgpLab) -> bool:
    """Kill the first host, start it again, drain and undrain the second; True if all settled."""
    plan = make_plan(load_cluster(lab.cluster_file))
    a = lab.names[0]
    b = lab.names[1] if len(lab.names) > 1 else a
    steps = [
        ("start", set(), lambda: None),
        (f"fail {a} (SIGKILL)", {a}, lambda: lab.kill(a, signal.SIGKILL)),
        (f"start {a}", set(), lambda: lab.start(a)),
        (f"drain {b}", {b}, lambda: lab.ask(b, "drain")),
        (f"undrain {b}", set(), lambda: lab.ask(b, "undrain")),
    ]
    ok = True
    for what, down, act in steps:
        act()
        took = _settled(lab, plan, down)
        note = f"{what}: " + (f"settled in {took:.2f} s" if took is not None else "NOT settled")
        ok &= took is not None
        click.echo(table(lab, plan, note) + "\n")
    return ok


def interactive(lab: BgpLab) -> None:
    plan = make_plan(load_cluster(lab.cluster_file))
    actions = {
        "fail": lambda name: lab.kill(name, signal.SIGKILL),
        "start": lab.start,
        "drain": lambda name: lab.ask(name, "drain"),
        "undrain": lambda name: lab.ask(name, "undrain"),
    }
    lab_loop.interactive(lambda: table(lab, plan), lab_loop.Commands(actions, lab.names, HELP))
