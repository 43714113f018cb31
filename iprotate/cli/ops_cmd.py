"""Commands that talk to a running daemon (`status`, `drain`, `undrain`, `reload`) and
`cleanup`, which removes what a dead one left."""

from __future__ import annotations

import asyncio

import click

from iprotate.carp.status import status_text
from iprotate.cli import main
from iprotate.cli.common import check_host, cluster_file, echo_json, load_plan
from iprotate.engine.control import DEFAULT_SOCKET, ControlError, request

socket_option = click.option(
    "--socket",
    "socket_path",
    default=DEFAULT_SOCKET,
    show_default=True,
    envvar="IPROTATE_SOCKET",
    help="The daemon's control socket.",
)
vip_option = click.option("--vip", metavar="ADDRESS", help="Only this VIP (default: every VIP).")


def _ask(path: str, payload: dict[str, object]) -> dict[str, object]:
    try:
        return request(path, payload)
    except ControlError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None


@main.command()
@socket_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(socket_path: str, as_json: bool) -> None:
    """Per VIP: this host's state, the master on the wire, the planned owner; drift.

    Exits 1 when something is wrong (a VIP with no master, two masters, a drifting peer), so a
    monitoring check can call it."""
    doc = _ask(socket_path, {"cmd": "status"})["status"]
    assert isinstance(doc, dict)
    if as_json:
        echo_json(doc)
    else:
        click.echo(status_text(doc))
    if doc["problems"]:
        raise SystemExit(1)


@main.command()
@socket_option
@vip_option
def drain(socket_path: str, vip: str | None) -> None:
    """Hand VIPs to the next hosts, make-before-break, and stay out until undrained (across
    restarts of the daemon too)."""
    answer = _ask(socket_path, {"cmd": "drain", "vip": vip})
    click.echo(f"drained: {', '.join(answer['drained']) or 'nothing'}")  # type: ignore[arg-type]


@main.command()
@socket_option
@vip_option
def undrain(socket_path: str, vip: str | None) -> None:
    """Take part again: this host takes its VIPs back (after the hold-down, staggered)."""
    answer = _ask(socket_path, {"cmd": "undrain", "vip": vip})
    click.echo(f"still drained: {', '.join(answer['drained']) or 'nothing'}")  # type: ignore[arg-type]


@main.command()
@socket_option
def reload(socket_path: str) -> None:
    """Re-read the cluster file and apply it (as SIGHUP does); a bad file is refused."""
    a = _ask(socket_path, {"cmd": "reload"})
    click.echo(f"reloaded: {a['added']} VIPs added, {a['removed']} removed, {a['changed']} changed")


@main.command()
@cluster_file
@click.option("--host", metavar="NAME", help="Which host this is (default: found from addresses).")
def cleanup(cluster_file: str, host: str | None) -> None:
    """Remove every planned VIP from this host's VIP interface (after a crash; systemd's
    ExecStopPost runs it)."""
    from iprotate.cli.run_cmd import local_addresses
    from iprotate.engine.daemon import StartError, find_host, remove_vips

    _, plan = load_plan(cluster_file)
    try:
        if host is None:
            host = find_host(plan, local_addresses())
        check_host(plan, host)
        removed = asyncio.run(remove_vips(plan, host))
    except StartError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
    click.echo(f"removed {len(removed)} VIPs" + (f": {', '.join(removed)}" if removed else ""))
