"""ucarp 1.5.2 configuration for hosts that cannot run iprotate: pure, no I/O.

From a :class:`~iprotate.plan.model.Plan` and a host name this module builds, for every VIP the host
takes part in, the argv of one ucarp process with the plan's vhid, advbase, advskew, preempt, dead
ratio and group, and renders it as shell lines, Debian ifupdown stanzas or systemd units. The CLI
(:mod:`iprotate.cli.ucarp_cmd`) only prints what is built here.

Conventions (see ../shared/CARP.md for ucarp's real behaviour):

- ``-i``/``-s`` are the host's advert interface and its real address (ucarp joins the group on the
  interface owning ``--srcip``, so the two must match). The VIP itself is added by the up script, on
  the host's ``vip_interface``.
- xparam (``-x``), the third argument of the up/down scripts, is ``PREFIX`` when the VIP lives on
  the advert interface and ``PREFIX@IFACE`` when it lives on another one (``24`` or ``24@eth2``).
  The split is at the first ``@``: the prefix is digits only, so any interface name survives. The
  contrib scripts also accept ``PREFIX IFACE`` (one argument with a space), but iprotate never
  generates it: Debian's ifupdown hook passes ``ucarp-xparam`` unquoted and would split it.
- The password is read by ucarp from ``--passfile`` (first line, only ``\\n`` stripped); it is never
  on a generated command line. Only the ifupdown format carries it, because Debian's hook has no
  passfile option (:data:`IFUPDOWN_PASSWORD_WARNING`).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iprotate.cluster.model import DEFAULT_GROUP, Host, IPAddress
from iprotate.export.text import comment_text
from iprotate.plan.model import Plan, VipPlan

DEFAULT_UCARP = "/usr/sbin/ucarp"
DEFAULT_UPSCRIPT = "/usr/local/lib/iprotate/vip-up.sh"
DEFAULT_DOWNSCRIPT = "/usr/local/lib/iprotate/vip-down.sh"
DEFAULT_PASSFILE = "/etc/iprotate/password"
UNIT_DIR = "/etc/systemd/system"
IFNAMSIZ = 15  # longest interface name (or address label) Linux accepts

FORMATS = ("shell", "ifupdown", "systemd", "json")

IFUPDOWN_PASSWORD_WARNING = (
    "Debian's ifupdown hook (/etc/network/if-up.d/ucarp) has no passfile option: it passes "
    "ucarp-password on ucarp's command line, where any local user can read it (ps, /proc). "
    "Keep the interfaces file mode 600, or use --format systemd or shell, which use --passfile."
)


class UcarpError(ValueError):
    """The plan cannot be expressed in the requested ucarp form; the message says why and what to
    do instead."""


@dataclass(frozen=True)
class UcarpOptions:
    """Host-side choices that are not in the cluster file.

    `upscript`/`downscript` are the fallback for VIPs whose cluster file sets no script: a VIP's own
    ``up_script`` wins, then the cluster's, then this, then :data:`DEFAULT_UPSCRIPT`.
    """

    ucarp: str = DEFAULT_UCARP
    passfile: str = DEFAULT_PASSFILE
    upscript: str | None = None
    downscript: str | None = None
    daemonize: bool = True  # -B in the shell and JSON forms; never in systemd units


@dataclass(frozen=True)
class Instance:
    """One ucarp process: one VIP as one host runs it."""

    vip: VipPlan
    host: Host
    rank: int  # 0 = owner
    advskew: int
    preempt: bool
    upscript: str
    downscript: str
    xparam: str
    argv: tuple[str, ...]  # without -B; see :func:`command`

    @property
    def mcast(self) -> IPAddress | None:
        """The group to pass as ``--mcastip``, or None for ucarp's default 224.0.0.18."""
        return None if self.vip.group == DEFAULT_GROUP else self.vip.group

    def to_json(self, argv: Sequence[str]) -> dict[str, Any]:
        v = self.vip
        return {
            "address": str(v.address),
            "vhid": v.vhid,
            "group": str(v.group),
            "owner": v.owner,
            "rank": self.rank,
            "advskew": self.advskew,
            "preempt": self.preempt,
            "interface": self.host.interface,
            "vip_interface": self.host.vip_interface,
            "xparam": self.xparam,
            "upscript": self.upscript,
            "downscript": self.downscript,
            "argv": list(argv),
        }


