"""`iprotate import`: a cluster file from today's ucarp or keepalived configurations."""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
import tomllib
from pathlib import Path

import click

from iprotate.cli import main
from iprotate.cli.common import EXIT_BAD_FILE
from iprotate.cluster.loader import MAX_PASSWORD_FILE, NAME_RE, parse_cluster, read_bounded
from iprotate.cluster.model import Cluster, ClusterError
from iprotate.export import importer
from iprotate.export.text import comment_text
from iprotate.plan import report
from iprotate.plan.planner import make_plan


def _pairs(values: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            raise click.BadParameter(f"{v!r} is not {what}")
        out.append((name, rest))
    return out


def _fail(message: str) -> None:
    click.echo(f"error: {comment_text(message)}", err=True)
    raise SystemExit(EXIT_BAD_FILE)


@main.command("import")
@click.option(
    "--host",
    "hosts",
    metavar="NAME=FILE",
    multiple=True,
    required=True,
    help="A host and its configuration today: ucarp command lines, Debian interfaces stanzas "
    "or keepalived.conf (repeat for every host; a host's files in order, e.g. a ucarp.conf of "
    "UCARP_*= variables and then the start script that uses them).",
)
@click.option(
    "--address",
    "addresses",
    metavar="NAME=IP",
    multiple=True,
    help="A host's own address, when its file does not say it (keepalived without unicast_src_ip).",
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    required=True,
    type=click.Path(dir_okay=False),
    help="The cluster file to write.",
)
@click.option(
    "--password-file",
    metavar="NAME",
    default="password",
    show_default=True,
    help="The password file to write, beside the cluster file (mode 600); never printed.",
)
@click.option("--force", is_flag=True, help="Overwrite the cluster and password files.")
def import_command(
    hosts: tuple[str, ...],
    addresses: tuple[str, ...],
    output: str,
    password_file: str,
    force: bool,
) -> None:
    """Write a cluster file that reproduces today's ucarp or keepalived setup.

    Hosts, VIPs with their prefixes, vhids and groups pinned, today's preferred owner of each VIP
    pinned, advbase, dead ratio, interfaces, scripts; the password goes into its own file. Then
    prints what the planner would change without the owner pins, and everything that could not be
    carried over.
    """
    if "/" in password_file or password_file in ("", ".", ".."):
        raise click.BadParameter(f"{password_file!r}: a file name beside the cluster file")
    parsed: dict[str, importer.Parsed] = {}
    sources: dict[str, str] = {}
    env: dict[str, dict[str, str]] = {}  # shell variables per host, across its files
    for name, path in _pairs(hosts, "NAME=FILE"):
        if not NAME_RE.fullmatch(name):
            _fail(f"--host {name!r}: not a host name (letters, digits, '_.-', 1..63)")
        try:
            text = read_bounded(Path(path), importer.MAX_INPUT).decode("utf-8", "replace")
            p = importer.parse(name, path, text, env.setdefault(name, {}))
        except OSError as e:
            _fail(f"cannot read {path}: {e.strerror}")
        except importer.MigrateError as e:
            _fail(str(e))
        if name in parsed:  # a host's files in order: a ucarp.conf, then the start script
            parsed[name].instances += p.instances
            parsed[name].notes += p.notes
            parsed[name].scripts.update(p.scripts)
            sources[name] += f"+{path}"
        else:
            parsed[name], sources[name] = p, path
    try:
        addrs: dict[str, list[importer.IPAddress]] = {}
        for n, a in _pairs(addresses, "NAME=IP"):
            addrs.setdefault(n, []).append(importer.host_address(a))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    passfiles = {}
    for p in parsed.values():
        for i in p.instances:
            if i.passfile and i.passfile not in passfiles and os.path.isfile(i.passfile):
                try:
                    raw = read_bounded(Path(i.passfile), MAX_PASSWORD_FILE)
                except OSError:
                    continue
                passfiles[i.passfile] = raw.split(b"\n", 1)[0]  # as ucarp reads it
    try:
        imp = importer.build(parsed, addrs, password_file, sources, passfiles)
    except importer.MigrateError as e:
        _fail(str(e))
    # What would be written must be a valid cluster file: checked before anything is written.
    try:
        _document(imp.toml, output)
    except ClusterError as e:
        for line in str(e).splitlines():
            click.echo(f"error: {line}", err=True)
        for note in imp.notes:
            click.echo(f"note: {comment_text(note)}", err=True)
        raise SystemExit(EXIT_BAD_FILE) from None
    out = Path(output)
    pw_path = out.parent / password_file
    password = imp.password
    if password is None and imp.new_password:
        password = secrets.token_urlsafe(12).encode()  # 16 bytes, within CARP's 19
    for p in (out, pw_path) if password else (out,):
        if p.exists() and not force:
            _fail(f"{p} exists; --force to overwrite it")
    if password is not None:
        _write(pw_path, password + b"\n", 0o600)
    _write(out, imp.toml.encode(), 0o644)
    n_hosts, n_vips = len(parsed), imp.toml.count("[[vips]]")
    click.echo(f"wrote {out}: {n_hosts} host(s), {n_vips} VIP(s), owners and vhids pinned")
    if password is not None:
        click.echo(f"wrote the password to {pw_path} (mode 600)")
    ok = _report(out, imp)
    if imp.notes:
        click.echo("\nnot carried over, or changed:")
        for note in imp.notes:
            click.echo(f"  - {comment_text(note)}")
    if not ok:
        raise SystemExit(EXIT_BAD_FILE)


def _report(out: Path, imp: importer.Imported) -> bool:
    """The plan of the written file against today's order, and without the owner pins; False
    (with the errors on stderr) if the written file does not plan."""
    try:
        cluster = _document(imp.toml, str(out))
        plan = make_plan(cluster)
        free = make_plan(
            dataclasses.replace(
                cluster, vips=tuple(dataclasses.replace(v, owner=None) for v in cluster.vips)
            )
        )
    except ClusterError as e:
        for line in str(e).splitlines():
            click.echo(f"error: {line}", err=True)
        return False
    moved = [(v, imp.today[v.ip]) for v in plan.vips if imp.today.get(v.ip, v.order) != v.order]
    click.echo(f"\nfailover order: {len(plan.vips) - len(moved)} VIP(s) as today")
    for v, was in moved:
        click.echo(f"~ {v.address}: today {' > '.join(was)}, planned {' > '.join(v.order)}")
    click.echo("\nwithout the owner pins (iprotate plan --diff style):")
    click.echo(report.diff_text(report.diff(plan, free)))
    return True


def _document(text: str, path: str) -> Cluster:
    """The cluster `text` describes, validated as the loader does; the password file may not
    exist yet (a ucarp passfile not at hand), so a placeholder stands in for it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # a bug of the writer: an error, never a traceback
        raise ClusterError(path, [f"the file import would write is not TOML: {e}"]) from None
    data["cluster"].pop("password_file", None)
    data["cluster"]["password"] = "placeholder"
    return parse_cluster(data, path)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `path` whole and atomically with `mode`. The data goes to a new file of a random
    name made with mode 600 (mkstemp: O_EXCL, so no file or link planted beforehand is opened),
    then renamed over `path`: a password is never readable by others, not even for an instant."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), mode)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        _fail(f"cannot write {path}: {e.strerror}")
