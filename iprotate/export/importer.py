"""`iprotate import`: today's ucarp or keepalived setup -> a cluster file that reproduces it. Pure.

Each host's configuration is read into :class:`Instance` values, one per VIP the host serves
today, from one of three forms (:func:`detect`):

- ucarp command lines, one per line, as in a start script or ``ps -o args`` output;
- Debian ``/etc/network/interfaces`` stanzas with ``ucarp-*`` options (what Debian's ifupdown
  hook turns into ucarp command lines);
- keepalived.conf ``vrrp_instance`` blocks.

:func:`build` then joins the hosts' instances by vhid and group: hosts (their addresses from
``-s``, the stanza's ``address`` or ``unicast_src_ip``), VIPs with their prefixes, the vhid and
the group pinned, today's preferred owner pinned (the participant with the shortest interval, or
the highest VRRP priority), advbase and dead ratio, interfaces, the password (returned, for a file
of its own; never in the cluster file), and the scripts. Whatever does not carry over is said in
:attr:`Imported.notes`: nothing is dropped silently.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, ip_address, ip_interface
from pathlib import PurePath
from typing import Any

from iprotate.cluster.model import DEFAULT_GROUP, DEFAULT_GROUP6, IPAddress, IPInterface
from iprotate.export.text import comment_text

MAX_INPUT = 1 << 20  # bytes of one configuration file

# ucarp 1.5.2's options (ucarp --help; CARP.md): long name -> (short, takes a value).
UCARP_OPTIONS: dict[str, tuple[str | None, bool]] = {
    "interface": ("i", True),
    "srcip": ("s", True),
    "mcastip": (None, True),
    "vhid": ("v", True),
    "pass": ("p", True),
    "passfile": ("o", True),
    "preempt": ("P", False),
    "neutral": ("n", False),
    "addr": ("a", True),
    "help": ("h", False),
    "advbase": ("b", True),
    "advskew": ("k", True),
    "upscript": ("u", True),
    "downscript": ("d", True),
    "deadratio": ("r", True),
    "debug": ("D", False),
    "shutdown": ("z", False),
    "daemonize": ("B", False),
    "ignoreifstate": ("S", False),
    "nomcast": ("M", False),
    "facility": ("f", True),
    "xparam": ("x", True),
}
_SHORT = {s: (long, v) for long, (s, v) in UCARP_OPTIONS.items() if s}
# Options that change nothing the cluster file describes.
_UCARP_HARMLESS = {"shutdown", "daemonize", "debug", "facility", "neutral"}


class MigrateError(ValueError):
    """A configuration that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Instance:
    """One VIP as one host serves it today."""

    host: str
    where: str  # "alpha.sh:3", for messages
    engine: str  # "ucarp" or "keepalived"
    vip: IPInterface
    vhid: int
    interface: str
    address: IPAddress | None = None  # the host's own address (ucarp -s, unicast_src_ip)
    vip_interface: str | None = None
    advbase: int = 1
    advskew: int = 0
    priority: int | None = None  # VRRP priority (keepalived)
    preempt: bool = False
    dead_ratio: int = 3
    group: IPAddress = DEFAULT_GROUP
    password: bytes | None = None
    passfile: str | None = None
    up_script: str | None = None
    down_script: str | None = None
    prefix_known: bool = True
    tracks: tuple[str, ...] = ()  # keepalived: the vrrp_scripts this instance tracks

    @property
    def rank_key(self) -> tuple[int, ...]:
        """Sorts the participants of a VIP best first: CARP's shortest interval, VRRP's highest
        priority."""
        if self.priority is not None:
            return (-self.priority,)
        return (self.advbase * 256 + self.advskew,)


@dataclass(frozen=True)
class Script:
    """A keepalived ``vrrp_script``: becomes an ``exec`` [[checks]] entry."""

    name: str
    argv: tuple[str, ...]
    interval: float = 1.0
    timeout: float | None = None
    fall: int = 1
    rise: int = 1
    user: str | None = None


@dataclass
class Parsed:
    """What one host's file gave: its instances and what could not be carried over."""

    instances: list[Instance] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scripts: dict[str, Script] = field(default_factory=dict)  # keepalived's vrrp_script blocks


# --- reading -------------------------------------------------------------------------------------


def detect(text: str) -> str:
    """``keepalived``, ``ifupdown`` or ``ucarp``: the form of a configuration file."""
    if re.search(r"^\s*vrrp_instance\b", text, re.M):
        return "keepalived"
    if re.search(r"^\s*iface\s", text, re.M) and "ucarp-" in text:
        return "ifupdown"
    return "ucarp"


def parse(host: str, name: str, text: str, env: dict[str, str] | None = None) -> Parsed:
    """The instances in `text` (the file `name` of host `host`), in the form :func:`detect` says.

    `env`: shell variables of the host's earlier files (a ucarp.conf of ``UCARP_*=`` lines that
    the start script sources), updated with this file's."""
    form = detect(text)
    if form == "keepalived":
        return parse_keepalived(host, name, text)
    if form == "ifupdown":
        return parse_ifupdown(host, name, text)
    return parse_ucarp_lines(host, name, text, env)