# --- building ------------------------------------------------------------------------------------


def xparam(host: Host, vip: VipPlan) -> str:
    """The up/down scripts' third argument: ``PREFIX`` or ``PREFIX@VIP_INTERFACE``."""
    prefix = str(vip.address.network.prefixlen)
    if host.vip_interface == host.interface:
        return prefix
    return f"{prefix}@{host.vip_interface}"


def parse_xparam(value: str, interface: str) -> tuple[int, str]:
    """(prefix, interface) from an xparam, as the contrib scripts read it; `interface` is the
    script's first argument (its ``:alias`` suffix dropped). Raises ValueError if malformed."""
    prefix, sep, iface = value.partition("@")
    if not sep:
        prefix, sep, iface = value.partition(" ")
    if not re.fullmatch(r"[0-9]{1,2}", prefix) or int(prefix) > 32:
        raise ValueError(f"xparam {value!r}: the prefix length must be 0..32")
    if sep and not iface:
        raise ValueError(f"xparam {value!r}: no interface after {sep!r}")
    return int(prefix), iface or interface.split(":", 1)[0]


def _scripts(plan: Plan, vip: VipPlan, opts: UcarpOptions) -> tuple[str, str]:
    c = plan.cluster
    up = vip.vip.up_script or c.up_script or opts.upscript or DEFAULT_UPSCRIPT
    down = vip.vip.down_script or c.down_script or opts.downscript or DEFAULT_DOWNSCRIPT
    return up, down


def instances(plan: Plan, host: str, opts: UcarpOptions | None = None) -> tuple[Instance, ...]:
    """One :class:`Instance` per IPv4 VIP `host` takes part in, in plan order. IPv6 VIPs are
    left out: ucarp speaks no IPv6 (`notes` says so).

    Raises KeyError if `host` is not in the cluster; an empty tuple means it takes part in no VIP.
    """
    opts = opts or UcarpOptions()
    h = plan.cluster.host(host)
    c = plan.cluster
    out = []
    for v in plan.for_host(host):
        if v.ip.version != 4:
            continue
        rank = v.order.index(host)
        advskew = v.advskew_of(host)
        preempt = v.preempt_of(host)
        up, down = _scripts(plan, v, opts)
        x = xparam(h, v)
        argv = [
            opts.ucarp,
            "-i", h.interface,
            "-s", str(h.address),
            "-v", str(v.vhid),
            "-a", str(v.ip),
            "-b", str(c.advbase),
            "-k", str(advskew),
            "-r", str(c.dead_ratio),
            *(["-P"] if preempt else []),
            "-z",
            "--passfile", opts.passfile,
            "-u", up,
            "-d", down,
            "-x", x,
        ]  # fmt: skip
        if v.group != DEFAULT_GROUP:
            argv += ["--mcastip", str(v.group)]
        out.append(Instance(v, h, rank, advskew, preempt, up, down, x, tuple(argv)))
    return tuple(out)


def command(inst: Instance, daemonize: bool) -> tuple[str, ...]:
    """The instance's argv, with ``-B`` (run in the background) right after the program if asked."""
    if not daemonize:
        return inst.argv
    return (inst.argv[0], "-B", *inst.argv[1:])


def notes(plan: Plan, host: str, insts: Sequence[Instance]) -> list[str]:
    """What the operator should know about these lines (printed on stderr by the CLI)."""
    c = plan.cluster
    h = c.host(host)
    out: list[str] = []
    if h.engine == "iprotate":
        out.append(
            f'{host} has engine = "iprotate" in {c.path}: it is meant to run `iprotate run`; '
            "these ucarp lines are for a host that cannot"
        )
    six = sum(1 for v in plan.for_host(host) if v.ip.version == 6)
    if six:
        out.append(
            f"{host} takes part in {six} IPv6 VIP(s), left out here: ucarp speaks no IPv6; "
            f"they need `iprotate run` on {host}"
        )
    if not insts:
        out.append(
            f"{host} takes part in no VIP of {c.path} ({len(plan.vips)} VIP(s) over "
            f"{len(c.hosts)} host(s), {c.backups} backup(s) each): nothing for ucarp to do"
        )
        return out
    if c.advbase == 0 and any(i.rank > 0 for i in insts):
        out.append(
            "advbase is 0 (sub-second): ucarp reacts up to 1 s late and flaps as a backup; "
            f"run iprotate on {host} or use advbase >= 1"
        )
    if h.vip_interface != h.interface:
        out.append(
            f"VIPs go on {h.vip_interface} but adverts on {h.interface}: ucarp's own gratuitous "
            f"ARP goes out on {h.interface}; the contrib up script sends one on "
            f"{h.vip_interface} when arping is installed"
        )
    return out


