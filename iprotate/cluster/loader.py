"""Load a cluster file (TOML) into the validated model, or say exactly what is wrong with it.

Every problem names the file and the key path and says what is allowed; all problems are collected
before anything is raised, so one run of `iprotate check` shows them all. Reading the password file
is the only I/O beyond the cluster file itself.
"""

from __future__ import annotations

import dataclasses
import grp
import math
import os
import pwd
import re
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    NetmaskValueError,
    ip_address,
)
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from iprotate.cluster.bounds import RUN_SECONDS, check_seconds
from iprotate.cluster.model import (
    DEFAULT_GROUP,
    DEFAULT_GROUP6,
    ENGINES,
    SYSLOG_FACILITIES,
    BgpRouter,
    BgpSettings,
    Check,
    Cluster,
    ClusterError,
    Host,
    IPAddress,
    IPInterface,
    RunSettings,
    Vip,
)

MAX_PASSWORD = 19  # ucarp refuses longer ones
MAX_POOL = 65536
# Bounds that keep `check` and a reload quick and small whatever the file says: a segment of more
# hosts, or a host with more VIPs, is beyond what CARP on one segment is for.
MAX_HOSTS = 256
MAX_VIPS = 65536
MAX_WEIGHT = 100.0  # relative; the planner's ring grows with it
MAX_FILE = 1 << 20  # bytes of cluster file
MAX_PASSWORD_FILE = 4096  # bytes read of a password file (only its first line counts)
MIN_PREFIX = 8  # a VIP "/0" or "/4" is a mistake, not a subnet
MIN_PREFIX6 = 16  # the same for IPv6: sites get /48, links /64
# Matched whole (fullmatch): `$` alone would let a trailing newline through.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
IFNAME_RE = re.compile(r"[^\s/:]{1,15}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

CLUSTER_KEYS = {
    "interface", "vip_interface", "password", "password_file", "advbase", "dead_ratio",
    "multicast", "multicast6", "backups", "preempt", "up_script", "down_script",
}  # fmt: skip
HOST_KEYS = {
    "name", "address", "address6", "interface", "vip_interface", "weight", "engine", "preempt",
    "bgp_asn", "bgp_routers",
}  # fmt: skip
VIP_KEYS = {"address", "pool", "vhid", "owner", "group", "up_script", "down_script"}
BGP_KEYS = {
    "asn", "routers", "hold_time", "bfd", "rank", "med_base", "med_step", "drain_wait", "speaker",
    "birdc",
}  # fmt: skip
ROUTER_KEYS = {"address", "asn"}
MAX_ROUTERS = 16
# Private ASNs (RFC 6996, 16 and 32 bit) and public ones alike; 0, 23456 (AS_TRANS) and the
# reserved 65535 / 4294967295 are refused.
BAD_ASNS = {0, 23456, 65535, 4294967295}
MAX_MED = 4294967294  # 2**32 - 1 is kept for a draining host's routes (the worst)
TOP_KEYS = {"cluster", "hosts", "vips", "run", "bgp", "checks"}
CHECK_KEYS = {
    "name", "tcp", "http", "exec", "expect", "user", "interval", "timeout", "fall", "rise", "vips",
    "hosts",
}  # fmt: skip
MAX_CHECKS = 64  # each runs on a timer in the daemon: more is a mistake
MAX_CHECK_ARGS = 64
MAX_CHECK_STRING = 4096  # bytes of a URL or an argument
# interval: under 50 ms a check is a busy loop; over an hour it checks nothing. A run may not
# outlast the interval (one run at a time) nor a minute.
CHECK_INTERVAL = (0.05, 3600.0)
CHECK_TIMEOUT = (0.01, 60.0)
CHECK_COUNT = (1, 100)  # fall, rise
RUN_KEYS = {
    "hold_down", "stagger", "garp_refresh", "control_socket", "control_group", "state_dir",
    "metrics", "hook_timeout", "ignore_ifstate", "syslog",
}  # fmt: skip


@dataclass
class _Problems:
    """Collects problems while the file is read."""

    items: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}")


