"""`iprotate ucarp`: ucarp 1.5.2 command lines (or ifupdown stanzas, systemd units) for a host."""

from __future__ import annotations

import os
import shlex
import tempfile

import click

from iprotate.cli import main
from iprotate.cli.common import EXIT_BAD_FILE, check_host, cluster_file, load_plan
from iprotate.export import ucarp


@main.command("ucarp")
@cluster_file
@click.option(
    "--host",
    "host",
    metavar="NAME",
    required=True,
    help="The host to generate for (as named in the cluster file).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(ucarp.FORMATS),
    default="shell",
    show_default=True,
    help="shell: one command line per VIP; ifupdown: Debian /etc/network/interfaces "
    "stanzas (password on ucarp's command line!); systemd: one unit per VIP; "
    "json: the argv lists.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--passfile",
    metavar="PATH",
    default=ucarp.DEFAULT_PASSFILE,
    show_default=True,
    help="Where ucarp reads the cluster password (--passfile).",
)
@click.option(
    "--upscript",
    metavar="PATH",
    help="Up script for VIPs whose cluster file sets no up_script "
    f"[default: {ucarp.DEFAULT_UPSCRIPT}].",
)
@click.option(
    "--downscript",
    metavar="PATH",
    help="Down script for VIPs whose cluster file sets no down_script "
    f"[default: {ucarp.DEFAULT_DOWNSCRIPT}].",
)
@click.option(
    "--ucarp",
    "ucarp_bin",
    metavar="PATH",
    default=ucarp.DEFAULT_UCARP,
    show_default=True,
    help="The ucarp binary.",
)
@click.option(
    "--foreground",
    is_flag=True,
    help="Leave out -B in the shell and json forms (systemd units never have it).",
)
@click.option(
    "--write-passfile",
    is_flag=True,
    help="Also write the cluster password to --passfile (mode 600), for ucarp to read.",
)
def ucarp_command(
    cluster_file: str,
    host: str,
    fmt: str,
    as_json: bool,
    passfile: str,
    upscript: str | None,
    downscript: str | None,
    ucarp_bin: str,
    foreground: bool,
    write_passfile: bool,
) -> None:
    """Print the ucarp command lines HOST needs to take its part in the plan of CLUSTER_FILE.

    One ucarp per VIP, with the plan's vhid, advbase, advskew, preempt (-P), dead ratio and group.
    The up/down scripts are called as `script IFACE VIP XPARAM`, where XPARAM is PREFIX, or
    PREFIX@VIPIF when the host's vip_interface differs from its advert interface (see
    contrib/ucarp/vip-up.sh). The password is read from --passfile, never given on a command line
    (except by Debian's ifupdown hook, which cannot do otherwise).
    """
    if as_json:
        if fmt not in ("shell", "json"):
            raise click.UsageError("--json and --format are exclusive")
        fmt = "json"
    cluster, plan = load_plan(cluster_file)
    check_host(plan, host)
    opts = ucarp.UcarpOptions(
        ucarp=ucarp_bin,
        passfile=passfile,
        upscript=upscript,
        downscript=downscript,
        daemonize=not foreground,
    )
    insts = ucarp.instances(plan, host, opts)
    try:
        text = ucarp.render(fmt, plan, host, insts, opts)
    except ucarp.UcarpError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(EXIT_BAD_FILE) from None
    for note in ucarp.notes(plan, host, insts):
        click.echo(f"note: {note}", err=True)
    if insts and fmt == "ifupdown":
        click.echo(f"warning: {ucarp.IFUPDOWN_PASSWORD_WARNING}", err=True)
    if write_passfile:
        _write_passfile(passfile, cluster.password)
    elif insts and fmt != "ifupdown":
        again = shlex.join(
            ["iprotate", "ucarp", cluster.path, "--host", host, "--passfile", passfile]
        )
        click.echo(
            f"note: ucarp reads the cluster password from the first line of {passfile}; create "
            f"it (mode 600, root only) with: {again} --write-passfile",
            err=True,
        )
    if fmt == "systemd" and insts:
        units = " ".join(ucarp.unit_name(i) for i in insts)
        click.echo(
            f"note: save each unit under the path on its first line, then: systemctl "
            f"daemon-reload && systemctl enable --now {units}",
            err=True,
        )
    click.echo(text, nl=False)


def _write_passfile(path: str, password: bytes) -> None:
    """Write the passfile atomically with mode 600 (its directory made 700 if missing)."""
    try:
        data = ucarp.passfile_content(password)
    except ucarp.UcarpError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(EXIT_BAD_FILE) from None
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".passfile.")  # mode 600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        click.echo(f"error: cannot write {path}: {e.strerror}", err=True)
        raise SystemExit(1) from None
    click.echo(f"note: wrote the cluster password to {path} (mode 600)", err=True)