def _byte(value: str, what: str, where: str) -> int:
    """A number as ucarp reads it: strtoul(value, 0), then cast to a byte (CARP.md)."""
    try:
        n = int(value, 0) if not re.fullmatch(r"0[0-7]+", value) else int(value, 8)
    except ValueError:
        raise MigrateError(f"{where}: {what} {value!r} is not a number") from None
    if n > 255:
        raise MigrateError(f"{where}: {what} {value} becomes {n & 0xFF} in ucarp (a byte)")
    return n


def _ucarp_argv(tokens: list[str]) -> list[str] | None:
    """The ucarp arguments in a command line (after sudo, env, a path ...), or None."""
    for i, t in enumerate(tokens):
        if PurePath(t).name == "ucarp":
            return tokens[i + 1 :]
    return None


def _options(args: list[str], where: str) -> Iterator[tuple[str, str | None]]:
    """(long option name, value) pairs as getopt_long reads them; unknown ones raise. An error
    never shows a value: `--password=SECRET` (no such option) or the second word of an unquoted
    password with a blank would print the password."""
    it = iter(args)
    for a in it:
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            matches = [o for o in UCARP_OPTIONS if o == name] or [
                o for o in UCARP_OPTIONS if o.startswith(name)
            ]
            if len(matches) != 1 or not name:
                raise MigrateError(f"{where}: {'--' + name!r} is not a ucarp option")
            opt = matches[0]
            takes = UCARP_OPTIONS[opt][1]
            if takes and not eq:
                value = next(it, None)
                if value is None:
                    raise MigrateError(f"{where}: {a} needs a value")
            yield opt, value if takes else None
        elif a.startswith("-") and len(a) > 1:
            k = 1
            while k < len(a):
                if a[k] not in _SHORT:
                    raise MigrateError(f"{where}: -{a[k]} is not a ucarp option")
                opt, takes = _SHORT[a[k]]
                if takes:
                    value = a[k + 1 :] or next(it, None)
                    if value is None:
                        raise MigrateError(f"{where}: -{a[k]} needs a value")
                    yield opt, value
                    break
                yield opt, None
                k += 1
        else:
            raise MigrateError(
                f"{where}: a bare argument after ucarp's options (not shown: it may be the rest "
                "of a password with a blank); ucarp takes none"
            )


_ASSIGN = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_SHELL_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")


def _expand(line: str, env: dict[str, str]) -> str:
    """$NAME and ${NAME} replaced by the values `env` knows (others left as they are)."""

    def one(m: re.Match[str]) -> str:
        value = env.get(m.group(1) or m.group(2))
        if value is None:
            return m.group(0)
        return value if _SHELL_PLAIN.fullmatch(value) else shlex.quote(value)

    return _VAR.sub(one, line)


def parse_ucarp_lines(host: str, name: str, text: str, env: dict[str, str] | None = None) -> Parsed:
    """ucarp command lines, one per line (continuations with a trailing backslash joined), and
    the shell variables they use (``UCARP_ADDR=...`` here or in `env`, an earlier file)."""
    out = Parsed()
    env = {} if env is None else env
    aliases: list[str] = []
    text = re.sub(r"\\\n", " ", text)
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{n}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assign = _ASSIGN.fullmatch(line)
        if assign:
            try:
                words = shlex.split(_expand(assign.group(2), env), comments=True)
            except ValueError as e:
                raise MigrateError(f"{where}: {e}") from None
            if len(words) <= 1:  # NAME=value; `NAME=value command ...` runs a command
                env[assign.group(1)] = words[0] if words else ""
                continue
        if re.match(r"\s*(source|\.)\s", line):
            if env:
                continue  # the host's earlier files gave the variables
            out.notes.append(
                f"{where}: a sourced file is not followed; give it first, as another --host "
                f"{host}=FILE"
            )
            continue
        line = _expand(line, env)
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            raise MigrateError(f"{where}: {e}") from None
        args = _ucarp_argv(tokens)
        if args is None:
            # Only its first word: the rest may hold a password (UCARP_PASS=..., -p ...).
            first = tokens[0] if tokens else "?"
            first = first.split("=", 1)[0][:40] + ("=..." if "=" in first else "")
            out.notes.append(f"{where}: not a ucarp command line ({first} ...), left out")
            continue
        opts = dict(_collect(args, where))
        out.instances.append(_ucarp_instance(host, where, opts, out.notes, aliases))
    if aliases:
        out.notes.append(
            f"{name}: {', '.join(aliases)} are alias interfaces; iprotate adds each VIP as an "
            "address of the interface itself (no alias label)"
        )
    masks = [k for k in sorted(env) if k.endswith("MASK")]
    for i, inst in enumerate(out.instances):
        if inst.prefix_known or not masks:
            continue
        try:
            prefix = IPv4Interface(f"0.0.0.0/{env[masks[0]]}").network.prefixlen
        except ValueError:
            continue
        out.instances[i] = replace(
            inst, vip=IPv4Interface((inst.vip.ip, prefix)), prefix_known=True
        )
        out.notes.append(f"{inst.where}: prefix /{prefix} of {inst.vip.ip} from {masks[0]}")
    return out


def _collect(args: list[str], where: str) -> Iterator[tuple[str, str | None]]:
    seen: set[str] = set()
    for opt, value in _options(args, where):
        if opt in seen and UCARP_OPTIONS[opt][1]:
            raise MigrateError(f"{where}: --{opt} given twice")
        seen.add(opt)
        yield opt, value


