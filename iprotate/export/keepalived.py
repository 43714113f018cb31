"""keepalived.conf for a cluster whose hosts all run keepalived (VRRP): pure, no I/O.

One ``vrrp_instance`` per VIP the host takes part in, built from the same plan as iprotate's own
CARP: ``virtual_router_id`` is the plan's vhid, the priorities fall strictly along the plan's
failover order (so VRRP elects the same owner and the same next-in-line), ``preempt`` or
``nopreempt`` from the host's preempt, ``advert_int`` from advbase, unicast peers on request, the
``[[checks]]`` that run on the host as ``vrrp_script`` blocks tracked by the instances of their VIPs
(a failed one puts them in FAULT, so their VIPs go to the next hosts), and the cluster's up/down
scripts as ``notify_master``/``notify_backup``/``notify_fault`` with the
arguments iprotate's hooks get (``SCRIPT INTERFACE VIP PREFIX``). keepalived adds and removes the
addresses itself and sends its own gratuitous ARPs.

What does not carry over, said by :func:`notes`: VRRP's master-down interval is always three
adverts (RFC 3768 6.1), whatever dead_ratio says; VRRP has no authentication worth the name
(VRRPv2's is a clear-text 8-byte string, VRRPv3 has none), so the cluster password is not used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from iprotate.cluster.model import DEFAULT_GROUP, DEFAULT_GROUP6, Check, Host
from iprotate.export.text import comment_text
from iprotate.plan.model import Plan, VipPlan

TOP_PRIORITY = 250  # below 255, which keepalived reserves for the address owner (instant master)
MAX_STEP = 50
VRRP_DEAD_RATIO = 3  # RFC 3768 6.1: Master_Down_Interval = 3 * Advertisement_Interval + skew

# keepalived splits a notify line into words itself (no shell); a double quote, a backslash or a
# control character in a path would change what it runs.
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')
# keepalived's parser ends a word at a brace or a quote and starts a comment at a word that begins
# with '#' or '!': Linux allows all of these in an interface name, keepalived.conf does not.
_BAD_IFNAME = re.compile(r'["{}\\#!]')


class KeepalivedError(ValueError):
    """The plan cannot run under keepalived; the message says why and what to do instead."""


@dataclass(frozen=True)
class KeepalivedOptions:
    """Host-side choices that are not in the cluster file."""

    unicast: bool = False  # unicast_src_ip/unicast_peer instead of multicast to 224.0.0.18


def priority(rank: int, participants: int) -> int:
    """The VRRP priority of the host at `rank` (0 = owner) in a VIP's order: strictly decreasing,
    always within 1..254. 250, 200, 150 for three hosts."""
    if not 0 <= rank < participants:
        raise ValueError(f"rank {rank} outside 0..{participants - 1}")
    step = min(MAX_STEP, (TOP_PRIORITY - 1) // max(1, participants - 1))
    return TOP_PRIORITY - step * rank


def master_down(advert_int: int, prio: int) -> float:
    """VRRPv2's Master_Down_Interval for a backup of priority `prio` (RFC 3768 6.1):
    3 * Advertisement_Interval + Skew_Time, Skew_Time = (256 - Priority) / 256."""
    return VRRP_DEAD_RATIO * advert_int + (256 - prio) / 256


def check(plan: Plan, host: str) -> None:
    """Raise KeepalivedError if `host`'s part of the plan cannot run under keepalived.

    Raises KeyError if `host` is not in the cluster."""
    c = plan.cluster
    h = c.host(host)
    problems: list[str] = []
    carp = sorted(f"{o.name} ({o.engine})" for o in c.hosts if o.engine in ("ucarp", "freebsd"))
    if carp:
        problems.append(
            f"CARP runs on {', '.join(carp)}: VRRP and CARP cannot share a VIP (both are IP "
            "protocol 112 to 224.0.0.18, each drops the other's adverts, and both sides become "
            "master); every host of the cluster must run keepalived"
        )
    if c.advbase < 1:
        problems.append(
            "cluster.advbase is 0 (sub-second): VRRPv2's advert_int is whole seconds; "
            "use advbase >= 1"
        )
    for v in plan.for_host(host):
        if v.group != (DEFAULT_GROUP if v.address.version == 4 else DEFAULT_GROUP6):
            problems.append(
                f"{v.vip.source} ({v.address}) is in group {v.group}: keepalived's group is "
                f"one per process (vrrp_mcast_group4/6); leave the group out or use --unicast"
            )
            break
    for what, name in (("interface", h.interface), ("vip_interface", h.vip_interface)):
        if _BAD_IFNAME.search(name):
            problems.append(
                f"{what} {name!r} has a brace, a quote, a backslash, '#' or '!', which "
                "keepalived.conf cannot carry in a word; rename the interface"
            )
    for path in _scripts(plan, h):
        if _UNSAFE.search(path):
            problems.append(f"script path {path!r} has a quote, a backslash or a control character")
    for chk in host_checks(plan, host):
        if chk.user is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", chk.user):
            problems.append(f"{chk.source} ({chk.name}): user {chk.user!r} is not a user name")
        for word in check_command(chk):
            if _UNSAFE.search(word) or not word or any(ch.isspace() for ch in word):
                problems.append(
                    f"{chk.source} ({chk.name}): {word!r} cannot be one word of a keepalived "
                    "script line (a blank, a quote, a backslash or a control character)"
                )
    if problems:
        raise KeepalivedError(
            f"{host} cannot run this plan under keepalived: " + "; ".join(problems)
        )


def instance_name(v: VipPlan) -> str:
    """``VI_10`` for an IPv4 VIP, ``VI6_10`` for an IPv6 one (a vhid may serve one of each)."""
    return f"VI{'6' if v.address.version == 6 else ''}_{v.vhid}"


def host_checks(plan: Plan, host: str) -> list[Check]:
    """The [[checks]] that run on `host`, in file order."""
    mine = frozenset(v.ip for v in plan.for_host(host))
    return [chk for chk in plan.cluster.checks if chk.runs_on(host, mine)]


def check_command(chk: Check) -> list[str]:
    """The command keepalived runs for a check: its own argv (exec), netcat's connect test
    (tcp, Debian's netcat-openbsd) or curl (http: 2xx and 3xx pass, as in iprotate)."""
    t = str(_whole_seconds(chk.timeout))
    if chk.kind == "exec":
        return list(chk.argv)
    if chk.kind == "tcp":
        host, _, port = chk.target.rpartition(":")
        return ["/usr/bin/nc", "-z", "-w", t, host.strip("[]"), port]
    return ["/usr/bin/curl", "-fsS", "-o", "/dev/null", "-m", t, chk.target]


def script_name(chk: Check) -> str:
    """The vrrp_script's name: ``chk_`` and the check's name."""
    return f"chk_{chk.name}"


def _whole_seconds(x: float) -> int:
    return max(1, math.ceil(x))


def script_lines(chk: Check) -> list[str]:
    """The ``vrrp_script`` block of a check. weight 0: when it fails the instances tracking it
    go to FAULT, give their VIPs up and stop advertising, so the next hosts take them."""
    lines = [
        f"# {chk.source}: {chk.kind} {chk.target}",
        f"vrrp_script {script_name(chk)} {{",
        f'    script "{" ".join(check_command(chk))}"',
        f"    interval {_whole_seconds(chk.interval)}",
        f"    timeout {_whole_seconds(chk.timeout)}",
        f"    fall {chk.fall}",
        f"    rise {chk.rise}",
        "    weight 0",
    ]
    if chk.user:
        lines.append(f"    user {chk.user}")
    return [*lines, "}"]


def _scripts(plan: Plan, h: Host) -> list[str]:
    c = plan.cluster
    out = {s for s in (c.up_script, c.down_script) if s}
    out.update(chk.target for chk in host_checks(plan, h.name))
    for v in plan.for_host(h.name):
        out.update(s for s in (v.vip.up_script, v.vip.down_script) if s)
    return sorted(out)


def instance_lines(plan: Plan, h: Host, v: VipPlan, opts: KeepalivedOptions) -> list[str]:
    """The ``vrrp_instance`` block of VIP `v` on host `h`, with a comment line above it."""
    c = plan.cluster
    rank = v.order.index(h.name)
    prio = priority(rank, len(v.order))
    role = "owner" if rank == 0 else f"backup {rank}"
    v6 = v.address.version == 6
    lines = [
        f"# {v.address} vhid {v.vhid}: {h.name} is {role} (order {' > '.join(v.order)})",
        f"vrrp_instance {instance_name(v)} {{",
        # Every host starts as backup and the election decides, as in CARP (nopreempt needs it).
        "    state BACKUP",
        f"    interface {h.interface}",
        f"    virtual_router_id {v.vhid}",
        f"    priority {prio}",
        f"    advert_int {c.advbase}",
    ]
    if v6:
        lines.insert(3, "    version 3")  # VRRP for IPv6 is VRRPv3 (RFC 5798)
    if not v.preempt_of(h.name):
        lines.append("    nopreempt")
    if opts.unicast:
        peers = [c.host(n).source_for(v.ip) for n in v.order if n != h.name]
        lines.append(f"    unicast_src_ip {h.source_for(v.ip)}")
        lines.append("    unicast_peer {")
        lines += [f"        {p}" for p in peers]
        lines.append("    }")
    lines += [
        "    virtual_ipaddress {",
        f"        {v.address} dev {h.vip_interface}",
        "    }",
    ]
    tracked = [script_name(chk) for chk in host_checks(plan, h.name) if v.ip in chk.vips]
    if tracked:
        lines.append("    track_script {")
        lines += [f"        {name}" for name in tracked]
        lines.append("    }")
    up = v.vip.up_script or c.up_script
    down = v.vip.down_script or c.down_script
    args = f"{h.vip_interface} {v.ip} {v.address.network.prefixlen}"
    if up:
        lines.append(f'    notify_master "{up} {args}"')
    if down:
        lines.append(f'    notify_backup "{down} {args}"')
        lines.append(f'    notify_fault "{down} {args}"')
    lines.append("}")
    return lines


def keepalived_conf(plan: Plan, host: str, opts: KeepalivedOptions | None = None) -> str:
    """keepalived.conf for `host`: one vrrp_instance per VIP it takes part in, in plan order.

    Raises KeepalivedError (see :func:`check`) or KeyError for an unknown host."""
    opts = opts or KeepalivedOptions()
    check(plan, host)
    c = plan.cluster
    h = c.host(host)
    lines = [
        f"# Generated by `iprotate keepalived` for host {host} from {comment_text(c.path)}.",
        "global_defs {",
        f"    router_id {host}",
    ]
    if _scripts(plan, h):
        # keepalived refuses to run notify scripts as root unless told which user runs them.
        lines += ["    script_user root", "    enable_script_security"]
    lines.append("}")
    for chk in host_checks(plan, host):
        lines.append("")
        lines += script_lines(chk)
    for v in plan.for_host(host):
        lines.append("")
        lines += instance_lines(plan, h, v, opts)
    return "\n".join(lines) + "\n"


def notes(plan: Plan, host: str) -> list[str]:
    """What the operator should know about the generated file (the CLI prints them on stderr)."""
    c = plan.cluster
    out = []
    if c.host(host).engine != "keepalived":
        out.append(
            f'{host} has engine = "{c.host(host).engine}" in {c.path}: this file is for a '
            "cluster where every host runs keepalived"
        )
    if not plan.for_host(host):
        out.append(f"{host} takes part in no VIP of {c.path}: nothing for keepalived to do")
    if c.dead_ratio != VRRP_DEAD_RATIO:
        out.append(
            f"dead_ratio {c.dead_ratio} does not carry over: a VRRP backup always waits "
            f"{VRRP_DEAD_RATIO} adverts plus (256 - priority)/256 s"
        )
    for chk in host_checks(plan, host):
        changed = [
            f"{k} {x:g} s -> {_whole_seconds(x)} s"
            for k, x in (("interval", chk.interval), ("timeout", chk.timeout))
            if x != _whole_seconds(x)
        ]
        if changed:
            out.append(f"check {chk.name}: keepalived counts whole seconds: {', '.join(changed)}")
        if chk.expect is not None:
            out.append(f"check {chk.name}: expect {chk.expect} not carried over (curl -f passes "
                       "2xx and 3xx)")  # fmt: skip
        if chk.kind == "tcp":
            out.append(f"check {chk.name}: runs /usr/bin/nc (Debian's netcat-openbsd)")
    if host_checks(plan, host):
        out.append(
            "a failed check puts keepalived's instances in FAULT: the VIP leaves this host even "
            "when no other host can take it (iprotate keeps serving it as a last resort)"
        )
    out.append(
        "the cluster password is not used: VRRPv2's authentication is an 8-byte clear-text "
        "string and VRRPv3 has none; keep the segment to the cluster's hosts"
    )
    return out
