"""`iprotate run`: this host's CARP engine, in the foreground."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from ipaddress import IPv4Address

import click

from iprotate.cli import main
from iprotate.cli.common import check_host, cluster_file, load_plan
from iprotate.engine.control import default_socket
from iprotate.engine.daemon import Daemon, RunOptions, StartError, find_host
from iprotate.engine.hostlock import HostInUse, check_local


def local_addresses() -> list[IPv4Address]:
    """The IPv4 addresses configured on this machine (this network namespace)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [IPv4Address(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(family=2)]


@main.command()
@cluster_file
@click.option(
    "--host", metavar="NAME", help="Which host this is (default: the one whose address is local)."
)
@click.option(
    "--hold-down",
    type=float,
    help="Seconds after start or link up before taking VIPs back [run.hold_down].",
)
@click.option("--stagger", type=float, help="Seconds between two VIPs taken back [run.stagger].")
@click.option(
    "--garp-refresh",
    type=float,
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
    verbose: bool,
) -> None:  # fmt: skip
    """Run this host's part of the plan: one CARP machine per VIP it takes part in.

    SIGTERM hands every VIP over at once and removes the addresses; SIGHUP reloads the file;
    SIGUSR1 logs the state of every VIP."""
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
    }
    settings = dataclasses.replace(cluster.run, **{k: v for k, v in given.items() if v is not None})
    try:
        local = local_addresses()
        if host is None:
            host = find_host(plan, local)
        else:
            check_host(plan, host)
            check_local(plan.cluster.host(host), local)
        sock = settings.control_socket
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
        )
        asyncio.run(Daemon(plan, host, options).run())
    except (StartError, HostInUse) as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
    except PermissionError as e:
        click.echo(f"error: {e}: iprotate run needs CAP_NET_ADMIN and CAP_NET_RAW (root)", err=True)
        raise SystemExit(1) from None