def _ucarp_instance(
    host: str,
    where: str,
    o: dict[str, str | None],
    notes: list[str],
    aliases: list[str] | None = None,
) -> Instance:
    """One ucarp process's options as an Instance. `aliases` collects alias interfaces
    (``eth1:0``) to say so once; None: aliases are the form itself (Debian's stanzas)."""
    for need in ("interface", "srcip", "vhid", "addr"):
        if not o.get(need):
            raise MigrateError(f"{where}: no --{need}: ucarp would refuse this line")
    if not (o.get("pass") or o.get("passfile")):
        raise MigrateError(f"{where}: no --pass or --passfile: ucarp would refuse this line")
    iface = str(o["interface"])
    if ":" in iface:
        if aliases is not None:
            aliases.append(iface)
        iface = iface.split(":")[0]
    vip_ip = _v4(str(o["addr"]), "--addr", where)
    prefix, vip_if, known = 32, None, False
    if o.get("xparam"):
        m = re.fullmatch(r"([0-9]{1,2})(?:[@ ](\S+))?", str(o["xparam"]))
        if m and int(m.group(1)) <= 32:
            prefix, vip_if, known = int(m.group(1)), m.group(2), True
        else:
            notes.append(f"{where}: xparam {o['xparam']!r} is not PREFIX[@IFACE]; left out")
    for opt in sorted(set(o) - _UCARP_HARMLESS):
        if opt == "nomcast":
            notes.append(f"{where}: --nomcast (broadcast adverts) has no equivalent; left out")
        elif opt == "ignoreifstate":
            notes.append(f"{where}: --ignoreifstate is [run] ignore_ifstate = true in iprotate")
        elif opt == "help":
            raise MigrateError(f"{where}: --help: ucarp prints its usage and exits")
    pw = o.get("pass")
    return Instance(
        host=host,
        where=where,
        engine="ucarp",
        vip=IPv4Interface(f"{vip_ip}/{prefix}"),
        vhid=_vhid(str(o["vhid"]), where),
        interface=iface,
        address=_v4(str(o["srcip"]), "--srcip", where),
        vip_interface=vip_if,
        advbase=_byte(str(o.get("advbase") or "1"), "advbase", where),
        advskew=_byte(str(o.get("advskew") or "0"), "advskew", where),
        preempt="preempt" in o,
        dead_ratio=_byte(str(o.get("deadratio") or "3"), "deadratio", where),
        group=_v4(str(o["mcastip"]), "--mcastip", where) if o.get("mcastip") else DEFAULT_GROUP,
        password=pw.encode() if pw else None,
        passfile=o.get("passfile"),
        up_script=o.get("upscript") or None,
        down_script=o.get("downscript") or None,
        prefix_known=known,
    )


def _v4(value: str, what: str, where: str) -> IPv4Address:
    try:
        return IPv4Address(value)
    except ValueError:
        raise MigrateError(f"{where}: {what} {value!r} is not an IPv4 address") from None


def _ip(value: str, what: str, where: str) -> IPAddress:
    try:
        return ip_address(value)
    except ValueError:
        raise MigrateError(f"{where}: {what} {value!r} is not an IP address") from None


def _vhid(value: str, where: str) -> int:
    n = _byte(value, "vhid", where)
    if not 1 <= n <= 255:
        raise MigrateError(f"{where}: vhid {value} is outside 1..255")
    return n


# Debian's hook (/etc/network/if-up.d/ucarp) reads these (CARP.md).
_IFUPDOWN = {
    "ucarp-vid": "vhid",
    "ucarp-vip": "addr",
    "ucarp-password": "pass",
    "ucarp-advskew": "advskew",
    "ucarp-advbase": "advbase",
    "ucarp-deadratio": "deadratio",
    "ucarp-upscript": "upscript",
    "ucarp-downscript": "downscript",
    "ucarp-xparam": "xparam",
}