def load_cluster(path: str | os.PathLike[str]) -> Cluster:
    """Read and validate the cluster file at `path`. Raises ClusterError listing every problem."""
    p = Path(path)
    try:
        raw = read_bounded(p, MAX_FILE)
    except OSError as e:
        raise ClusterError(str(p), [f"cannot read the file: {e.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ClusterError(str(p), [f"not a valid TOML file: {e}"]) from None
    except RecursionError:
        raise ClusterError(str(p), ["not a valid TOML file: nested too deeply"]) from None
    except ValueError as e:  # tomllib: an integer of thousands of digits
        raise ClusterError(str(p), [f"not a valid TOML file: {e}"]) from None
    cluster = parse_cluster(data, str(p), base_dir=p.parent)
    cl = data.get("cluster")
    if isinstance(cl, dict) and "password" in cl:
        mode = p.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warning = (
                f"cluster.password: {p} holds the password and is readable by others "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it or use password_file"
            )
            cluster = dataclasses.replace(cluster, warnings=(*cluster.warnings, warning))
    return cluster


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them; OSError otherwise.

    Opened without blocking and checked with fstat before reading, so a FIFO, a device such as
    /dev/zero or a huge file gets an error at once instead of a hang or all the memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file")
        if st.st_size > limit:
            raise OSError(0, f"{st.st_size} bytes, more than the {limit} allowed")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit)
    finally:
        os.close(fd)


def parse_cluster(data: dict[str, Any], path: str, base_dir: Path | None = None) -> Cluster:
    """Validate an already parsed TOML document. `base_dir` resolves `password_file`."""
    pr = _Problems()
    _control_characters(pr, "", data)
    _unknown(pr, "", data, TOP_KEYS)
    cl = data.get("cluster")
    if not isinstance(cl, dict):
        what = "missing" if cl is None else "must be a table"
        pr.add("cluster", f"{what}: the file needs a [cluster] table")
        cl = {}
    _unknown(pr, "cluster", cl, CLUSTER_KEYS)

    advbase = _int(pr, "cluster.advbase", cl.get("advbase", 1), 0, 255)
    dead_ratio = _int(pr, "cluster.dead_ratio", cl.get("dead_ratio", 3), 1, 255)
    backups = _int(pr, "cluster.backups", cl.get("backups", 3), 0, 255)
    default_group = _group(pr, "cluster.multicast", cl.get("multicast", str(DEFAULT_GROUP)))
    default_group6 = _group(
        pr, "cluster.multicast6", cl.get("multicast6", str(DEFAULT_GROUP6)), _V6
    )
    cl_if = _ifname(pr, "cluster.interface", cl.get("interface"))
    cl_vip_if = _ifname(pr, "cluster.vip_interface", cl.get("vip_interface"))
    cl_preempt = _bool(pr, "cluster.preempt", cl.get("preempt", True))
    # BGP mode sends no CARP advert: the password is optional there.
    if "bgp" in data and "password" not in cl and "password_file" not in cl:
        password = b""
    else:
        password = _password(pr, cl, base_dir or Path("."))
    up_script = _opt_str(pr, "cluster.up_script", cl.get("up_script"))
    down_script = _opt_str(pr, "cluster.down_script", cl.get("down_script"))

    run = _run(pr, data.get("run", {}))
    _group_exists(pr, "run.control_group", run.control_group)

    names: set[str] = set()  # every well-formed host name, even of hosts with other problems
    hosts = _hosts(pr, data.get("hosts"), cl_if, cl_vip_if, cl_preempt, names)
    vips = _vips(pr, data.get("vips"), (default_group, default_group6), names)
    bgp = _bgp(pr, data["bgp"], hosts) if "bgp" in data else None
    if bgp is not None:
        _bgp_families(pr, bgp, hosts, vips)
        _bgp_against_vips(pr, bgp, hosts, vips)
    if bgp is None:
        for i, h in enumerate(data.get("hosts") or []):
            for k in ("bgp_asn", "bgp_routers"):
                if isinstance(h, dict) and k in h:
                    pr.add(f"hosts[{i}].{k}", "only with a [bgp] table (BGP mode)")

    _engines(pr, hosts)
    ucarp = {h.name for h in hosts if h.engine == "ucarp"}
    checks = _checks(pr, data.get("checks", []), vips, names, ucarp)

    host_addrs: dict[IPAddress, str] = {h.address: h.name for h in hosts}
    host_addrs.update({h.address6: h.name for h in hosts if h.address6 is not None})
    for v in vips:
        if v.address.ip in host_addrs:
            pr.add(v.source, f"{v.address.ip} is the address of host {host_addrs[v.address.ip]!r}")
    _ipv6_participants(pr, hosts, vips, data.get("hosts"))

    if pr.items:
        raise ClusterError(path, pr.items)
    return Cluster(
        path=path,
        password=password,
        advbase=advbase,
        dead_ratio=dead_ratio,
        backups=backups,
        hosts=tuple(hosts),
        vips=tuple(vips),
        up_script=up_script,
        down_script=down_script,
        warnings=tuple(pr.warnings),
        run=run,
        bgp=bgp,
        checks=tuple(checks),
    )


# --- sections ------------------------------------------------------------------------------------


def _hosts(
    pr: _Problems,
    raw: Any,
    cl_if: str | None,
    cl_vip_if: str | None,
    cl_preempt: bool,
    all_names: set[str],
) -> list[Host]:
    if not isinstance(raw, list) or not raw:
        what = "missing" if raw is None or raw == [] else "must be an array of tables"
        pr.add("hosts", f"{what}: the file needs at least one [[hosts]] entry")
        return []
    if len(raw) > MAX_HOSTS:
        pr.add("hosts", f"{len(raw)} hosts; at most {MAX_HOSTS} on one segment")
        return []
    hosts: list[Host] = []
    names: dict[str, int] = {}
    addrs: dict[IPAddress, int] = {}
    for i, h in enumerate(raw):
        key = f"hosts[{i}]"
        if not isinstance(h, dict):
            pr.add(key, "must be a table ([[hosts]])")
            continue
        _unknown(pr, key, h, HOST_KEYS)
        name = h.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            what = "missing" if name is None else f"{name!r} is not a host name"
            pr.add(f"{key}.name", f"{what} (letters, digits, '_.-', 1..63)")
            name = None
        elif name in names:
            pr.add(f"{key}.name", f"{name!r} is already hosts[{names[name]}]")
        else:
            names[name] = i
            all_names.add(name)
        addr = _address(pr, f"{key}.address", h.get("address"))
        if addr is not None and addr in addrs:
            pr.add(f"{key}.address", f"{addr} is already the address of hosts[{addrs[addr]}]")
        if addr is not None:
            addrs[addr] = i
        addr6 = None
        if "address6" in h:
            addr6 = _address(pr, f"{key}.address6", h["address6"], _V6)
        if addr6 is not None and addr6 in addrs:
            pr.add(f"{key}.address6", f"{addr6} is already the address6 of hosts[{addrs[addr6]}]")
        elif addr6 is not None:
            addrs[addr6] = i
        iface = _ifname(pr, f"{key}.interface", h.get("interface")) or cl_if
        if iface is None:
            pr.add(f"{key}.interface", "missing: set it here or in [cluster]")
        vip_if = _ifname(pr, f"{key}.vip_interface", h.get("vip_interface")) or cl_vip_if or iface
        weight = h.get("weight", 1)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not 0 < weight <= MAX_WEIGHT
        ):
            pr.add(f"{key}.weight", f"{weight!r} is not a number in (0, {MAX_WEIGHT:g}]")
            weight = 1
        engine = h.get("engine", "iprotate")
        if engine not in ENGINES:
            pr.add(f"{key}.engine", f"{engine!r} is not one of {', '.join(map(repr, ENGINES))}")
            engine = "iprotate"
        if engine == "ucarp" and addr6 is not None:
            pr.add(
                f"{key}.address6",
                "a ucarp host takes no part in IPv6 VIPs (ucarp speaks no IPv6): remove it",
            )
            addr6 = None
        preempt = _bool(pr, f"{key}.preempt", h.get("preempt", cl_preempt))
        bgp_asn = _asn(pr, f"{key}.bgp_asn", h["bgp_asn"]) if "bgp_asn" in h else None
        bgp_routers = (
            _routers(pr, f"{key}.bgp_routers", h["bgp_routers"]) if "bgp_routers" in h else None
        )
        if name is not None and addr is not None and iface is not None and vip_if is not None:
            host = Host(name, addr, iface, vip_if, float(weight), engine, preempt, addr6)  # type: ignore[arg-type]
            hosts.append(dataclasses.replace(host, bgp_asn=bgp_asn, bgp_routers=bgp_routers))
    return hosts


