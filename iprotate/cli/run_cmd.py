"""`iprotate run`: this host's CARP engine, in the foreground."""

from __future__ import annotations

import asyncio
import logging
import sys
from ipaddress import IPv4Address

import click

from iprotate.cli import main
from iprotate.cli.common import check_host, cluster_file, load_plan
from iprotate.daemon import Daemon, RunOptions, StartError, find_host


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
    default=0.0,
    show_default=True,
    help="Seconds after start or link up before this host preempts its VIPs back.",
)
@click.option(
    "--stagger",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds between two VIPs taken back after the hold-down.",
)
@click.option(
    "--garp-refresh",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds between gratuitous ARPs while master (0: on takeover only, as ucarp).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log dropped packets too.")
def run(
    cluster_file: str,
    host: str | None,
    hold_down: float,
    stagger: float,
    garp_refresh: float,
    verbose: bool,
) -> None:  # fmt: skip
    """Run this host's part of the plan: one CARP machine per VIP it takes part in."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    _, plan = load_plan(cluster_file)
    try:
        if host is None:
            host = find_host(plan, local_addresses())
        else:
            check_host(plan, host)
        options = RunOptions(hold_down=hold_down, stagger=stagger, garp_refresh=garp_refresh)
        asyncio.run(Daemon(plan, host, options).run())
    except StartError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
    except PermissionError as e:
        click.echo(f"error: {e}: iprotate run needs CAP_NET_ADMIN and CAP_NET_RAW (root)", err=True)
        raise SystemExit(1) from None