# --- renderings ----------------------------------------------------------------------------------


def shell_lines(insts: Sequence[Instance], daemonize: bool = True) -> str:
    """One shell-quoted command line per instance."""
    return "".join(shlex.join(command(i, daemonize)) + "\n" for i in insts)


def to_json(plan: Plan, host: str, insts: Sequence[Instance], opts: UcarpOptions) -> dict[str, Any]:
    """The argv lists and what they were built from, for scripts."""
    h = plan.cluster.host(host)
    return {
        "host": host,
        "engine": h.engine,
        "address": str(h.address),
        "interface": h.interface,
        "vip_interface": h.vip_interface,
        "advbase": plan.cluster.advbase,
        "dead_ratio": plan.cluster.dead_ratio,
        "passfile": opts.passfile,
        "instances": [i.to_json(command(i, opts.daemonize)) for i in insts],
    }


def _describe(inst: Instance) -> str:
    v = inst.vip
    role = "owner" if inst.rank == 0 else f"backup {inst.rank}"
    return (
        f"{v.address} vhid {v.vhid}: {inst.host.name} is {role} "
        f"(order {' > '.join(v.order)}), advskew {inst.advskew}, "
        f"preempt {'yes' if inst.preempt else 'no'}"
    )


# --- systemd -------------------------------------------------------------------------------------

_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def systemd_quote(arg: str) -> str:
    """`arg` as one word of a systemd ``ExecStart=`` line (quotes, ``%`` and ``$`` escaped)."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in arg):
        raise UcarpError(f"{arg!r}: control characters cannot go into a systemd unit")
    if _SYSTEMD_PLAIN.fullmatch(arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def unit_name(inst: Instance) -> str:
    """``iprotate-ucarp-203.0.113.10.service``: one unit per VIP."""
    return f"iprotate-ucarp-{inst.vip.ip}.service"


def systemd_unit(inst: Instance, cluster_path: str) -> str:
    """One service unit that runs the instance in the foreground (no ``-B``)."""
    exec_start = " ".join(systemd_quote(a) for a in command(inst, daemonize=False))
    return (
        "[Unit]\n"
        f"Description=ucarp for {inst.vip.address} vhid {inst.vip.vhid} "
        f"(iprotate, host {systemd_text(inst.host.name)})\n"
        f"# Generated by `iprotate ucarp` from {systemd_text(cluster_path)}.\n"
        f"# {_describe(inst)}\n"
        "Documentation=man:ucarp(8)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def systemd_text(text: str) -> str:
    """`text` made safe for a unit file's free text (one line, ``%`` escaped)."""
    return " ".join(text.split()).replace("%", "%%")


def systemd_units(insts: Sequence[Instance], cluster_path: str) -> list[tuple[str, str]]:
    """(unit file path, contents) for every instance."""
    return [(f"{UNIT_DIR}/{unit_name(i)}", systemd_unit(i, cluster_path)) for i in insts]


def systemd_text_all(insts: Sequence[Instance], cluster_path: str) -> str:
    """Every unit, each under a ``# /etc/systemd/system/NAME.service`` line."""
    return "\n".join(f"# {path}\n{text}" for path, text in systemd_units(insts, cluster_path))


# --- Debian ifupdown -----------------------------------------------------------------------------

# Debian's hook expands ucarp-password unquoted: whitespace splits it, *?[ glob; a trailing
# backslash continues the line in the interfaces file.
_IFUPDOWN_BAD = re.compile(r"[\s*?\[\\]|[^\x21-\x7e]")


def alias_name(inst: Instance) -> str:
    """The alias interface of the stanza: ``eth1:10`` (advert interface, colon, vhid)."""
    return f"{inst.host.interface}:{inst.vip.vhid}"