def _engines(pr: _Problems, hosts: list[Host]) -> None:
    """keepalived speaks VRRP, every other engine CARP: both are IP protocol 112 to the same
    group 224.0.0.18, and each drops the other's packets as malformed, so a VIP shared by the two
    would be master on both sides. The planner spreads every VIP over every host, so the cluster
    is all keepalived or none."""
    vrrp = [h.name for h in hosts if h.engine == "keepalived"]
    carp = [f"{h.name} ({h.engine})" for h in hosts if h.engine != "keepalived"]
    if vrrp and carp:
        pr.add(
            "hosts",
            f"engine = 'keepalived' on {', '.join(vrrp)} but CARP on {', '.join(carp)}: VRRP and "
            "CARP cannot share a VIP (both are IP protocol 112, each drops the other's adverts "
            "and both sides become master); make every host keepalived, or none",
        )


def _vips(
    pr: _Problems,
    raw: Any,
    default_groups: tuple[IPv4Address, IPv6Address],
    host_names: set[str],
) -> list[Vip]:
    if not isinstance(raw, list) or not raw:
        what = "missing" if raw is None or raw == [] else "must be an array of tables"
        pr.add("vips", f"{what}: the file needs at least one [[vips]] entry")
        return []
    out: list[Vip] = []
    seen: dict[IPAddress, str] = {}
    # One object per group address: the engine's send path finds a group's socket address by
    # the group object's identity (engine.wire), and 4,000 VIPs of 16 groups are 16 objects.
    groups: dict[IPAddress, IPAddress] = {}
    for i, v in enumerate(raw):
        key = f"vips[{i}]"
        if not isinstance(v, dict):
            pr.add(key, "must be a table ([[vips]])")
            continue
        _unknown(pr, key, v, VIP_KEYS)
        owner = v.get("owner")
        if owner is not None and (not isinstance(owner, str) or owner not in host_names):
            pr.add(f"{key}.owner", f"{owner!r} is not the name of a host ({_names(host_names)})")
            owner = None
        vhid = v.get("vhid")
        if vhid is not None:
            vhid = _int(pr, f"{key}.vhid", vhid, 1, 255)
        up = _opt_str(pr, f"{key}.up_script", v.get("up_script"))
        down = _opt_str(pr, f"{key}.down_script", v.get("down_script"))
        if ("address" in v) == ("pool" in v):
            if "group" in v:
                _any_group(pr, f"{key}.group", v["group"])
            pr.add(key, "give exactly one of `address` (one VIP) or `pool` (a range of VIPs)")
            continue
        if "address" in v:
            members = [(key, _interface(pr, f"{key}.address", v["address"]))]
        else:
            members = [
                (f"{key}.pool[{j}]", a) for j, a in enumerate(_pool(pr, f"{key}.pool", v["pool"]))
            ]
        # One entry is one family (a pool's ends must agree): its group must be of that family.
        family = next((a.version for _, a in members if a is not None), None)
        group = _entry_group(pr, f"{key}.group", v, family, default_groups)
        group = groups.setdefault(group, group)
        for j, (src, addr) in enumerate(members):
            if addr is None:
                continue
            if addr.ip in seen:
                pr.add(src, f"{addr.ip} is already {seen[addr.ip]}")
                continue
            if len(seen) >= MAX_VIPS:
                pr.add(src, f"more than {MAX_VIPS} VIPs in the file")
                return out
            seen[addr.ip] = src
            member_vhid = vhid + j if vhid is not None else None
            if member_vhid is not None and member_vhid > 255:
                last = vhid + len(members) - 1
                pr.add(
                    f"{key}.vhid",
                    f"{vhid} + {len(members)} addresses needs vhids up to {last}; at most 255",
                )
                break
            out.append(Vip(addr, src, group, member_vhid, owner, up, down))
    return out


def _entry_group(
    pr: _Problems,
    key: str,
    v: dict[str, Any],
    family: int | None,
    default_groups: tuple[IPv4Address, IPv6Address],
) -> IPAddress:
    """The group of a [[vips]] entry whose addresses are of `family` (None: none is valid)."""
    default = default_groups[1] if family == 6 else default_groups[0]
    if "group" not in v:
        return default
    if family is None:
        return _any_group(pr, key, v["group"]) or default
    if family == 6:
        return _group(pr, key, v["group"], _V6, default)
    return _group(pr, key, v["group"])


def _any_group(pr: _Problems, key: str, value: Any) -> IPAddress | None:
    """A group checked on its own, for an entry whose addresses are broken: still said."""
    return _group(pr, key, value, _family_of(value))


def _ipv6_participants(pr: _Problems, hosts: list[Host], vips: list[Vip], raw_hosts: Any) -> None:
    """IPv6 VIPs are held by iprotate hosts only (ucarp speaks no IPv6), and each of those needs
    its IPv6 source address."""
    v6 = [v for v in vips if v.address.version == 6]
    if not v6:
        return
    index: dict[Any, int] = {}
    given: set[Any] = set()  # hosts with an address6 key: a bad one is already said
    if isinstance(raw_hosts, list):
        index = {h.get("name"): i for i, h in enumerate(raw_hosts) if isinstance(h, dict)}
        given = {h.get("name") for h in raw_hosts if isinstance(h, dict) and "address6" in h}
    for h in hosts:
        if h.engine != "ucarp" and h.address6 is None and h.name not in given:
            where = f"hosts[{index.get(h.name, '?')}].address6"
            pr.add(
                where,
                f"missing: {h.name} takes part in the IPv6 VIPs ({v6[0].source} ...); give its "
                f"IPv6 address on {h.interface} (global, ULA or link-local)",
            )
    if not any(h.engine != "ucarp" for h in hosts) and hosts:
        pr.add(v6[0].source, "no host can hold IPv6 VIPs: ucarp speaks no IPv6 (run iprotate)")
    ucarp = {h.name for h in hosts if h.engine == "ucarp"}
    said: set[str] = set()
    for v in v6:
        where = f"{v.source.split('.pool[')[0]}.owner"
        if v.owner in ucarp and where not in said:
            said.add(where)
            pr.add(where, f"{v.owner!r} runs ucarp, which speaks no IPv6: it cannot own IPv6 VIPs")


