"""`iprotate lab`: a live cluster of network namespaces on this machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click
from tabulate import tabulate

from iprotate.cli import lab_bgp, main
from iprotate.cli.lab_loop import Commands, interactive
from iprotate.cluster.model import ClusterError
from iprotate.lab.bgplab import BgpLab
from iprotate.lab.lab import SERVICE_CHECK, SERVICE_PORT, Lab

HELP = "commands: fail NAME (kill + cable out) | stop NAME (SIGTERM) | start NAME | quit"
SERVICE_HELP = "          break NAME (stop its HTTP service) | fix NAME (start it again)"


def _table(lab: Lab, note: str = "") -> str:
    rows = []
    for v in lab.plan.vips:
        seen = lab.view.get(str(v.ip), [])
        served = lab.served.get(str(v.ip), "-")
        if not seen:
            flag = "UNSERVED"
        elif len(seen) > 1:
            flag = "TWO MASTERS"
        elif lab.service and served != seen[0]:
            flag = "SERVICE DOWN"  # the address is there, the service behind it is not
        elif seen[0] == v.owner:
            flag = "home"
        else:
            flag = "moved"
        row = [str(v.address), v.vhid, v.owner, " ".join(seen) or "-"]
        rows.append([*row, served, flag] if lab.service else [*row, flag])
    state = "  ".join(
        f"{n}:{'up' if lab.running(n) else 'DOWN'}"
        + ("(ucarp)" if lab.plan.cluster.host(n).engine == "ucarp" else "")
        + ("" if not lab.service or lab.serving(n) else "(service broken)")
        for n in lab.names
    )
    head = f"[{time.strftime('%H:%M:%S')}] {state}" + (f"  -- {note}" if note else "")
    headers = ["vip", "vhid", "owner", "answered by (ARP)"]
    headers += ["served by (HTTP)", ""] if lab.service else [""]
    return head + "\n" + tabulate(rows, headers=headers)


def _settled(lab: Lab, down: set[str]) -> bool:
    """Every VIP answered (and served, with the service) by exactly the host the plan says, with
    `down` failed or broken."""
    return all(
        lab.view.get(str(v.ip)) == [v.holder(down)]
        and (not lab.service or lab.served.get(str(v.ip)) == v.holder(down))
        for v in lab.plan.vips
    )


def _wait(lab: Lab, down: set[str], limit: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        lab.poll_probe(0.1)
        if _settled(lab, down):
            return time.monotonic() - t0
    return None


def _demo(lab: Lab) -> bool:
    """Break the first host's service and fix it (with the service), fail the first host, bring
    it back, stop the second cleanly; True if every step settled."""
    c = lab.plan.cluster
    limit = c.advbase * c.dead_ratio + 10.0
    a = lab.names[0]
    steps: list[tuple[str, set[str], str | None]] = [("start", set(), None)]
    if len(lab.names) > 1:
        b = lab.names[1]
        if lab.service and lab.plan.cluster.host(a).engine != "ucarp":
            steps += [("break", {a}, a), ("fix", set(), a)]
        steps += [("fail", {a}, a), ("restore", set(), a), ("stop", {b}, b)]
    ok = True
    for what, down, who in steps:
        if what == "fail":
            lab.kill(who)  # type: ignore[arg-type]
        elif what == "restore":
            lab.restore(who)  # type: ignore[arg-type]
        elif what == "stop":
            lab.stop(who)  # type: ignore[arg-type]
        elif what == "break":
            lab.stop_service(who)  # type: ignore[arg-type]
        elif what == "fix":
            lab.start_service(who)  # type: ignore[arg-type]
        took = _wait(lab, down, limit)
        note = f"{what} {who or 'all'}: " + (
            f"settled in {took:.2f} s" if took is not None else f"NOT settled after {limit:.0f} s"
        )
        if what in ("restore", "fix"):
            note += f" (it waits the {c.run.hold_down:g} s hold-down before taking VIPs back)"
        ok &= took is not None
        click.echo(_table(lab, note) + "\n")
    return ok


def _interactive(lab: Lab) -> None:
    actions = {"fail": lab.kill, "stop": lab.stop, "start": lab.restore}
    if lab.service:
        actions |= {"break": lab.stop_service, "fix": lab.start_service}
    commands = Commands(
        actions,
        lab.names,
        _help(lab),
        failures=(RuntimeError, OSError),  # e.g. a service that cannot start: say so
        poll=lambda: lab.poll_probe(0.0),
        every=0.2,
    )
    interactive(lambda: _table(lab), commands)


def _help(lab: Lab) -> str:
    return HELP + ("\n" + SERVICE_HELP if lab.service else "")


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
@click.option("--service/--no-service", default=True, show_default=True,
              help="Run an HTTP service on every host, checked by a [[checks]] entry; `break` "
              "and `fix` stop and start it.")  # fmt: skip
@click.option("--bgp", is_flag=True, help="BGP mode: the hosts peer with a BIRD 2 router "
              "namespace, the client sits behind it.")  # fmt: skip
@click.option("--bfd", is_flag=True, help="With --bgp: BFD on the sessions.")
def lab(
    hosts: int,
    vips: int,
    vips6: int,
    legacy: int,
    advbase: int,
    demo: bool,
    keep: bool,
    service: bool,
    bgp: bool,
    bfd: bool,
) -> None:
    """Build a cluster of network namespaces here and watch VIPs move between its hosts.

    Every host runs a small HTTP service answering with its name; the client shows which host
    answers ARP for each VIP and which one serves it. `break NAME` stops a host's service: its
    check fails and its addresses go to the next hosts; `fix NAME` brings them back. With
    `--bgp` the hosts announce the VIPs to a BIRD 2 router instead."""
    if os.geteuid() != 0:
        raise click.ClickException(
            "iprotate lab needs root: it creates network namespaces, a bridge and veth pairs "
            "(run it with sudo)"
        )
    if bgp:
        _bgp_lab(hosts, vips, vips6, bfd, demo, keep)
        return
    for tool in ("ip", *(["ucarp"] if legacy else [])):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise click.ClickException(f"{tool} not found: apt-get install iproute2 ucarp")
    ok = True
    with _session("iprotate-lab-", keep) as workdir:
        try:
            if legacy == hosts and vips6:
                raise ValueError("every host runs ucarp, which speaks no IPv6: add --vips6 0")
            the_lab = Lab(
                workdir,
                hosts=hosts,
                vips=vips,
                vips6=vips6,
                legacy=legacy,
                advbase=advbase,
                service=service,
            )
        except (ValueError, ClusterError) as e:
            raise click.ClickException(str(e)) from None
        with the_lab as lab_:
            click.echo(
                f"lab {lab_.seg.prefix}: {hosts} hosts ({legacy} on ucarp), {vips} IPv4 and "
                f"{vips6} IPv6 VIPs"
            )
            if service:
                click.echo(
                    f"every host serves HTTP on port {SERVICE_PORT}, checked every "
                    f"{SERVICE_CHECK['interval']:g} s (down after {SERVICE_CHECK['fall']} failures)"
                )
            click.echo(f"cluster file: {lab_.cluster_file}; logs in {workdir}\n")
            lab_.start_all()
            lab_.start_probe()
            if demo or not sys.stdin.isatty():
                ok = _demo(lab_)
            else:
                _interactive(lab_)
        click.echo("lab removed: every namespace, link and process it made is gone")
    if not ok:
        raise SystemExit(1)


@contextlib.contextmanager
def _session(prefix: str, keep: bool) -> Iterator[Path]:
    """A lab's working directory, removed at the end unless `keep`; meanwhile the signals that
    end a terminal session unwind through the lab's `with` (which removes the lab), and Ctrl-C
    ends the lab with a word."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    old = {sig: signal.signal(sig, _raise_exit) for sig in EXIT_SIGNALS}
    try:
        yield workdir
    except KeyboardInterrupt:
        click.echo("\ninterrupted: lab removed")
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if keep:
            click.echo(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _bgp_lab(hosts: int, vips: int, vips6: int, bfd: bool, demo: bool, keep: bool) -> None:
    if shutil.which("bird") is None and not Path("/usr/sbin/bird").exists():
        raise click.ClickException("bird not found: apt-get install bird2")
    ok = True
    with _session("iprotate-bgplab-", keep) as workdir:
        try:
            the_lab = BgpLab(hosts=hosts, vips=vips, vips6=vips6, bfd=bfd, workdir=str(workdir))
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        try:
            with the_lab as lab_:
                click.echo(f"BGP lab {lab_.seg.prefix}: {hosts} hosts, {vips} VIPs, {vips6} IPv6 "
                           f"VIPs, a BIRD 2 router (BFD {'on' if bfd else 'off'}), a client "
                           "behind it")  # fmt: skip
                click.echo(f"cluster file: {lab_.cluster_file}; logs in {workdir}\n")
                lab_.wait(lambda: len(lab_.sessions_up()) == hosts, 30)
                if vips6:
                    lab_.wait(lambda: len(lab_.sessions6_up()) == hosts, 30)
                if demo or not sys.stdin.isatty():
                    ok = lab_bgp.demo(lab_)
                else:
                    lab_bgp.interactive(lab_)
            click.echo("lab removed: every namespace, link and process it made is gone")
        except TimeoutError:
            ok = False
            click.echo("the BGP sessions did not come up: lab removed", err=True)
    if not ok:
        raise SystemExit(1)
