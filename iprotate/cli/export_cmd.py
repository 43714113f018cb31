"""`iprotate keepalived` and `iprotate freebsd`: another engine's configuration for one host."""

from __future__ import annotations

import click

from iprotate.cli import main
from iprotate.cli.common import EXIT_BAD_FILE, check_host, cluster_file, load_plan
from iprotate.export import freebsd, keepalived

_host = click.option(
    "--host",
    "host",
    metavar="NAME",
    required=True,
    help="The host to generate for (as named in the cluster file).",
)


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    raise SystemExit(EXIT_BAD_FILE) from None


@main.command("keepalived")
@cluster_file
@_host
@click.option(
    "--unicast",
    is_flag=True,
    help="Send adverts to the other hosts of each VIP (unicast_peer) instead of multicast.",
)
def keepalived_command(cluster_file: str, host: str, unicast: bool) -> None:
    """Print the keepalived.conf HOST needs to run its part in the plan of CLUSTER_FILE.

    For a cluster where every host runs keepalived (VRRP and CARP cannot share a VIP): one
    vrrp_instance per VIP, virtual_router_id = vhid, priorities in the plan's failover order,
    nopreempt where the host does not preempt, advert_int = advbase, the up/down scripts as
    notify_master/notify_backup/notify_fault.
    """
    _, plan = load_plan(cluster_file)
    check_host(plan, host)
    try:
        text = keepalived.keepalived_conf(plan, host, keepalived.KeepalivedOptions(unicast))
    except keepalived.KeepalivedError as e:
        _fail(e)
    for note in keepalived.notes(plan, host):
        click.echo(f"note: {note}", err=True)
    click.echo(text, nl=False)


@main.command("freebsd")
@cluster_file
@_host
@click.option(
    "--first-alias",
    metavar="N",
    type=click.IntRange(0, 9999),
    default=0,
    show_default=True,
    help="Number of the first ifconfig_<if>_alias<N> line (if the host has aliases already).",
)
def freebsd_command(cluster_file: str, host: str, first_alias: int) -> None:
    """Print the FreeBSD carp(4) configuration HOST needs for its part in the plan of CLUSTER_FILE.

    The /etc/rc.conf alias lines (inet vhid V advbase B advskew K pass P alias ADDR/LEN), the
    loader.conf and sysctl.conf lines (net.inet.carp.preempt), and the commands that apply them
    without a reboot. The lines carry the cluster password: see the warning on stderr.
    """
    _, plan = load_plan(cluster_file)
    check_host(plan, host)
    try:
        text = freebsd.render(plan, host, freebsd.FreebsdOptions(first_alias))
    except freebsd.FreebsdError as e:
        _fail(e)
    for note in freebsd.notes(plan, host):
        click.echo(f"note: {note}", err=True)
    click.echo(text, nl=False)