def parse_ifupdown(host: str, name: str, text: str) -> Parsed:
    """Debian /etc/network/interfaces stanzas with ``ucarp-*`` options, as Debian's hook reads
    them: ``ucarp -i $IFACE -s $IF_ADDRESS -B -z -v ... -p ... [-P] ...``."""
    out = Parsed()
    stanzas: list[tuple[str, str, dict[str, str]]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        # interfaces(5): only a line that starts with '#' is a comment ('#' may be in a value).
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "iface" and len(words) >= 2:
            stanzas.append((f"{name}:{n}", words[1], {}))
        elif words[0] in ("auto", "allow-hotplug", "source", "mapping") or words[0].startswith(
            "allow-"
        ):
            continue
        elif stanzas:
            stanzas[-1][2][words[0]] = " ".join(words[1:])
    prefixes = _stanza_prefixes(stanzas)
    for where, iface, opts in stanzas:
        if not any(k.startswith("ucarp-") for k in opts):
            continue
        missing = [k for k in ("ucarp-vid", "ucarp-vip", "ucarp-password") if k not in opts]
        if missing:
            out.notes.append(
                f"{where}: {iface} lacks {', '.join(missing)}: Debian's hook starts no ucarp "
                "for it; left out"
            )
            continue
        if "address" not in opts:
            raise MigrateError(f"{where}: {iface} has no address (the hook's -s)")
        o: dict[str, str | None] = {"interface": iface, "srcip": opts["address"].split("/")[0]}
        for k, v in opts.items():
            if k in _IFUPDOWN:
                o[_IFUPDOWN[k]] = v
            elif k == "ucarp-master" and v.lower() in ("yes", "true", "1"):
                o["preempt"] = None
            elif k == "ucarp-nomcast" and v.lower() in ("yes", "true", "1"):
                o["nomcast"] = None
            elif k.startswith("ucarp-") and k not in ("ucarp-master", "ucarp-nomcast"):
                out.notes.append(f"{where}: {k} is not read by Debian's hook; left out")
        inst = _ucarp_instance(host, where, o, out.notes)
        if not inst.prefix_known and inst.vip.ip in prefixes:
            # Debian's README layout: the VIP's own stanza (eth0:ucarp) carries its netmask.
            inst = replace(inst, vip=IPv4Interface((inst.vip.ip, prefixes[inst.vip.ip])),
                           prefix_known=True)  # fmt: skip
        out.instances.append(inst)
    return out


def _stanza_prefixes(stanzas: list[tuple[str, str, dict[str, str]]]) -> dict[IPv4Address, int]:
    """address -> prefix length of the stanzas without ucarp options (the VIPs' own)."""
    out = {}
    for _where, _iface, opts in stanzas:
        if any(k.startswith("ucarp-") for k in opts) or "address" not in opts:
            continue
        addr = opts["address"]
        if "/" not in addr and "netmask" in opts:
            addr = f"{addr}/{opts['netmask']}"
        try:
            a = IPv4Interface(addr)
        except ValueError:
            continue
        if "/" in opts["address"] or "netmask" in opts:
            out[a.ip] = a.network.prefixlen
    return out


# --- keepalived ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'"([^"]*)"|([{}])|([^\s{}"]+)')
_KEEPALIVED_CARRIED = {
    "interface", "virtual_router_id", "priority", "advert_int", "nopreempt", "preempt",
    "state", "virtual_ipaddress", "unicast_src_ip", "mcast_src_ip", "unicast_peer",
    "authentication", "notify_master", "notify_backup", "notify_fault", "notify_stop",
    "track_script",
}  # fmt: skip


@dataclass
class _Block:
    name: str
    line: int
    items: list[tuple[str, list[str], _Block | None, int]] = field(default_factory=list)


def _decomment(line: str) -> str:
    """A keepalived.conf line without its comment, as keepalived's decomment() reads it: a '#' or
    '!' outside double quotes starts a comment, anywhere in the line (not only after a blank);
    inside quotes it is kept (`script "/bin/sh -c '! pidof x'"`); `\\#` and `\\!` are literal."""
    out: list[str] = []
    quote = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == '"':
            quote = not quote
        elif ch == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            out.append(nxt if not quote and nxt in "#!" else ch + nxt)
            i += 2
            continue
        elif ch in "#!" and not quote:
            break
        out.append(ch)
        i += 1
    return "".join(out)


def _keepalived_tree(name: str, text: str) -> _Block:
    """keepalived.conf as nested blocks: each item is (keyword, words, sub-block, line). A
    keyword's ``{`` may be on the same line or the next one."""
    root = _Block("", 0)
    stack = [root]
    pending: tuple[list[str], int] | None = None  # the last line's words, if a '{' may follow
    for n, raw in enumerate(text.splitlines(), 1):
        line = _decomment(raw)
        tokens = [t for t in (m.group(1) if m.group(1) is not None else m.group(0)
                  for m in _TOKEN.finditer(line))]  # fmt: skip
        if pending is not None and not (tokens and tokens[0] == "{"):
            stack[-1].items.append((pending[0][0], pending[0][1:], None, pending[1]))
            pending = None
        words: list[str] = []
        for t in tokens:
            if t == "{":
                head, at = (words, n) if words else (pending or ([], n))
                pending = None
                if not head:
                    raise MigrateError(f"{name}:{n}: '{{' with no keyword before it")
                blk = _Block(head[0], at)
                stack[-1].items.append((head[0], head[1:], blk, at))
                stack.append(blk)
                words = []
            elif t == "}":
                if words:
                    stack[-1].items.append((words[0], words[1:], None, n))
                    words = []
                if len(stack) == 1:
                    raise MigrateError(f"{name}:{n}: '}}' closes nothing")
                stack.pop()
            else:
                words.append(t)
        if words:
            pending = (words, n)
    if pending is not None:
        stack[-1].items.append((pending[0][0], pending[0][1:], None, pending[1]))
    if len(stack) != 1:
        raise MigrateError(f"{name}: a '{{' opened on line {stack[-1].line} is never closed")
    return root


def parse_keepalived(host: str, name: str, text: str) -> Parsed:
    """keepalived.conf ``vrrp_instance`` blocks; anything else is listed as not carried over."""
    out = Parsed()
    root = _keepalived_tree(name, text)
    for key, args, blk, n in root.items:
        where = f"{name}:{n}"
        if key in ("global_defs",):
            continue
        if key == "vrrp_script" and blk is not None and args:
            script = _vrrp_script(where, args[0], blk, out.notes)
            if script is not None:
                out.scripts[args[0]] = script
            continue
        if key != "vrrp_instance" or blk is None:
            # A misplaced `auth_pass SECRET` lands here: its words are not shown.
            shown = "" if "pass" in key.lower() else " ".join(args)
            out.notes.append(f"{where}: {key} {shown} has no equivalent; left out")
            continue
        out.instances += _vrrp_instance(host, where, args, blk, out.notes)
    for i in out.instances:
        for t in i.tracks:
            if t not in out.scripts:
                out.notes.append(f"{i.where}: track_script {t}: no such vrrp_script; left out")
    return out


def _vrrp_script(where: str, name: str, blk: _Block, notes: list[str]) -> Script | None:
    """A ``vrrp_script`` as an exec check, or None (with a note) when it cannot be one."""
    vals = {key: words for key, words, sub, _n in blk.items if sub is None}
    label = f"{where}: vrrp_script {name}"
    try:
        argv = tuple(shlex.split(" ".join(vals.get("script", []))))
    except ValueError as e:  # an unbalanced quote
        notes.append(f"{label}: its script line cannot be split into words ({e}); left out")
        return None
    if not argv or not argv[0].startswith("/"):
        notes.append(f"{label}: its script is not an absolute path (iprotate runs no shell "
                     "and no PATH search); left out, add a [[checks]] entry by hand")  # fmt: skip
        return None
    try:
        weight = int(vals.get("weight", ["0"])[0])
        interval = float(vals.get("interval", ["1"])[0])
        timeout = float(vals["timeout"][0]) if "timeout" in vals else None
        fall = int(vals.get("fall", ["1"])[0])
        rise = int(vals.get("rise", ["1"])[0])
    except (ValueError, IndexError):
        notes.append(f"{label}: a value is not a number; left out")
        return None
    if weight:
        notes.append(
            f"{label}: weight {weight} changes the priority instead of failing the instance; "
            "iprotate's check takes the VIPs away when it fails (as weight 0)"
        )
    for key in sorted(set(vals) - {"script", "weight", "interval", "timeout", "fall", "rise",
                                   "user"}):  # fmt: skip
        notes.append(f"{label}: {key} has no equivalent; left out")
    user = (vals.get("user") or [None])[0]
    return Script(name, argv, interval, timeout, fall, rise, user)


def _vrrp_instance(
    host: str, where: str, args: list[str], blk: _Block, notes: list[str]
) -> list[Instance]:
    label = f"{where}: vrrp_instance {' '.join(args)}"
    vals: dict[str, list[str]] = {}
    subs: dict[str, _Block] = {}
    for key, words, sub, n in blk.items:
        if sub is not None:
            subs[key] = sub
        else:
            vals[key] = words
        if key not in _KEEPALIVED_CARRIED:
            notes.append(f"{where[: where.rindex(':')]}:{n}: {key} has no equivalent; left out")
    for need in ("interface", "virtual_router_id"):
        if not vals.get(need):
            raise MigrateError(f"{label}: no {need}")
    if "virtual_ipaddress" not in subs:
        raise MigrateError(f"{label}: no virtual_ipaddress block")
    vrid = _vhid(vals["virtual_router_id"][0], label)
    prio_s = (vals.get("priority") or ["100"])[0]
    if not prio_s.isdigit() or not prio_s.isascii():
        raise MigrateError(f"{label}: priority {prio_s!r} is not a number")
    prio = int(prio_s)
    adv = (vals.get("advert_int") or ["1"])[0]
    try:
        advbase = max(1, round(float(adv)))
    except (ValueError, OverflowError):  # OverflowError: inf
        raise MigrateError(f"{label}: advert_int {adv!r} is not a number") from None
    if advbase != float(adv):
        notes.append(f"{label}: advert_int {adv} becomes advbase {advbase} (whole seconds)")
    src = vals.get("unicast_src_ip") or vals.get("mcast_src_ip")
    password = None
    auth = subs.get("authentication")
    if auth is not None:
        for key, words, _sub, _n in auth.items:
            if key == "auth_pass" and words:
                password = words[0].encode()
    notify = {
        k: _notify(vals[k], f"{label}: {k}")
        for k in ("notify_master", "notify_backup")
        if k in vals
    }
    tracks = (
        tuple(key for key, _w, _s, _n in subs["track_script"].items)
        if "track_script" in subs
        else ()
    )
    iface = vals["interface"][0]
    out = []
    addrs = [[key, *w] for key, w, _s, _n in subs["virtual_ipaddress"].items]
    for i, words in enumerate(addrs):
        a = words[0]
        dev = words[words.index("dev") + 1] if "dev" in words[:-1] else None
        try:
            vip = ip_interface(a if "/" in a else f"{a}/{128 if ':' in a else 32}")
        except ValueError:
            notes.append(f"{label}: {a} is not an IP address; left out")
            continue
        if i > 0:
            notes.append(
                f"{label}: {a} shares virtual_router_id {vrid} with "
                f"{addrs[0][0]}; iprotate gives every address its own vhid, so {a} gets "
                "a vhid of its own"
            )
        out.append(
            Instance(
                host=host,
                where=label,
                engine="keepalived",
                vip=vip,
                vhid=vrid if i == 0 else 0,
                interface=iface,
                address=_ip(src[0], "unicast_src_ip", label) if src else None,
                group=DEFAULT_GROUP6 if vip.version == 6 else DEFAULT_GROUP,
                vip_interface=dev if dev and dev != iface else None,
                advbase=advbase,
                priority=prio,
                preempt="nopreempt" not in vals,
                password=password,
                up_script=notify.get("notify_master"),
                down_script=notify.get("notify_backup"),
                prefix_known="/" in a,
                tracks=tracks,
            )
        )
    return out


def _notify(words: list[str], where: str) -> str:
    """The script of a notify line (its first word; iprotate passes its own arguments)."""
    try:
        split = shlex.split(" ".join(words))
    except ValueError as e:  # an unbalanced quote
        raise MigrateError(f"{where}: cannot be split into words ({e})") from None
    return split[0] if split else ""


# --- building the cluster file -------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    name: str
    address: IPv4Address
    address6: IPv6Address | None
    engine: str
    interface: str
    vip_interface: str | None
    preempt: bool


@dataclass
class Imported:
    """The cluster file text, the password to put in its password file, and the notes."""

    toml: str
    password: bytes | None
    notes: list[str]
    today: dict[IPAddress, tuple[str, ...]]  # each VIP's failover order today, best first
    new_password: bool = False  # no password in any file: the caller writes a random one


def _common(values: Sequence[object]) -> object | None:
    """The value if every one is the same, else None."""
    return values[0] if values and all(v == values[0] for v in values) else None


def build(
    parsed: dict[str, Parsed],
    addresses: dict[str, list[IPAddress]] | None = None,
    password_file: str = "password",
    sources: dict[str, str] | None = None,
    passfiles: dict[str, bytes] | None = None,
) -> Imported:
    """Join every host's instances into one cluster file. `addresses` gives a host's address when
    its file does not (keepalived without unicast_src_ip). Raises MigrateError when no cluster
    can be made (a host without an address, no password, no VIP)."""
    notes = [n for p in parsed.values() for n in p.notes]
    insts = [i for p in parsed.values() for i in p.instances]
    if not insts:
        raise MigrateError("no VIP found in any of the files")
    # VIPs: one per (group, vhid); every participant must agree on the address.
    by_key: dict[tuple[IPAddress, int], list[Instance]] = defaultdict(list)
    extra: list[Instance] = []
    for i in insts:
        if i.vhid == 0:
            extra.append(i)
        else:
            by_key[(i.group, i.vhid)].append(i)
    for i in extra:  # keepalived's second addresses: their own VIP, same participants
        by_key[(i.group, 256 + int(i.vip.ip))].append(i)
    vips: list[tuple[IPInterface, int | None, IPAddress, list[Instance]]] = []

    def _order(kv: tuple[Any, list[Instance]]) -> tuple[int, int]:
        ip = kv[1][0].vip.ip
        return (ip.version, int(ip))

    for (group, vhid), members in sorted(by_key.items(), key=_order):
        claims = defaultdict(list)
        for m in members:
            claims[m.vip.ip].append(m)
        if len(claims) > 1:
            what = "; ".join(
                f"{ip} by {', '.join(m.host for m in ms)}" for ip, ms in sorted(claims.items())
            )
            notes.append(
                f"vhid {vhid} (group {group}) is claimed with different VIPs: {what}. Their "
                "digests cannot match, so today both sides are master; left out, fix by hand"
            )
            continue
        dup = [h for h, k in Counter(m.host for m in members).items() if k > 1]
        if dup:
            notes.append(f"{members[0].vip.ip}: {', '.join(dup)} serve it twice; once is kept")
            seen: set[str] = set()
            members = [m for m in members if not (m.host in seen or seen.add(m.host))]
        prefixes = sorted({m.vip.network.prefixlen for m in members if m.prefix_known})
        prefix = prefixes[0] if prefixes else members[0].vip.max_prefixlen
        if not prefixes:
            notes.append(
                f"{members[0].vip.ip}: no prefix length given (-x, ucarp-xparam or /LEN): /32 "
                "assumed; put the real one in the cluster file"
            )
        elif len(prefixes) > 1:
            notes.append(f"{members[0].vip.ip}: hosts disagree on its prefix; /{prefix} kept")
        # On a tie the host that preempts is the one meant to own the VIP.
        members.sort(key=lambda m: (m.rank_key, not m.preempt, m.host))
        keys = [m.rank_key for m in members]
        if len(set(keys)) < len(keys):
            notes.append(
                f"{members[0].vip.ip}: two hosts have the same priority today (the address "
                "tie-break decides); the plan gives them distinct ones"
            )
        vips.append(
            (
                ip_interface(f"{members[0].vip.ip}/{prefix}"),
                vhid if vhid <= 255 else None,
                group,
                members,
            )
        )
    if not vips:
        raise MigrateError("no VIP left to import (see the notes)")
    vips = _free_vhids(vips, notes)

    last = {(m.host, m.vip.ip): m is ms[-1] for _, _, _, ms in vips for m in ms}

    addresses = dict(addresses or {})
    hosts: list[Host] = []
    for name, p in parsed.items():
        mine = p.instances
        if not mine:
            notes.append(f"{name}: no VIP in its file; it takes part in nothing today")
        given = addresses.get(name, [])
        addrs = sorted(
            {i.address for i in mine if i.address is not None and i.address.version == 4}
        )
        addrs6 = sorted(
            {i.address for i in mine if i.address is not None and i.address.version == 6}
        )
        addr = next((a for a in given if a.version == 4), addrs[0] if addrs else None)
        addr6 = next((a for a in given if a.version == 6), addrs6[0] if addrs6 else None)
        if addr6 is None and any(i.vip.version == 6 for i in mine):
            notes.append(
                f"{name}: serves IPv6 VIPs but its IPv6 source is not in its file; give it with "
                f"--address {name}=IPV6 (or add address6 by hand)"
            )
        if addr is None:
            raise MigrateError(
                f"{name}: its file does not say its address (keepalived: no unicast_src_ip); "
                f"give it with --address {name}=IP"
            )
        if len(addrs) > 1:
            notes.append(f"{name}: several source addresses ({', '.join(map(str, addrs))}); "
                         f"{addr} is used")  # fmt: skip
        ifaces = Counter(i.interface for i in mine)
        iface = ifaces.most_common(1)[0][0] if ifaces else "eth0"
        if len(ifaces) > 1:
            notes.append(f"{name}: VIPs on several interfaces ({', '.join(sorted(ifaces))}); "
                         f"one per host in iprotate: {iface}")  # fmt: skip
        vifs = Counter(i.vip_interface for i in mine)
        vif = vifs.most_common(1)[0][0] if vifs else None
        if len(vifs) > 1:
            notes.append(f"{name}: VIPs on several VIP interfaces; one per host in iprotate")
        # Preempt matters where the host ranks above another participant (not last).
        pre = [i.preempt for i in mine if not last.get((name, i.vip.ip), True)]
        preempt = any(pre) if pre else any(i.preempt for i in mine)
        if mine and not preempt:
            notes.append(
                f"{name} preempts nothing today (no -P / ucarp-master / preempt): it never "
                "takes its VIPs back after a failure; kept as preempt = false (drop the line "
                "to let the plan's owners take their VIPs back)"
            )
        elif len(set(pre)) > 1:
            notes.append(
                f"{name} preempts some VIPs and not others; iprotate's preempt is one switch "
                "per host: preempt = true (a backup still never preempts a better host)"
            )
        engine = Counter(i.engine for i in (mine or insts)).most_common(1)[0][0]
        hosts.append(Host(name, addr, addr6, engine, iface, vif if vif != iface else None, preempt))

    # Cluster-wide values: the owners' own, with what differs said.
    owners = [ms[0] for _, _, _, ms in vips]
    advbase = Counter(o.advbase for o in owners).most_common(1)[0][0]
    for _, _, _, ms in vips:
        for m in ms:
            if m.advbase != advbase:
                role = "owner" if m is ms[0] else "backup"
                notes.append(
                    f"{m.vip.ip} on {m.host} ({role}): advbase {m.advbase} today; the plan uses "
                    f"one advbase ({advbase}) and orders hosts by advskew"
                )
    ratios = Counter(m.dead_ratio for m in insts)
    dead_ratio = ratios.most_common(1)[0][0]
    if len(ratios) > 1:
        notes.append(f"dead ratios differ ({', '.join(map(str, sorted(ratios)))}): {dead_ratio}")
    fresh = False  # no password anywhere: the caller makes a new one
    at_hand = passfiles or {}
    pws = {m.password for m in insts if m.password is not None}
    pws |= {at_hand[m.passfile] for m in insts if m.passfile in at_hand}
    for path in sorted({m.passfile for m in insts if m.passfile in at_hand}):
        notes.append(f"the password was read from {path} here (its first line, as ucarp does)")
    files = sorted({m.passfile for m in insts if m.passfile and m.passfile not in at_hand})
    password = next(iter(pws)) if len(pws) == 1 else None
    if len(pws) > 1:
        notes.append("the hosts use different passwords: iprotate has one; set it by hand")
    if not pws:
        if files:
            notes.append(
                f"the password is in {', '.join(files)} on the hosts, not at hand here: "
                f"copy its first line into {password_file} (mode 600)"
            )
        else:
            fresh = True
            notes.append(
                "no password in the files (VRRP without authentication): a new random one is "
                f"in {password_file}; copy that file to every host"
            )
    notes.append(
        'every host keeps the engine it runs today (engine = "ucarp" or "keepalived"): set '
        'engine = "iprotate" for a host when it moves to `iprotate run`'
    )
    if any(m.engine == "keepalived" for m in insts):
        notes.append(
            "keepalived speaks VRRP and iprotate CARP: they cannot share a VIP, so move every "
            "host in one step (or VIP by VIP, with the VIP removed from keepalived first)"
        )
    ups = [m.up_script for m in insts]
    downs = [m.down_script for m in insts]
    cl_up, cl_down = _common(ups), _common(downs)
    backups = max(len(ms) for *_, ms in vips) - 1

    # The file.
    head = ", ".join(f"{h}={f}" for h, f in (sources or {}).items())
    lines = [f"# Written by `iprotate import`{' from ' + comment_text(head) if head else ''}."]
    lines += ["[cluster]", f"password_file = {_q(password_file)}"]
    lines += [f"advbase = {advbase}", f"dead_ratio = {dead_ratio}", f"backups = {backups}"]
    if cl_up:
        lines.append(f"up_script = {_q(str(cl_up))}")
    if cl_down:
        lines.append(f"down_script = {_q(str(cl_down))}")
    for h in hosts:
        lines += ["", "[[hosts]]", f"name = {_q(h.name)}", f'address = "{h.address}"']
        if h.address6 is not None:
            lines.append(f'address6 = "{h.address6}"')
        lines.append(f"engine = {_q(h.engine)}")
        lines.append(f"interface = {_q(h.interface)}")
        if h.vip_interface:
            lines.append(f"vip_interface = {_q(h.vip_interface)}")
        if not h.preempt:
            lines.append("preempt = false")
    today: dict[IPAddress, tuple[str, ...]] = {}
    for addr, vhid, group, ms in vips:
        today[addr.ip] = tuple(m.host for m in ms)
        lines += ["", "[[vips]]", f'address = "{addr}"']
        if vhid is not None:
            lines.append(f"vhid = {vhid}")
        lines.append(f"owner = {_q(ms[0].host)}")
        if group != (DEFAULT_GROUP if addr.version == 4 else DEFAULT_GROUP6):
            lines.append(f'group = "{group}"')
        if not cl_up and ms[0].up_script:
            lines.append(f"up_script = {_q(ms[0].up_script)}")
        if not cl_down and ms[0].down_script:
            lines.append(f"down_script = {_q(ms[0].down_script)}")
        if len({m.up_script for m in ms}) > 1 or len({m.down_script for m in ms}) > 1:
            notes.append(f"{addr.ip}: hosts run different scripts; the owner's are kept")
        missing = sorted({h.name for h in hosts} - {m.host for m in ms})
        if missing and len(ms) < len(hosts) and backups + 1 >= len(hosts):
            notes.append(
                f"{addr.ip}: {', '.join(missing)} take no part today; the plan adds them as "
                "backups (backups = " + str(backups) + ")"
            )
    if any(m.engine == "ucarp" for m in insts) and (cl_up or any(m.up_script for m in insts)):
        notes.append(
            "scripts: ucarp calls them as SCRIPT IFACE VIP XPARAM, iprotate as SCRIPT IFACE VIP "
            "PREFIX (and IPROTATE_* variables); check scripts that read their third argument"
        )
    lines += _checks_toml(parsed, vips, notes)
    return Imported("\n".join(lines) + "\n", password, notes, today, fresh)


_CHECK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def _checks_toml(
    parsed: dict[str, Parsed],
    vips: list[tuple[IPInterface, int | None, IPAddress, list[Instance]]],
    notes: list[str],
) -> list[str]:
    """keepalived's tracked vrrp_scripts as ``exec`` [[checks]]: the VIPs of the instances that
    track one, on the hosts that track it (``chk_`` dropped from the name, as `iprotate
    keepalived` adds it)."""
    found: dict[str, tuple[Script, list[str], list[IPInterface]]] = {}
    for addr, _vhid, _group, ms in vips:
        for m in ms:
            for t in m.tracks:
                script = parsed[m.host].scripts.get(t)
                if script is None:
                    continue
                entry = found.setdefault(t, (script, [], []))
                if entry[0].argv != script.argv:
                    notes.append(f"vrrp_script {t} runs different commands on different hosts; "
                                 f"{' '.join(entry[0].argv)} kept")  # fmt: skip
                if m.host not in entry[1]:
                    entry[1].append(m.host)
                if addr not in entry[2]:
                    entry[2].append(addr)
    out: list[str] = []
    for t, (script, hosts, addrs) in found.items():
        name = t[4:] if t.startswith("chk_") and _CHECK_NAME.fullmatch(t[4:]) else t
        if not _CHECK_NAME.fullmatch(name):
            notes.append(f"vrrp_script {t}: not a check name; left out")
            continue
        interval = min(max(script.interval, 0.05), 3600.0)
        timeout = min(script.timeout if script.timeout is not None else interval, interval, 60.0)
        out += ["", "[[checks]]", f"name = {_q(name)}"]
        out.append("exec = [" + ", ".join(_q(a) for a in script.argv) + "]")
        out.append("vips = [" + ", ".join(_q(str(a)) for a in addrs) + "]")
        out.append("hosts = [" + ", ".join(_q(h) for h in sorted(hosts)) + "]")
        out += [f"interval = {interval:g}", f"timeout = {timeout:g}"]
        out += [f"fall = {script.fall}", f"rise = {script.rise}"]
        if script.user:
            out.append(f"user = {_q(script.user)}")
    return out


def _free_vhids(
    vips: list[tuple[IPInterface, int | None, IPAddress, list[Instance]]], notes: list[str]
) -> list[tuple[IPInterface, int | None, IPAddress, list[Instance]]]:
    """Give each VIP without a vhid (a keepalived instance's second address) a free one in its
    group: its last octet if free, else the lowest free one; pinned, so that nothing moves."""
    used: dict[IPAddress, set[int]] = defaultdict(set)
    for _a, vhid, group, _ms in vips:
        if vhid is not None:
            used[group].add(vhid)
    out = []
    for addr, vhid, group, ms in vips:
        if vhid is None:
            free = [v for v in range(1, 256) if v not in used[group]]
            if not free:
                notes.append(f"{addr.ip}: no free vhid in group {group}; left out")
                continue
            vhid = addr.ip.packed[3] if addr.ip.packed[3] in free else free[0]
            used[group].add(vhid)
            notes.append(f"{addr.ip}: vhid {vhid} (free in group {group}), pinned")
        out.append((addr, vhid, group, ms))
    return out


def _q(s: str) -> str:
    """A TOML basic string. Not json.dumps: JSON writes a character beyond U+FFFF as a surrogate
    pair (TOML refuses `\\ud83d`) and DEL raw (TOML refuses it raw). Every other character is
    kept as it is: the loader then names a control character in a clear error."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def host_address(value: str) -> IPAddress:
    """An address given on the command line (``--address NAME=IP``, IPv4 or IPv6)."""
    return ip_address(value)