def _checks(
    pr: _Problems, raw: Any, vips: list[Vip], host_names: set[str], ucarp: set[str]
) -> list[Check]:
    """[[checks]]: every key checked, the VIPs and hosts resolved against the rest of the file."""
    if not isinstance(raw, list) or any(not isinstance(c, dict) for c in raw):
        pr.add("checks", "must be an array of tables ([[checks]])")
        return []
    if len(raw) > MAX_CHECKS:
        pr.add("checks", f"{len(raw)} checks; at most {MAX_CHECKS}")
        return []
    out: list[Check] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(raw):
        key = f"checks[{i}]"
        n = len(pr.items)
        _unknown(pr, key, c, CHECK_KEYS)
        name = c.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            what = "missing" if name is None else f"{name!r} is not a check name"
            pr.add(f"{key}.name", f"{what} (letters, digits, '_.-', 1..63)")
            name = ""
        elif name in seen:
            pr.add(f"{key}.name", f"{name!r} is already checks[{seen[name]}]")
        else:
            seen[name] = i
        kinds = [k for k in ("tcp", "http", "exec") if k in c]
        kind, target, argv = _check_target(pr, key, c, kinds)
        expect = c.get("expect")
        if expect is not None:
            expect = _int(pr, f"{key}.expect", expect, 100, 599)
            if kind != "http":
                pr.add(f"{key}.expect", "only an `http` check has an expected status")
        user = _opt_str(pr, f"{key}.user", c.get("user"))
        if user is not None and kind != "exec":
            pr.add(f"{key}.user", "only an `exec` check runs as a user")
        interval = _seconds(pr, f"{key}.interval", c.get("interval", 1.0), CHECK_INTERVAL)
        timeout = _seconds(pr, f"{key}.timeout", c.get("timeout", 0.5), CHECK_TIMEOUT)
        if timeout is not None and interval is not None and timeout > interval:
            pr.add(f"{key}.timeout", f"{timeout:g} s is longer than the interval ({interval:g} s)")
        fall = _int(pr, f"{key}.fall", c.get("fall", 2), *CHECK_COUNT)
        rise = _int(pr, f"{key}.rise", c.get("rise", 2), *CHECK_COUNT)
        deps = _check_vips(pr, f"{key}.vips", c.get("vips"), vips)
        hosts = c.get("hosts")
        if hosts is not None:
            if (
                not isinstance(hosts, list)
                or not hosts
                or any(not isinstance(h, str) or h not in host_names for h in hosts)
            ):
                pr.add(f"{key}.hosts", f"{hosts!r} is not a list of hosts ({_names(host_names)})")
                hosts = None
            elif len(set(hosts)) != len(hosts):
                pr.add(f"{key}.hosts", f"{hosts!r} names a host twice")
                hosts = None
            elif ucarp & set(hosts):
                # ucarp runs no checks: people kill it from cron. Say so rather than pretend.
                names = ", ".join(sorted(ucarp & set(hosts)))
                pr.add(f"{key}.hosts", f"{names} runs ucarp, which runs no health checks")
                hosts = None
            else:
                hosts = tuple(hosts)
        if len(pr.items) == n:
            out.append(
                Check(
                    name=name,
                    kind=kind,  # type: ignore[arg-type]
                    target=target,
                    vips=deps,
                    hosts=hosts,
                    argv=argv,
                    expect=expect,
                    user=user,
                    interval=interval or 1.0,
                    timeout=timeout or 0.5,
                    fall=fall,
                    rise=rise,
                    source=key,
                )
            )
    return out


def _check_target(
    pr: _Problems, key: str, c: dict[str, Any], kinds: list[str]
) -> tuple[str, str, tuple[str, ...]]:
    """(kind, target, argv) of a check: exactly one of tcp, http, exec, each well formed."""
    if len(kinds) != 1:
        pr.add(key, "give exactly one of `tcp` (HOST:PORT), `http` (a URL) or `exec` (a command)")
        return "tcp", "", ()
    kind = kinds[0]
    value = c[kind]
    if kind == "exec":
        if (
            not isinstance(value, list)
            or not value
            or len(value) > MAX_CHECK_ARGS
            or any(not isinstance(a, str) or len(a) > MAX_CHECK_STRING for a in value)
        ):
            pr.add(f"{key}.exec", f"must be a list of 1..{MAX_CHECK_ARGS} strings (no shell)")
            return kind, "", ()
        if not value[0].startswith("/"):
            pr.add(f"{key}.exec", f"{value[0]!r}: the program must be an absolute path (no PATH)")
            return kind, "", ()
        return kind, value[0], tuple(value)
    if not isinstance(value, str) or len(value) > MAX_CHECK_STRING:
        pr.add(f"{key}.{kind}", f"{value!r} is not a string")
        return kind, "", ()
    if kind == "tcp":
        if split_host_port(value) is None:
            pr.add(
                f"{key}.tcp",
                f"{value!r} is not IP:PORT (like '127.0.0.1:8080' or '[::1]:8080'; no names)",
            )
            return kind, "", ()
        return kind, value, ()
    if parse_http_url(value) is None:
        pr.add(
            f"{key}.http",
            f"{value!r} is not an http:// URL with an IP address or localhost "
            "(like 'http://127.0.0.1:8080/health')",
        )
        return kind, "", ()
    return kind, value, ()