def ifupdown(plan: Plan, insts: Sequence[Instance]) -> str:
    """One ``/etc/network/interfaces`` stanza per instance, for Debian's ucarp hook.

    Debian's hook starts one ucarp per stanza, as ``ucarp -i $IFACE -s $IF_ADDRESS -B -z ...``,
    so each VIP gets an alias stanza (``iface eth1:10 inet manual``) whose ``address`` is only read
    by the hook (the manual method configures nothing); ucarp and the contrib scripts accept alias
    names. The stanzas carry the cluster password (:data:`IFUPDOWN_PASSWORD_WARNING`).

    Raises UcarpError when the hook cannot express the plan: a VIP outside ucarp's default group
    (the hook has no multicast option) or a password the hook's unquoted expansion would mangle.
    """
    if not insts:
        return ""
    problems: list[str] = []
    try:
        password = plan.cluster.password.decode("ascii")
    except UnicodeDecodeError:
        password = "\0"
    if _IFUPDOWN_BAD.search(password):
        problems.append(
            "the cluster password has whitespace, *, ?, [, a backslash or non-ASCII bytes, which "
            "Debian's hook would mangle (it expands ucarp-password unquoted)"
        )
    for i in insts:
        if i.mcast is not None:
            problems.append(
                f"{i.vip.vip.source} ({i.vip.address}) is in group {i.vip.group}: Debian's "
                f"hook has no multicast option (ucarp would use {DEFAULT_GROUP})"
            )
        if len(alias_name(i)) > IFNAMSIZ:
            problems.append(f"alias interface {alias_name(i)} is longer than {IFNAMSIZ} characters")
    if problems:
        raise UcarpError(
            "the ifupdown format cannot express this plan: "
            + "; ".join(problems)
            + "; use --format systemd or shell"
        )
    h = insts[0].host
    c = plan.cluster
    head = [
        f"# Generated by `iprotate ucarp --format ifupdown` for host {h.name} from "
        f"{comment_text(c.path)}.",
        f"# Put these stanzas after the one of {h.interface} in /etc/network/interfaces.",
        "# Debian's hook (/etc/network/if-up.d/ucarp) runs, for each stanza:",
        "#   ucarp -i $IFACE -s $IF_ADDRESS -B -z -v ... -p $IF_UCARP_PASSWORD ...",
        "# WARNING: that puts the password on ucarp's command line; keep this file mode 600.",
        "# ifdown does not stop these ucarp processes (the package has no if-down.d hook).",
    ]
    blocks = ["\n".join(head) + "\n"]
    for i in insts:
        name = alias_name(i)
        lines = [
            f"# {_describe(i)}",
            f"auto {name}",
            f"iface {name} inet manual",
            f"    address {h.address}",
            f"    ucarp-vid {i.vip.vhid}",
            f"    ucarp-vip {i.vip.ip}",
            f"    ucarp-password {password}",
            f"    ucarp-advbase {c.advbase}",
            f"    ucarp-advskew {i.advskew}",
            f"    ucarp-deadratio {c.dead_ratio}",
            f"    ucarp-master {'yes' if i.preempt else 'no'}",
            f"    ucarp-upscript {_ifupdown_value(i.upscript)}",
            f"    ucarp-downscript {_ifupdown_value(i.downscript)}",
            f"    ucarp-xparam {i.xparam}",
        ]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _ifupdown_value(path: str) -> str:
    if _IFUPDOWN_BAD.search(path):
        raise UcarpError(
            f"script path {path!r} has characters Debian's hook would mangle (it expands it "
            "unquoted); use --format systemd or shell"
        )
    return path


# --- the password file ---------------------------------------------------------------------------


def passfile_content(password: bytes) -> bytes:
    """What ``--passfile`` must hold for ucarp to read `password`: it plus a newline (ucarp takes
    the first line and strips only ``\\n``). Raises UcarpError if that cannot work."""
    if b"\n" in password or not password:
        raise UcarpError("a password that is empty or has a newline cannot go into a passfile")
    return password + b"\n"


def render(fmt: str, plan: Plan, host: str, insts: Sequence[Instance], opts: UcarpOptions) -> str:
    """`insts` in one of :data:`FORMATS` (``json`` as indented text)."""
    if fmt == "shell":
        return shell_lines(insts, opts.daemonize)
    if fmt == "ifupdown":
        return ifupdown(plan, insts)
    if fmt == "systemd":
        return systemd_text_all(insts, plan.cluster.path)
    if fmt == "json":
        return json.dumps(to_json(plan, host, insts, opts), indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
