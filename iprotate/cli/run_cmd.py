"""`iprotate run`: this host's CARP engine, in the foreground."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from ipaddress import IPv4Address
from typing import Any

import click

from iprotate.cli import early_signals, main
from iprotate.cli.common import check_host, cluster_file, load_plan
from iprotate.cluster.bounds import check_seconds
from iprotate.cluster.loader import check_local as check_programs
from iprotate.cluster.model import SYSLOG_FACILITIES
from iprotate.engine.bgp import BgpDaemon, BgpFailed, BgpOptions
from iprotate.engine.control import default_socket
from iprotate.engine.daemon import Daemon, DaemonFailed, RunOptions, StartError, find_host
from iprotate.engine.hostlock import HostInUse, check_local
from iprotate.engine.syslog_handler import DEV_LOG, SyslogHandler


def local_addresses() -> list[IPv4Address]:
    """The IPv4 addresses configured on this machine (this network namespace)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [IPv4Address(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(family=2)]


class SyslogUnavailable(Exception):
    """--syslog given, and the local syslog socket cannot be reached."""


def to_syslog(facility: str, host: str) -> None:
    """Send every log line from now on to the local syslog instead of stderr."""
    try:
        handler = SyslogHandler(facility, host)
    except OSError as e:
        raise SyslogUnavailable(
            f"syslog: {DEV_LOG}: {e.strerror or e}: no syslog daemon listens here "
            "(leave out --syslog and [run] syslog to log to stderr)"
        ) from None
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)


class Seconds(click.ParamType):
    """A `[run]` timing value on the command line, held to the same bounds as in the file."""

    name = "seconds"

    def __init__(self, key: str) -> None:
        self.key = key

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = value  # check_seconds says why it is no number
        problem = check_seconds(self.key, number)
        if problem is not None:
            self.fail(problem, param, ctx)
        return number


@main.command()
@cluster_file
@click.option(
    "--host", metavar="NAME", help="Which host this is (default: the one whose address is local)."
)
@click.option(
    "--hold-down",
    type=Seconds("hold_down"),
    help="Seconds after start or link up before taking VIPs back [run.hold_down].",
)
@click.option(
    "--stagger",
    type=Seconds("stagger"),
    help="Seconds between two VIPs taken back [run.stagger].",
)
@click.option(
    "--garp-refresh",
    type=Seconds("garp_refresh"),
    help="Seconds between gratuitous ARPs while master; 0: on takeover only [run.garp_refresh].",
)
@click.option(
    "--control-socket",
    metavar="PATH",
    help="The control socket; '' for none [run.control_socket] (default /run/iprotate/HOST.sock).",
)
@click.option(
    "--state-dir", metavar="DIR", help="Where the drained state survives restarts [run.state_dir]."
)
@click.option(
    "--metrics",
    metavar="ADDR",
    help="Serve Prometheus metrics on ADDR, e.g. 127.0.0.1:9650 [run.metrics].",
)
@click.option(
    "--ignore-ifstate",
    is_flag=True,
    default=None,
    help="Keep serving when the advert interface loses carrier (ucarp -S) [run.ignore_ifstate].",
)
@click.option(
    "--syslog",
    type=click.Choice(SYSLOG_FACILITIES),
    is_flag=False,
    flag_value="daemon",
    default=None,
    metavar="[FACILITY]",
    help="Log to the local syslog (/dev/log) as `iprotate`, facility daemon unless given, "
    "instead of stderr [run.syslog].",
)
@click.option(
    "--stderr",
    "to_stderr",
    is_flag=True,
    help="Log to stderr even when [run] syslog says otherwise (e.g. to watch it in a terminal).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log dropped packets too.")
def run(
    cluster_file: str,
    host: str | None,
    hold_down: float | None,
    stagger: float | None,
    garp_refresh: float | None,
    control_socket: str | None,
    state_dir: str | None,
    metrics: str | None,
    ignore_ifstate: bool | None,
    syslog: str | None,
    to_stderr: bool,
    verbose: bool,
) -> None:  # fmt: skip
    """Run this host's part of the plan: one CARP machine per VIP it takes part in.

    \b
    Signals:
      SIGTERM, SIGINT, SIGQUIT  hand every VIP over, remove the addresses, exit 0
      SIGHUP                    reload the cluster file
      SIGUSR1                   log the state of every VIP and the counters
      SIGUSR2                   demote, as ucarp: hand every VIP over, stay backup 3 s,
                                then take part again (VIPs back after the hold-down)
      SIGALRM, SIGIO, SIGPWR, SIGTSTP, SIGRTMIN..SIGRTMAX and the like: logged, ignored
      SIGPIPE, SIGTTIN, SIGTTOU, SIGXFSZ: ignored"""
    # Held since the first line of the command line (iprotate.cli) when this process was started
    # as `iprotate run`: a signal during the start-up is recorded, and obeyed once the loop runs.
    early = early_signals()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    cluster, plan = load_plan(cluster_file)
    given = {
        "hold_down": hold_down,
        "stagger": stagger,
        "garp_refresh": garp_refresh,
        "control_socket": control_socket,
        "state_dir": state_dir,
        "metrics": metrics,
        "ignore_ifstate": ignore_ifstate,
        "syslog": syslog,
    }
    settings = dataclasses.replace(cluster.run, **{k: v for k, v in given.items() if v is not None})
    if to_stderr:
        settings = dataclasses.replace(settings, syslog=None)
    try:
        local = local_addresses()
        if host is None:
            host = find_host(plan, local)
        else:
            check_host(plan, host)
            check_local(plan.cluster.host(host), local)
        if settings.syslog is not None:
            to_syslog(settings.syslog, host)
        host_vips = frozenset(v.ip for v in plan.for_host(host))
        for line in check_programs(plan.cluster, host, host_vips):
            # Not fatal: such a check is down (its VIPs go to healthy hosts) until it can run.
            logging.getLogger("iprotate").warning("%s: %s", cluster_file, line)
        sock = settings.control_socket
        if plan.cluster.bgp is not None:
            path = default_socket(host) if sock is None else (sock or None)
            bgp_options = BgpOptions(
                hold_down=settings.hold_down,
                stagger=settings.stagger,
                control_socket=path,
                control_group=settings.control_group,
                # BIRD's file and control socket beside ours (the lab gives each host its own).
                run_dir=os.path.dirname(path) if path else "/run/iprotate",
                cluster_file=cluster_file,
                metrics=settings.metrics or None,
                state_dir=settings.state_dir or None,
            )
            try:
                asyncio.run(BgpDaemon(plan, host, bgp_options, early).run())
            finally:
                if early is not None:
                    early.ignore_all()
            return
        options = RunOptions(
            hold_down=settings.hold_down,
            stagger=settings.stagger,
            garp_refresh=settings.garp_refresh,
            # Unset: this host's own path, so several hosts' daemons on one machine never meet.
            control_socket=default_socket(host) if sock is None else (sock or None),
            control_group=settings.control_group,
            state_dir=settings.state_dir or None,
            metrics=settings.metrics or None,
            hook_timeout=settings.hook_timeout,
            cluster_file=cluster_file,
            ignore_ifstate=settings.ignore_ifstate,
        )
        try:
            asyncio.run(Daemon(plan, host, options, early).run())
        finally:
            if early is not None:
                early.ignore_all()
    except (StartError, DaemonFailed, HostInUse, BgpFailed) as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
    except SyslogUnavailable as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
    except PermissionError as e:
        click.echo(f"error: {e}: iprotate run needs CAP_NET_ADMIN and CAP_NET_RAW (root)", err=True)
        raise SystemExit(1) from None