def split_host_port(value: str) -> tuple[str, int] | None:
    """("127.0.0.1", 8080) from "127.0.0.1:8080" (or "[::1]:8080"), or None. The host must be an
    IP address or localhost: a check that needs DNS fails when DNS does, not with the service."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not port.isascii() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    elif ":" in host:
        return None
    if host == "localhost":
        return "127.0.0.1", int(port)
    try:
        ip_address(host)
    except ValueError:
        return None
    return host, int(port)


def parse_http_url(value: str) -> tuple[str, int, str, str] | None:
    """(ip, port, host header, path with query) of an http:// URL whose host is an IP address
    or localhost, or None."""
    try:
        u = urlsplit(value)
        port = 80 if u.port is None else u.port  # not `or 80`: port 0 is refused, not port 80
        hostname = u.hostname
    except ValueError:
        return None
    if u.scheme != "http" or not hostname or u.username or u.password or port == 0:
        return None
    if hostname == "localhost":
        ip = "127.0.0.1"
    else:
        try:
            ip = str(ip_address(hostname))
        except ValueError:
            return None
    if any(ch in value for ch in " \t\r\n"):
        return None
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    # The request line is ASCII: a non-ASCII path is sent percent-encoded (UTF-8), as a browser
    # does, not with its characters replaced by '?' (which would make it a query).
    path = quote(path, safe="".join(chr(c) for c in range(0x21, 0x7F)))
    return ip, port, u.netloc, path


def _check_vips(pr: _Problems, key: str, raw: Any, vips: list[Vip]) -> tuple[IPAddress, ...]:
    """The VIPs a check's `vips` names (addresses, with or without the prefix, or pool strings,
    each of whose addresses must be a VIP of the file); every VIP if it is not given."""
    known = {v.address.ip: v.address for v in vips}
    if raw is None:
        return tuple(v.address.ip for v in vips)
    if not isinstance(raw, list) or not raw or any(not isinstance(x, str) for x in raw):
        pr.add(key, f"{raw!r} is not a list of VIP addresses or pools")
        return ()
    out: dict[IPAddress, None] = {}
    for j, item in enumerate(raw):
        where = f"{key}[{j}]"
        scratch = _Problems()
        if "-" in item:
            members = _pool(scratch, where, item)
        elif "/" in item:
            members = [a for a in [_interface(scratch, where, item)] if a is not None]
        else:
            single = f"{item}/128" if ":" in item else f"{item}/32"
            members = [a for a in [_interface(scratch, where, single)] if a is not None]
            members = [known.get(a.ip, a) for a in members]
        if scratch.items:
            pr.add(where, f"{item!r} is not a VIP address or pool of this file")
            continue
        missing = [a for a in members if known.get(a.ip) != a]
        if missing:
            pr.add(where, f"{missing[0]} is not a VIP of this file (see [[vips]])")
            continue
        out.update(dict.fromkeys(a.ip for a in members))
    return tuple(out)


def check_local(cluster: Cluster, host: str, host_vips: frozenset[IPAddress]) -> list[str]:
    """What on this machine stops `host`'s checks from running: a program that is not an
    executable file, a user that does not exist. Checked where the file is used for a host
    (`iprotate run`, `iprotate check --host`), not in the file itself: the file is the same on
    every host, the programs need not be. `host_vips`: the VIPs the host takes part in."""
    problems: list[str] = []
    if cluster.host(host).engine != "iprotate":
        return problems
    for c in cluster.checks:
        if c.kind != "exec" or not c.runs_on(host, host_vips):
            continue
        st_mode = None
        try:
            st_mode = os.stat(c.target).st_mode
        except OSError as e:
            problems.append(f"{c.source}.exec: {c.target}: {e.strerror}")
        if st_mode is not None and (not stat.S_ISREG(st_mode) or not os.access(c.target, os.X_OK)):
            problems.append(f"{c.source}.exec: {c.target} is not an executable file")
        if c.user is not None:
            try:
                pwd.getpwnam(c.user)
            except KeyError:
                problems.append(f"{c.source}.user: {c.user!r} is not a user on this machine")
    return problems


def _seconds(pr: _Problems, key: str, value: Any, bounds: tuple[float, float]) -> float | None:
    lo, hi = bounds
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        pr.add(key, f"{value!r} is not a number of seconds in {lo:g}..{hi:g}")
        return None
    return float(value)


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "no valid hosts"


def _run(pr: _Problems, raw: Any) -> RunSettings:
    """[run]: how `iprotate run` behaves on every host (command-line options override)."""
    if not isinstance(raw, dict):
        pr.add("run", "must be a table ([run])")
        return RunSettings()
    _unknown(pr, "run", raw, RUN_KEYS)
    d = RunSettings()
    out = {}
    for key in RUN_SECONDS:
        v = raw.get(key, getattr(d, key))
        problem = check_seconds(key, v)
        if problem is not None:
            pr.add(f"run.{key}", problem)
            v = getattr(d, key)
        out[key] = float(v)
    for key in ("control_socket", "state_dir", "control_group", "metrics"):
        out[key] = _opt_str(pr, f"run.{key}", raw.get(key, getattr(d, key)))
    out["ignore_ifstate"] = _bool(pr, "run.ignore_ifstate", raw.get("ignore_ifstate", False))
    out["syslog"] = _syslog(pr, raw.get("syslog"))
    return RunSettings(**out)  # type: ignore[arg-type]


def _syslog(pr: _Problems, raw: Any) -> str | None:
    """[run] syslog: a facility name, or absent for stderr."""
    if raw is None:
        return None
    if not isinstance(raw, str) or raw not in SYSLOG_FACILITIES:
        pr.add("run.syslog", f"must be a syslog facility: {', '.join(SYSLOG_FACILITIES)}")
        return None
    return raw


def _bgp(pr: _Problems, raw: Any, hosts: list[Host]) -> BgpSettings | None:
    """[bgp]: BGP mode. Every host needs an AS and at least one router (shared or its own)."""
    if not isinstance(raw, dict):
        pr.add("bgp", "must be a table ([bgp])")
        return None
    _unknown(pr, "bgp", raw, BGP_KEYS)
    d = BgpSettings(asn=0, routers=())
    asn = _asn(pr, "bgp.asn", raw["asn"]) if "asn" in raw else None
    routers = _routers(pr, "bgp.routers", raw["routers"]) if "routers" in raw else ()
    for i, h in enumerate(hosts):
        if asn is None and h.bgp_asn is None:
            pr.add(f"hosts[{i}].bgp_asn", "missing: set bgp.asn or this host's bgp_asn")
        if not routers and not h.bgp_routers:
            pr.add(f"hosts[{i}].bgp_routers", "missing: set bgp.routers or this host's")
        mine = h.bgp_routers if h.bgp_routers is not None else routers
        for r in mine:
            if r.address in (h.address, h.address6):
                pr.add(f"hosts[{i}]", f"peers with its own address {r.address}")
    # BGP allows 0 (no keepalives: a dead peer is never noticed) or 3 s and more.
    hold = _int(pr, "bgp.hold_time", raw.get("hold_time", d.hold_time), 3, 65535)
    bfd = _bool(pr, "bgp.bfd", raw.get("bfd", d.bfd))
    rank = raw.get("rank", d.rank)
    if rank not in ("med", "prepend", "community"):
        pr.add("bgp.rank", f"{rank!r} is not one of 'med', 'prepend', 'community'")
        rank = d.rank
    base = _int(pr, "bgp.med_base", raw.get("med_base", d.med_base), 0, MAX_MED)
    step = _int(pr, "bgp.med_step", raw.get("med_step", d.med_step), 1, 1 << 24)
    if base + step * (MAX_HOSTS - 1) > MAX_MED:
        pr.add("bgp.med_step", f"med_base + {MAX_HOSTS - 1} steps must stay under {MAX_MED}")
    wait = raw.get("drain_wait", d.drain_wait)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 300:
        pr.add("bgp.drain_wait", f"{wait!r} is not a number of seconds in 0..300")
        wait = d.drain_wait
    speaker = _opt_str(pr, "bgp.speaker", raw.get("speaker", d.speaker)) or d.speaker
    birdc = _opt_str(pr, "bgp.birdc", raw.get("birdc", d.birdc)) or d.birdc
    return BgpSettings(
        asn=asn if asn is not None else 0,
        routers=routers,
        hold_time=hold,
        bfd=bfd,
        rank=rank,
        med_base=base,
        med_step=step,
        drain_wait=float(wait),
        speaker=speaker,
        birdc=birdc,
    )


def _router_address(pr: _Problems, key: str, value: Any) -> IPAddress | None:
    """A router's address: IPv4, or IPv6 global or ULA (a link-local peer would need an
    interface, which a router entry does not name)."""
    if isinstance(value, str) and ":" in value:
        addr = _address(pr, key, value, _V6)
        if addr is not None and addr.is_link_local:
            pr.add(key, f"{value!r} is link-local: give the router's global or ULA address")
            return None
        return addr
    return _address(pr, key, value)


def _bgp_families(pr: _Problems, bgp: BgpSettings, hosts: list[Host], vips: list[Vip]) -> None:
    """Each family over its own sessions: IPv4 VIPs are announced to the host's IPv4 routers,
    IPv6 VIPs (/128s) to its IPv6 routers, from its address6. Multiprotocol IPv6 on an IPv4
    session (a next hop to set by hand) is not supported: refused here, not half-done."""
    routers_shared = bgp.routers
    routers = {r.address for r in routers_shared} | {
        r.address for h in hosts for r in (h.bgp_routers or ())
    }
    for v in vips:
        if v.address.ip in routers:
            pr.add(v.source, f"{v.address.ip} is a router's address: the router would own it")
    said: set[tuple[str, int]] = set()
    for i, h in enumerate(hosts):
        mine = h.bgp_routers if h.bgp_routers is not None else routers_shared
        if not mine:
            continue  # already said by _bgp
        families = {r.address.version for r in mine}
        # Any host may be planned into any VIP (as owner or backup): it needs a router of
        # every family the file has VIPs of.
        took = {v.address.version for v in vips}
        where = f"hosts[{i}].bgp_routers" if h.bgp_routers is not None else "bgp.routers"
        if 6 in families:
            if h.address6 is None:
                pr.add(
                    f"hosts[{i}].address6",
                    f"missing: {h.name} peers with an IPv6 router; its address6 is the "
                    "session's source and the IPv6 routes' next hop",
                )
            elif h.address6.is_link_local:
                pr.add(
                    f"hosts[{i}].address6",
                    f"{h.address6} is link-local: an IPv6 BGP session needs {h.name}'s "
                    "global or ULA address",
                )
        for fam in sorted(took - families):
            if (where, fam) in said:
                continue  # shared routers: said once
            said.add((where, fam))
            pr.add(
                where,
                f"{h.name} may take part in IPv{fam} VIPs but peers with no IPv{fam} router: "
                f"IPv{fam} VIPs are announced over IPv{fam} sessions only (multiprotocol "
                "BGP across families is not supported)",
            )


def _bgp_against_vips(pr: _Problems, bgp: BgpSettings, hosts: list[Host], vips: list[Vip]) -> None:
    """A router address that is a VIP or another host's: the VIP sits on the host's own VIP
    interface, so BIRD would open the session to itself (or to a peer host, which does not peer
    back): never established."""
    by_vip = {v.address.ip: v.source for v in vips}
    by_host = {h.address: h.name for h in hosts}
    said: set[Any] = set()
    for i, h in enumerate(hosts):
        routers = h.bgp_routers if h.bgp_routers is not None else bgp.routers
        key = f"hosts[{i}].bgp_routers" if h.bgp_routers is not None else "bgp.routers"
        for j, r in enumerate(routers):
            where = f"{key}[{j}].address"
            if (where, r.address) in said:
                continue
            if r.address in by_vip:
                said.add((where, r.address))
                pr.add(where, f"{r.address} is a VIP ({by_vip[r.address]}), not a router")
            elif r.address in by_host and by_host[r.address] != h.name:
                said.add((where, r.address))
                pr.add(where, f"{r.address} is the address of host {by_host[r.address]!r}")


def _asn(pr: _Problems, key: str, value: Any) -> int | None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 < value < 1 << 32
        or value in BAD_ASNS
    ):
        pr.add(key, f"{value!r} is not an AS number (1..4294967294, not 23456 or 65535)")
        return None
    return value


def _routers(pr: _Problems, key: str, raw: Any) -> tuple[BgpRouter, ...]:
    """`[{ address = "198.51.100.254", asn = 64512 }, ...]`: the routers to peer with."""
    if not isinstance(raw, list) or not raw:
        pr.add(key, "must be a non-empty array of { address = ..., asn = ... }")
        return ()
    if len(raw) > MAX_ROUTERS:
        pr.add(key, f"{len(raw)} routers; at most {MAX_ROUTERS}")
        return ()
    out: list[BgpRouter] = []
    for i, r in enumerate(raw):
        k = f"{key}[{i}]"
        if not isinstance(r, dict):
            pr.add(k, "must be a table { address = ..., asn = ... }")
            continue
        _unknown(pr, k, r, ROUTER_KEYS)
        addr = _router_address(pr, f"{k}.address", r.get("address"))
        asn = _asn(pr, f"{k}.asn", r.get("asn"))
        if addr is not None and any(x.address == addr for x in out):
            pr.add(f"{k}.address", f"{addr} is listed twice")
        elif addr is not None and asn is not None:
            out.append(BgpRouter(addr, asn))
    return tuple(out)


def _password(pr: _Problems, cl: dict[str, Any], base_dir: Path) -> bytes:
    if ("password" in cl) == ("password_file" in cl):
        pr.add("cluster", "give exactly one of `password` or `password_file`")
        return b""
    if "password" in cl:
        pw = cl["password"]
        if not isinstance(pw, str):
            pr.add("cluster.password", "must be a string")
            return b""
        data = pw.encode()
        key = "cluster.password"
        if "\n" in pw or "\r" in pw:
            # ucarp's --passfile reads one line: a peer given the same text would disagree.
            pr.add(key, "the password contains a line break; it must be one line")
            return b""
    else:
        f = cl["password_file"]
        key = "cluster.password_file"
        if not isinstance(f, str) or not f:
            pr.add(key, "must be a path (relative to the cluster file)")
            return b""
        fp = base_dir / f
        try:
            st = fp.stat()
            raw = read_bounded(fp, MAX_PASSWORD_FILE)
        except OSError as e:
            pr.add(key, f"cannot read {fp}: {e.strerror}")
            return b""
        if st.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
            mode = stat.S_IMODE(st.st_mode)
            pr.warnings.append(
                f"{key}: {fp} is readable or writable by others (mode {mode:o}); chmod 600 it"
            )
        # As ucarp's --passfile: the first line, only the newline stripped.
        data = raw.split(b"\n", 1)[0]
    if not data:
        pr.add(key, "the password is empty")
    elif b"\0" in data:
        pr.add(key, "the password contains a NUL byte; ucarp would cut it there")
    elif len(data) > MAX_PASSWORD:
        pr.add(key, f"the password is {len(data)} bytes; ucarp allows at most {MAX_PASSWORD}")
    return data


# --- values --------------------------------------------------------------------------------------


def _control_characters(pr: _Problems, key: str, value: Any) -> None:
    """No string of the file may hold a control character (a NUL, a newline ending a name, an
    escape sequence): names, interfaces and paths end up in logs, command lines and config files
    of other tools. The inline password is checked on its own (it may hold a tab)."""
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{key}.{k}" if key else str(k)
            if CONTROL_RE.search(str(k)):
                pr.add(where, "the key contains a control character")
            elif where != "cluster.password":
                _control_characters(pr, where, v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _control_characters(pr, f"{key}[{i}]", v)
    elif isinstance(value, str) and (m := CONTROL_RE.search(value)):
        pr.add(key, f"{value!r} contains a control character (U+{ord(m.group()):04X})")


def _group_exists(pr: _Problems, key: str, group: str | None) -> None:
    if group is None:
        return
    try:
        grp.getgrnam(group)
    except KeyError:
        pr.add(key, f"{group!r} is not a group on this machine")


def _unknown(pr: _Problems, key: str, table: dict[str, Any], allowed: set[str]) -> None:
    for k in sorted(set(table) - allowed):
        where = f"{key}.{k}" if key else k
        pr.add(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _int(pr: _Problems, key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        pr.add(key, f"{value!r} is not an integer in {lo}..{hi}")
        return lo
    return value


def _bool(pr: _Problems, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        pr.add(key, f"{value!r} is not true or false")
        return True
    return value


def _opt_str(pr: _Problems, key: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        pr.add(key, f"{value!r} is not a non-empty string")
        return None
    return value


def _ifname(pr: _Problems, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not IFNAME_RE.fullmatch(value):
        pr.add(key, f"{value!r} is not an interface name (1..15 characters, no '/', ':' or space)")
        return None
    return value


@dataclass(frozen=True)
class _Family:
    """What the address parsers below need to know of one family, and how its errors read: the
    parsers are written once, and `_V4` or `_V6` chooses."""

    address: type[IPv4Address] | type[IPv6Address]
    interface: type[IPv4Interface] | type[IPv6Interface]
    name: str  # "IPv4"
    zoned: bool  # a '%zone' suffix is possible, and refused (the interface is the host's own)
    host_like: str  # a host's address, as its errors show one
    not_host: Callable[[Any], bool]  # no host's address, for the reasons in `not_host_why`
    not_host_why: str
    vip_like: str
    not_vip_why: str  # multicast, unspecified, loopback, reserved: the same test, its own words
    link_local: Callable[[Any], bool]
    link_local_why: str
    min_prefix: int
    no_vip_of: Callable[[Any], str | None]  # an address of its subnet no host may serve: why
    is_group: Callable[[Any], bool]
    group_bad: str  # the error of something that is no address
    group_not: str  # ... and of an address that is no group
    default_group: IPAddress


def _v4_no_vip_of(addr: IPv4Interface) -> str | None:
    ip, net = addr.ip, addr.network
    if net.prefixlen <= 30 and ip in (net.network_address, net.broadcast_address):
        what = "network" if ip == net.network_address else "broadcast"
        return f"is the {what} address of {net}"
    return None


def _v6_no_vip_of(addr: IPv6Interface) -> str | None:
    ip, net = addr.ip, addr.network
    if net.prefixlen <= 126 and ip == net.network_address:
        # RFC 4291 2.6.1: every router of the link answers it.
        return f"is the subnet-router anycast address of {net}"
    return None


_V4 = _Family(
    address=IPv4Address,
    interface=IPv4Interface,
    name="IPv4",
    zoned=False,
    host_like="like '198.51.100.1'",
    not_host=lambda a: a.is_unspecified or a.is_loopback or a.is_multicast or a.is_reserved,
    not_host_why="0.0.0.0, loopback, multicast, 240/4",
    vip_like="203.0.113.10/24",
    not_vip_why="multicast, loopback, 0.0.0.0, 240/4",
    link_local=lambda a: a.is_link_local,
    link_local_why="link-local, 169.254/16",
    min_prefix=MIN_PREFIX,
    no_vip_of=_v4_no_vip_of,
    is_group=lambda a: a.is_multicast,
    group_bad="is not a multicast group (224.0.0.0/4, like '224.0.0.18')",
    group_not="is not a multicast group (224.0.0.0/4)",
    default_group=DEFAULT_GROUP,
)
_V6_GROUP = "is not an IPv6 multicast group (ff02::/16 or wider scope, like 'ff02::12')"
_V6 = _Family(
    address=IPv6Address,
    interface=IPv6Interface,
    name="IPv6",
    zoned=True,
    host_like="like '2001:db8::1' or 'fe80::1', no prefix, no %zone",
    not_host=lambda a: a.is_unspecified or a.is_loopback or a.is_multicast or a.ipv4_mapped,
    not_host_why="::, ::1, multicast, IPv4-mapped",
    vip_like="2001:db8::10/64",
    # is_reserved covers ::/8 (IPv4-mapped and -compatible addresses) and the other IETF blocks.
    not_vip_why="multicast, loopback, ::, reserved",
    link_local=lambda a: a.is_link_local or a.is_site_local,
    link_local_why="link-local fe80::/10, fec0::/10",
    min_prefix=MIN_PREFIX6,
    no_vip_of=_v6_no_vip_of,
    # Of link scope or wider: an interface-local group never leaves the host.
    is_group=lambda a: a.is_multicast and a.packed[1] & 0x0F >= 2,
    group_bad=_V6_GROUP,
    group_not=_V6_GROUP,
    default_group=DEFAULT_GROUP6,
)


def _family_of(value: Any) -> _Family:
    """The family an address as written is of: IPv6 if it has a ':' (so is any error on it)."""
    return _V6 if isinstance(value, str) and ":" in value else _V4


def _address(pr: _Problems, key: str, value: Any, f: _Family = _V4) -> IPAddress | None:
    """A host's address of family `f` (its IPv6 advert source: global, ULA or link-local of its
    advert interface)."""
    try:
        if not isinstance(value, str) or (f.zoned and "%" in value):
            raise AddressValueError
        addr = f.address(value)
    except AddressValueError:
        what = "missing" if value is None else f"{value!r} is not an {f.name} address"
        pr.add(key, f"{what} ({f.host_like})")
        return None
    if f.not_host(addr):
        pr.add(key, f"{value!r} cannot be a host's address ({f.not_host_why})")
        return None
    return addr


def _interface(pr: _Problems, key: str, value: Any) -> IPInterface | None:
    """A VIP with its prefix: IPv4 ('203.0.113.10/24') or IPv6 ('2001:db8::10/64')."""
    f = _family_of(value)
    bad = f"{value!r} is not an {f.name} interface address (like '{f.vip_like}')"
    if not isinstance(value, str) or "/" not in value or (f.zoned and "%" in value):
        pr.add(key, bad)
        return None
    try:
        addr = f.interface(value)
    except (AddressValueError, NetmaskValueError, ValueError):
        pr.add(key, bad)
        return None
    ip, net = addr.ip, addr.network
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_reserved:
        pr.add(key, f"{value!r} cannot be a virtual address ({f.not_vip_why})")
        return None
    if f.link_local(ip):
        pr.add(key, f"{value!r} cannot be a virtual address ({f.link_local_why})")
        return None
    if net.prefixlen < f.min_prefix:
        pr.add(key, f"{value!r}: a prefix shorter than /{f.min_prefix} is not a subnet to serve")
        return None
    why = f.no_vip_of(addr)
    if why is not None:
        pr.add(key, f"{value!r} {why}")
        return None
    return addr


def _pool(pr: _Problems, key: str, value: Any) -> list[IPInterface]:
    """`"203.0.113.10-203.0.113.40/24"`: every address from first to last, with that prefix
    (IPv6 alike: `"2001:db8::10-2001:db8::1f/64"`)."""
    how = "like '203.0.113.10-203.0.113.40/24' (first-last/prefix)"
    if not isinstance(value, str) or value.count("-") != 1 or "/" not in value:
        pr.add(key, f"{value!r} is not a pool {how}")
        return []
    span, prefix = value.rsplit("/", 1)
    first_s, last_s = span.split("-")
    ends = _Problems()
    first = _interface(ends, key, f"{first_s.strip()}/{prefix}")
    last = _interface(ends, key, f"{last_s.strip()}/{prefix}")
    if first is None or last is None:
        pr.add(key, f"{value!r} is not a pool {how}: {ends.items[0].split(': ', 1)[1]}")
        return []
    if first.version != last.version:
        pr.add(key, f"{value!r}: first and last are not of one family (IPv4 or IPv6)")
        return []
    n = int(last.ip) - int(first.ip) + 1
    if n < 1 or n > MAX_POOL:
        pr.add(key, f"{value!r}: the last address must follow the first, at most {MAX_POOL} in all")
        return []
    # /32 (/128) VIPs are host addresses: any range of them is fine.
    if first.network.prefixlen < first.max_prefixlen and last.network != first.network:
        pr.add(key, f"{value!r}: first and last are not in one /{prefix} network")
        return []
    # Both ends are valid and in one network (or /32, /128 host addresses), so no member is a
    # network, broadcast or subnet-router anycast address.
    kind = IPv6Interface if first.version == 6 else IPv4Interface
    return [kind((int(first.ip) + k, first.network.prefixlen)) for k in range(n)]


def _group(
    pr: _Problems, key: str, value: Any, f: _Family = _V4, default: IPAddress | None = None
) -> IPAddress:
    """A multicast group of family `f`; `default` (the family's own if None) after an error."""
    fallback = f.default_group if default is None else default
    try:
        if not isinstance(value, str) or (f.zoned and "%" in value):
            raise AddressValueError
        addr = f.address(value)
    except AddressValueError:
        pr.add(key, f"{value!r} {f.group_bad}")
        return fallback
    if not f.is_group(addr):
        pr.add(key, f"{value!r} {f.group_not}")
        return fallback
    return addr
