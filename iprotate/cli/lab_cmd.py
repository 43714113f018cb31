"""`iprotate lab`: a live cluster of network namespaces on this machine."""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import click
from tabulate import tabulate

from iprotate.cli import main
from iprotate.cluster.model import ClusterError
from iprotate.lab.lab import Lab

HELP = "commands: fail NAME (kill + cable out) | stop NAME (SIGTERM) | start NAME | quit"


def _table(lab: Lab, note: str = "") -> str:
    rows = []
    for v in lab.plan.vips:
        seen = lab.view.get(str(v.ip), [])
        if not seen:
            flag = "UNSERVED"
        elif len(seen) > 1:
            flag = "TWO MASTERS"
        elif seen[0] == v.owner:
            flag = "home"
        else:
            flag = "moved"
        rows.append([str(v.address), v.vhid, v.owner, " ".join(seen) or "-", flag])
    state = "  ".join(
        f"{n}:{'up' if lab.running(n) else 'DOWN'}"
        + ("(ucarp)" if lab.plan.cluster.host(n).engine == "ucarp" else "")
        for n in lab.names
    )
    head = f"[{time.strftime('%H:%M:%S')}] {state}" + (f"  -- {note}" if note else "")
    return head + "\n" + tabulate(rows, headers=["vip", "vhid", "owner", "answered by", ""])


def _settled(lab: Lab, down: set[str]) -> bool:
    """Every VIP answered by exactly the host the plan says, with `down` failed."""
    return all(lab.view.get(str(v.ip)) == [v.holder(down)] for v in lab.plan.vips)


def _wait(lab: Lab, down: set[str], limit: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        lab.poll_probe(0.1)
        if _settled(lab, down):
            return time.monotonic() - t0
    return None


def _demo(lab: Lab) -> bool:
    """Fail the first host, bring it back, stop the second cleanly; True if every step settled."""
    c = lab.plan.cluster
    limit = c.advbase * c.dead_ratio + 10.0
    a = lab.names[0]
    steps = [("start", set(), None)]
    if len(lab.names) > 1:
        b = lab.names[1]
        steps += [("fail", {a}, a), ("restore", set(), a), ("stop", {b}, b)]
    ok = True
    for what, down, who in steps:
        if what == "fail":
            lab.kill(who)
        elif what == "restore":
            lab.restore(who)
        elif what == "stop":
            lab.stop(who)
        took = _wait(lab, down, limit)
        note = f"{what} {who or 'all'}: " + (
            f"settled in {took:.2f} s" if took is not None else f"NOT settled after {limit:.0f} s"
        )
        if what == "restore":
            note += f" (it waits the {c.run.hold_down:g} s hold-down before taking VIPs back)"
        ok &= took is not None
        click.echo(_table(lab, note) + "\n")
    return ok


def _interactive(lab: Lab) -> None:
    last = ""
    while True:
        lab.poll_probe(0.0)
        shown = _table(lab)
        body = shown.split("\n", 1)[1]
        if body != last:
            click.clear()  # a live table, redrawn in place
            click.echo(f"{shown}\n\n{HELP}\n> ", nl=False)
            last = body
        ready, _, _ = select.select([sys.stdin], [], [], 0.2)
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:
            return
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        if cmd in ("quit", "q", "exit"):
            return
        if cmd in ("fail", "stop", "start") and len(args) == 1 and args[0] in lab.names:
            {"fail": lab.kill, "stop": lab.stop, "start": lab.restore}[cmd](args[0])
            last = ""
        else:
            click.echo(f"? {line.strip()}\n{HELP}\n> ", nl=False)


# SIGHUP: the terminal closed. Each of these unwinds through the `with` that removes the lab.
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal must not interrupt the clean-up the first one started.
    for sig in (*EXIT_SIGNALS, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


@main.command()
@click.option("--hosts", default=3, show_default=True, help="Hosts in the cluster (1..26).")
@click.option("--vips", default=9, show_default=True, help="VIPs in 203.0.113.0/24 (0..245).")
@click.option(
    "--vips6", default=3, show_default=True, help="IPv6 VIPs in 2001:db8:113::/64 (0..245)."
)
@click.option("--legacy", default=0, show_default=True, help="How many hosts run ucarp instead.")
@click.option("--advbase", default=1, show_default=True, help="CARP advbase (0: sub-second).")
@click.option("--demo", is_flag=True, help="Run a scripted failure and return, then exit "
              "(the default when standard input is not a terminal).")  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the lab's files (cluster file, logs).")
def lab(
    hosts: int, vips: int, vips6: int, legacy: int, advbase: int, demo: bool, keep: bool
) -> None:
    """Build a cluster of network namespaces here and watch VIPs move between its hosts."""
    if os.geteuid() != 0:
        raise click.ClickException(
            "iprotate lab needs root: it creates network namespaces, a bridge and veth pairs "
            "(run it with sudo)"
        )
    for tool in ("ip", *(["ucarp"] if legacy else [])):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise click.ClickException(f"{tool} not found: apt-get install iproute2 ucarp")
    workdir = Path(tempfile.mkdtemp(prefix="iprotate-lab-"))
    old = {sig: signal.signal(sig, _raise_exit) for sig in EXIT_SIGNALS}
    ok = True
    try:
        try:
            if legacy == hosts and vips6:
                raise ValueError("every host runs ucarp, which speaks no IPv6: add --vips6 0")
            the_lab = Lab(
                workdir, hosts=hosts, vips=vips, vips6=vips6, legacy=legacy, advbase=advbase
            )
        except (ValueError, ClusterError) as e:
            raise click.ClickException(str(e)) from None
        with the_lab as lab_:
            click.echo(
                f"lab {lab_.seg.prefix}: {hosts} hosts ({legacy} on ucarp), {vips} IPv4 and "
                f"{vips6} IPv6 VIPs"
            )
            click.echo(f"cluster file: {lab_.cluster_file}; logs in {workdir}\n")
            lab_.start_all()
            lab_.start_probe()
            if demo or not sys.stdin.isatty():
                ok = _demo(lab_)
            else:
                _interactive(lab_)
        click.echo("lab removed: every namespace, link and process it made is gone")
    except KeyboardInterrupt:
        click.echo("\ninterrupted: lab removed")
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if keep:
            click.echo(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        raise SystemExit(1)
