"""Commands that talk to a running daemon (`status`, `drain`, `undrain`, `reload`) and
`cleanup`, which removes what a dead one left."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import click

from iprotate.bgp import status as bgp_status
from iprotate.carp.status import EXIT_CODES, status_text
from iprotate.cli import main
from iprotate.cli.common import check_host, cluster_file, echo_json, load_plan
from iprotate.engine.control import ControlError, default_socket, find_socket, request

EXIT_UNKNOWN = EXIT_CODES["UNKNOWN"]


def socket_option(f: Callable[..., None]) -> Callable[..., None]:
    """--socket PATH and --host NAME: which daemon to ask (default: the one of this network
    namespace, found among /run/iprotate/*.sock)."""
    f = click.option(
        "--host",
        "host",
        metavar="NAME",
        help="Ask host NAME's daemon (/run/iprotate/NAME.sock), when several run here.",
    )(f)
    return click.option(
        "--socket",
        "socket_path",
        envvar="IPROTATE_SOCKET",
        metavar="PATH",
        help="The daemon's control socket (when [run] control_socket moved it).",
    )(f)


vip_option = click.option("--vip", metavar="ADDRESS", help="Only this VIP (default: every VIP).")


def _ask(
    socket_path: str | None, host: str | None, payload: dict[str, object], fail: int = 1
) -> dict[str, object]:
    """Send `payload` to the chosen daemon; on any failure one line on stderr and exit `fail`."""
    try:
        if socket_path:
            path = socket_path
        elif host:
            path = default_socket(host)
        else:
            path = find_socket()
        return request(path, payload)
    except ControlError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(fail) from None


@main.command()
@socket_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(socket_path: str | None, host: str | None, as_json: bool) -> None:
    """Every VIP of the cluster: this host's state, the master on the wire, the planned owner;
    drift; what is wrong.

    The first line and the exit code follow the monitoring-plugins convention, so a check can
    call it: 0 OK, 1 WARNING (a VIP off its owner, a host not heard, drained VIPs, drift, another
    plan), 2 CRITICAL (a VIP with no master, or two), 3 UNKNOWN (no daemon answers)."""
    try:
        doc = _ask(socket_path, host, {"cmd": "status"}, fail=EXIT_UNKNOWN)["status"]
    except SystemExit:
        if not as_json:
            click.echo("IPROTATE UNKNOWN - no iprotate daemon answers")
        raise
    assert isinstance(doc, dict)
    if as_json:
        echo_json(doc)
    elif doc.get("mode") == "bgp":
        click.echo(bgp_status.text(doc))
    else:
        click.echo(status_text(doc))
    level = doc.get("level") or ("WARNING" if doc["problems"] else "OK")
    raise SystemExit(EXIT_CODES.get(level, EXIT_UNKNOWN))


@main.command()
@socket_option
@vip_option
def drain(socket_path: str | None, host: str | None, vip: str | None) -> None:
    """Hand VIPs to the next hosts, make-before-break, and stay out until undrained (across
    restarts of the daemon too)."""
    answer = _ask(socket_path, host, {"cmd": "drain", "vip": vip})
    click.echo(f"drained: {', '.join(answer['drained']) or 'nothing'}")  # type: ignore[arg-type]
    if answer.get("warning"):
        click.echo(f"warning: {answer['warning']}", err=True)


@main.command()
@socket_option
@vip_option
def undrain(socket_path: str | None, host: str | None, vip: str | None) -> None:
    """Take part again: this host takes its VIPs back (after the hold-down, staggered)."""
    answer = _ask(socket_path, host, {"cmd": "undrain", "vip": vip})
    click.echo(f"still drained: {', '.join(answer['drained']) or 'nothing'}")  # type: ignore[arg-type]
    if answer.get("warning"):
        click.echo(f"warning: {answer['warning']}", err=True)


@main.command()
@socket_option
def reload(socket_path: str | None, host: str | None) -> None:
    """Re-read the cluster file and apply it (as SIGHUP does); a bad file is refused."""
    a = _ask(socket_path, host, {"cmd": "reload"})
    click.echo(f"reloaded: {a['added']} VIPs added, {a['removed']} removed, {a['changed']} changed")


@main.command()
@cluster_file
@click.option("--host", metavar="NAME", help="Which host this is (default: found from addresses).")
def cleanup(cluster_file: str, host: str | None) -> None:
    """Remove every planned VIP from this host's VIP interface (after a crash; systemd's
    ExecStopPost runs it). Refused while a daemon runs this host here: they are its VIPs."""
    from iprotate.cli.run_cmd import local_addresses
    from iprotate.engine.daemon import StartError, find_host, remove_vips
    from iprotate.engine.hostlock import HostInUse, holder_pid

    _, plan = load_plan(cluster_file)
    try:
        if host is None:
            host = find_host(plan, local_addresses())
        check_host(plan, host)
        pid = holder_pid(plan.cluster.host(host))
        if pid is not None:
            who = f"pid {pid}" if pid else "another process"
            raise HostInUse(f"host {host} is run by {who} in this network namespace: stop it first")
        removed = asyncio.run(remove_vips(plan, host))
    except (StartError, HostInUse) as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
    click.echo(f"removed {len(removed)} VIPs" + (f": {', '.join(removed)}" if removed else ""))
